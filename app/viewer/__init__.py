"""The Review page's slide viewer: a Streamlit component (components v2) around OpenSeadragon.

Source: ``viewer.js`` and ``viewer.css`` (hand-written) and ``static/openseadragon.min.js``
(OpenSeadragon, BSD-3-Clause, vendored from npm: ``npm --prefix app/viewer ci && npm --prefix
app/viewer run build``; the copy is committed, so running the app needs no npm). The library is
served by the app's own route (``/viewer/static/...``, :func:`static_routes`): nothing is
fetched from outside 127.0.0.1.

The browser keeps the view (centre, zoom) as long as the element lives (a rerun only updates
the overlay, the selection, the outlines); clicks and shift-drag boxes come back as a trigger
value in level-0 pixels, and :func:`patches_at` turns them into patch indices, so the patches
themselves never travel to the browser.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
STATIC_ROUTE = "/viewer/static/{name}"
#: The files the static route serves, and their media types (nothing else under the folder):
#: OpenSeadragon (vendored here) and plotly.js (the copy the plotly package ships, for app.charts).
STATIC_FILES = {"openseadragon.min.js": "text/javascript", "LICENSE-openseadragon.txt": "text/plain", "plotly.min.js": "text/javascript"}
COMPONENT_NAME = "pathex.slide_viewer"
DEFAULT_HEIGHT = 620

_component: Callable[..., Any] | None = None


def _mount() -> Callable[..., Any]:
    global _component
    if _component is None:
        import streamlit as st

        _component = st.components.v2.component(
            COMPONENT_NAME, js=(HERE / "viewer.js").read_text(), css=(HERE / "viewer.css").read_text(), isolate_styles=False,
        )
    return _component


def viewer_data(
    *,
    slide_token: str,
    slide_tiles: str,
    dimensions: tuple[int, int],
    max_level: int,
    mpp: float | None,
    overlay_token: str | None = None,
    overlay_tiles: str | None = None,
    opacity: float = 0.6,
    outline: dict | None = None,
    selected: tuple[float, float, float] | None = None,
    tumors: list | None = None,
    focus: tuple | None = None,
    height: int = DEFAULT_HEIGHT,
) -> dict:
    """Return the JSON the viewer draws.

    Args:
        slide_token, slide_tiles: the slide's tile token and URL template ``.../{z}/{x}/{y}.jpg``.
        dimensions: (width, height) of level 0 in pixels.
        max_level: the tile zoom at which one tile pixel is one level-0 pixel (core.deepzoom.max_zoom).
        mpp: microns per level-0 pixel, None when unknown (the scale bar is then hidden).
        overlay_token, overlay_tiles: the probability overlay's token and URL template, or None.
        opacity: the overlay's opacity in [0, 1].
        outline: the t outlines, drawn by the browser from the run's probability grid:
            :func:`outline_spec`, or None for none.
        selected: (x, y, side) of the selected patch in level-0 px (top-left corner), drawn as its outline.
        tumors: shapely polygons in level-0 px, drawn as outlines.
        focus: (nonce, x, y[, zoom]): centre level-0 (x, y) once per nonce, at ``zoom`` screen px per
            level-0 px (default 1: full resolution).
        height: the viewer's height in CSS pixels.
    """
    rings: list[list[list[float]]] = []
    for polygon in tumors or []:
        for ring in [polygon.exterior, *polygon.interiors]:
            rings.append(np.round(np.asarray(ring.coords)[:, :2], 1).tolist())
    return {
        "slide": {
            "token": slide_token, "tiles": slide_tiles, "width": int(dimensions[0]), "height": int(dimensions[1]),
            "maxLevel": int(max_level), "mpp": float(mpp) if mpp else None,
        },
        "overlay": None if overlay_tiles is None else {"token": overlay_token, "tiles": overlay_tiles, "opacity": float(opacity)},
        "outline": outline,
        "selected": None if selected is None else {"x": float(selected[0]), "y": float(selected[1]), "size": float(selected[2])},
        "tumors": rings,
        "focus": None if focus is None else {"nonce": str(focus[0]), "x": float(focus[1]), "y": float(focus[2]), "zoom": float(focus[3]) if len(focus) > 3 else 1.0},
        "height": int(height),
    }


def outline_spec(grid_token: str, grid_url: str, grid, threshold: float) -> dict:
    """Return what the viewer needs to outline the cells with F(I) >= ``threshold`` (t in [0, 1]).

    ``grid`` is the run's :class:`core.heatmap.ProbabilityGrid`, served at ``grid_url``
    (``app.tile_server.register_grid``): the browser fetches its values once per token and computes
    the outline (the runs of :func:`core.heatmap.outline_runs`) for each t itself. x0, y0 and
    step0 are level-0 px.
    """
    rows, cols = grid.shape
    return {
        "token": grid_token, "url": grid_url, "rows": int(rows), "cols": int(cols), "x0": float(grid.x0),
        "y0": float(grid.y0), "step0": float(grid.step0), "t": float(threshold),
    }


def slide_viewer(data: dict, *, key: str, on_select: Callable[[], None] | None = None) -> dict | None:
    """Draw the viewer with ``data`` (:func:`viewer_data`); return the click or box made since the last run, or None.

    The returned dict is ``{"kind": "point", "x", "y"}`` or ``{"kind": "box", "x0", "y0", "x1", "y1"}``
    in level-0 pixels, plus ``"slide"``: the slide token it was made on. ``on_select`` is called
    before the rerun a click or box causes; it reads the same dict as
    ``st.session_state[key]["select"]`` (so the rerun can draw the new selection at once).
    """
    result = _mount()(key=key, data=data, height="content", on_select_change=on_select or (lambda: None))
    return getattr(result, "select", None)


def patches_at(x: np.ndarray, y: np.ndarray, size0: float, selection: dict) -> np.ndarray:
    """Return the indices of the patches a click or box selects.

    Args:
        x, y: top-left corners of the patches, level-0 px.
        size0: the patches' side in level-0 px.
        selection: ``{"kind": "point", "x", "y"}`` (the patches containing the point, the one
            whose centre is nearest first) or ``{"kind": "box", "x0", "y0", "x1", "y1"}`` (the
            patches whose centre lies in the box), level-0 px.

    Returns:
        int64 indices into ``x``; empty when nothing is hit.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    cx, cy = x + size0 / 2, y + size0 / 2
    if selection.get("kind") == "box":
        x0, x1 = sorted((float(selection["x0"]), float(selection["x1"])))
        y0, y1 = sorted((float(selection["y0"]), float(selection["y1"])))
        return np.nonzero((cx >= x0) & (cx <= x1) & (cy >= y0) & (cy <= y1))[0]
    px, py = float(selection["x"]), float(selection["y"])
    hit = np.nonzero((px >= x) & (px < x + size0) & (py >= y) & (py < y + size0))[0]
    order = np.argsort((cx[hit] - px) ** 2 + (cy[hit] - py) ** 2, kind="stable")
    return hit[order]


@functools.lru_cache(maxsize=len(STATIC_FILES))
def static_file(name: str) -> tuple[bytes, str] | None:
    """Return (bytes, media type) of a file the viewer or app.charts loads, None for any other name (read once)."""
    media = STATIC_FILES.get(name)
    if media is None:
        return None
    if name == "plotly.min.js":
        import plotly

        return (Path(plotly.__file__).parent / "package_data" / name).read_bytes(), media
    return (STATIC / name).read_bytes(), media
