"""HTTP routes that serve map tiles of slides and overlays, mounted beside Streamlit (st.App).

A page registers what it shows (``register_slide``, ``register_overlay``) and gets an opaque
token; the routes serve only registered tokens. A URL never carries a path, so nothing
outside the data folders can be reached through it (an unknown token is a 404). Tiles are
produced in a thread pool (OpenSlide decoding releases the GIL) and cached by core.deepzoom.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import socket
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.deepzoom import LRU, SlideTiler, is_tile, max_zoom, overlay_tile
from core.errors import PathologyError
from core.heatmap import ProbabilityGrid
from core.slide_io import open_slide

log = logging.getLogger(__name__)

# z, x, y are taken as text and parsed here (``_tile_address``): Starlette's int converter turns
# any run of digits into an int, and a thousand-digit one fails inside the router (a 500).
SLIDE_ROUTE = "/tiles/slide/{token}/{z}/{x}/{y}.jpg"
OVERLAY_ROUTE = "/tiles/overlay/{token}/{z}/{x}/{y}.png"
#: A run's probability grid as little-endian float32, row by row (NaN: no patch): the viewer draws
#: the t outlines from it in the browser, so a t move fetches nothing.
GRID_ROUTE = "/tiles/grid/{token}.f32"
CACHE_HEADERS = {"Cache-Control": "private, max-age=3600"}
#: Tiles rendered at once (slide decoding and overlay drawing); more requests wait their turn,
#: so a burst cannot take every thread of the server's pool.
MAX_CONCURRENT_RENDERS = 4
_MAX_DIGITS = 9  # zoom and tile indices of any real slide fit in far fewer digits


@dataclass(frozen=True)
class _Overlay:
    grid: ProbabilityGrid
    dimensions: tuple[int, int]
    colormap: str
    cut: float | None
    outline: float | None
    fade: bool = False


MAX_REGISTERED = 64  # overlays / slide tilers kept; older ones are forgotten (their URLs then 404)
_slides: dict[str, Path] = {}
_slide_tile_cache = LRU(256 * 2**20)  # encoded slide tiles of every tiler together, 256 MiB (SlideTiler(cache=))
_overlay_cache = LRU(64 * 2**20)  # encoded overlay tiles by (token, z, x, y), 64 MiB: a token fixes grid and style
_tilers: OrderedDict[str, SlideTiler] = OrderedDict()
_overlays: OrderedDict[str, _Overlay] = OrderedDict()
_grids: OrderedDict[str, ProbabilityGrid] = OrderedDict()
_lock = threading.Lock()


def _token(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:24]


def register_slide(path: Path) -> str:
    """Allow tiles of an (already checked) slide path to be served; return its URL token."""
    path = Path(path).resolve()
    token = _token("slide", path, path.stat().st_mtime_ns)
    with _lock:
        _slides[token] = path
    return token


def forget_under(folder: Path) -> int:
    """Forget the registered slides inside ``folder`` and their tilers (tile caches); return how many.

    For a closed session's upload folder (app.housekeeping): their URLs then 404. Handles close
    once unreferenced.
    """
    root = Path(folder).resolve()
    with _lock:
        gone = [token for token, path in _slides.items() if path.is_relative_to(root)]
        tilers = [_tilers.pop(token, None) for token in gone]
        for token in gone:
            del _slides[token]
    for tiler in tilers:
        if tiler is not None:
            tiler.forget()
    return len(gone)


def register_overlay(
    slide_token: str, run_key: object, grid: ProbabilityGrid, dimensions: tuple[int, int], *,
    colormap: str, cut: float | None, outline: float | None, fade: bool = False,
) -> str:
    """Allow overlay tiles of a run's probabilities with these display settings; return the token."""
    token = _token("overlay", slide_token, run_key, colormap, cut, outline, fade)
    with _lock:
        _overlays[token] = _Overlay(grid, tuple(dimensions), colormap, cut, outline, fade)
        _overlays.move_to_end(token)
        while len(_overlays) > MAX_REGISTERED:
            _overlays.popitem(last=False)
    return token


def register_grid(slide_token: str, run_key: object, grid: ProbabilityGrid) -> str:
    """Allow a run's probability grid to be fetched (:data:`GRID_ROUTE`); return its token."""
    token = _token("grid", slide_token, run_key, grid.shape)
    with _lock:
        _grids[token] = grid
        _grids.move_to_end(token)
        while len(_grids) > MAX_REGISTERED:
            _grids.popitem(last=False)
    return token


def grid_url(token: str) -> str:
    """Return the root-relative URL of a registered grid's values."""
    return f"/tiles/grid/{token}.f32"


def grid_bytes(grid: ProbabilityGrid) -> bytes:
    """Return the grid's values as little-endian float32 bytes, row by row (what :data:`GRID_ROUTE` serves)."""
    import numpy as np

    return np.ascontiguousarray(grid.values, dtype="<f4").tobytes()


def slide_url(token: str) -> str:
    """Return the root-relative tile URL template ({z}/{x}/{y}) of a registered slide."""
    return f"/tiles/slide/{token}/{{z}}/{{x}}/{{y}}.jpg"


def overlay_url(token: str) -> str:
    """Return the root-relative tile URL template of a registered overlay."""
    return f"/tiles/overlay/{token}/{{z}}/{{x}}/{{y}}.png"


def _tiler(token: str) -> SlideTiler | None:
    with _lock:
        tiler = _tilers.get(token)
        path = _slides.get(token)
    if tiler is None and path is not None:
        tiler = SlideTiler(open_slide(path), cache=_slide_tile_cache)
        with _lock:
            tiler = _tilers.setdefault(token, tiler)
            while len(_tilers) > MAX_REGISTERED:
                _, dropped = _tilers.popitem(last=False)
                dropped.forget()
    return tiler


_limiter = None


def _tile_address(params: dict) -> tuple[int, int, int] | None:
    """Return (z, x, y) parsed from the URL, or None when one is not a short run of digits."""
    values = []
    for name in ("z", "x", "y"):
        text = str(params.get(name, ""))
        if not (text.isascii() and text.isdigit() and len(text) <= _MAX_DIGITS):
            return None
        values.append(int(text))
    return values[0], values[1], values[2]


async def _render(function, *args, **kwargs):
    """Run a tile render in a worker thread, at most MAX_CONCURRENT_RENDERS at once."""
    import functools

    import anyio

    global _limiter
    if _limiter is None:  # made in the server's event loop, on first use
        _limiter = anyio.CapacityLimiter(MAX_CONCURRENT_RENDERS)
    return await anyio.to_thread.run_sync(functools.partial(function, *args, **kwargs), limiter=_limiter)


def _not_found() -> Response:
    return Response("no such tile", status_code=404, media_type="text/plain")


async def slide_tile(request: Request) -> Response:
    """GET a JPEG tile of a registered slide; 404 for unknown tokens and tiles outside its pyramid."""
    address = _tile_address(request.path_params)
    if address is None:
        return _not_found()
    token = request.path_params["token"]
    try:
        # A known tiler and an encoded tile are dict look-ups, answered here on the event loop: each
        # hop to a worker thread waits for the GIL (and may start a thread), which under load
        # stalled the loop for seconds (bench_load --loop-watch). Opening and decoding go to threads.
        with _lock:
            tiler = _tilers.get(token)
        if tiler is None:
            tiler = await run_in_threadpool(_tiler, token)
        if tiler is None or not tiler.valid(*address):
            return _not_found()
        data = tiler.cached(*address)
        if data is None:
            data = await _render(tiler.tile, *address)
    except PathologyError as exc:
        return Response(str(exc), status_code=500, media_type="text/plain")
    return Response(data, media_type="image/jpeg", headers=CACHE_HEADERS)


async def overlay_tile_route(request: Request) -> Response:
    """GET a PNG tile of a registered probability overlay; 404 for unknown tokens and tiles outside the slide's pyramid."""
    address = _tile_address(request.path_params)
    if address is None:
        return _not_found()
    token = request.path_params["token"]
    with _lock:
        overlay = _overlays.get(token)
    if overlay is None or not is_tile(max_zoom(overlay.dimensions), *address):
        return _not_found()
    z, x, y = address
    key = (token, z, x, y)
    data = _overlay_cache.get(key)
    if data is None:
        data = await _render(
            overlay_tile, overlay.grid, overlay.dimensions, z, x, y, colormap=overlay.colormap, cut=overlay.cut,
            outline=overlay.outline, fade=overlay.fade,
        )
        _overlay_cache.put(key, data)
    return Response(data, media_type="image/png", headers=CACHE_HEADERS)


async def grid_route(request: Request) -> Response:
    """GET a registered probability grid's values (:func:`grid_bytes`); 404 for unknown tokens."""
    with _lock:
        grid = _grids.get(request.path_params.get("token", ""))
    if grid is None:
        return _not_found()
    data = await run_in_threadpool(grid_bytes, grid)
    return Response(data, media_type="application/octet-stream", headers=CACHE_HEADERS)


async def viewer_static(request: Request) -> Response:
    """GET a vendored file of the slide viewer (app/viewer/static, a fixed list); 404 for any other name."""
    from app.viewer import STATIC_FILES, static_file

    name = request.path_params.get("name", "")
    if name not in STATIC_FILES:
        return _not_found()
    found = await run_in_threadpool(static_file, name)
    if found is None:
        return _not_found()
    data, media = found
    return Response(data, media_type=media, headers=CACHE_HEADERS)


def routes() -> list[Route]:
    """Return the tile routes, the grid route and the viewer's static route to mount beside Streamlit."""
    from app.viewer import STATIC_ROUTE

    return [
        Route(SLIDE_ROUTE, slide_tile, methods=["GET"]), Route(OVERLAY_ROUTE, overlay_tile_route, methods=["GET"]),
        Route(GRID_ROUTE, grid_route, methods=["GET"]), Route(STATIC_ROUTE, viewer_static, methods=["GET"]),
    ]


def set_nodelay_on_listening_sockets() -> int:
    """Set TCP_NODELAY on the server's listening sockets; return how many were changed.

    Streamlit 1.67 binds its socket without TCP_NODELAY, which delays every response on a
    kept-alive connection by ~40 ms (Nagle + delayed ACK); accepted connections inherit the
    option from the listening socket on Linux.
    """
    changed = 0
    for obj in gc.get_objects():
        if isinstance(obj, socket.socket) and obj.fileno() >= 0 and obj.type == socket.SOCK_STREAM:
            with contextlib.suppress(OSError):
                if obj.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    obj.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    changed += 1
    return changed


@contextlib.asynccontextmanager
async def lifespan(_app):
    """The server's life: remove Nagle's delay from tile responses; release closed sessions' uploads meanwhile."""
    import os

    from app import housekeeping
    from core.uploads import UploadStore

    changed = set_nodelay_on_listening_sockets()
    log.info("TCP_NODELAY set on %d listening socket(s)", changed)
    interval = float(os.environ.get("PATHEX_HOUSEKEEPING_S", housekeeping.INTERVAL_S))
    async with housekeeping.running(UploadStore().folder, interval):
        yield {}
