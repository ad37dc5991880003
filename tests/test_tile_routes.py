"""The app's tile routes over real HTTP (uvicorn on 127.0.0.1): content, types, colours, refusals."""

from __future__ import annotations

import io
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import uvicorn
from matplotlib import colormaps
from PIL import Image
from starlette.applications import Starlette

from app import tile_server
from core.heatmap import probability_grid


@pytest.fixture(scope="module")
def served(tissue_slide):
    path, image = tissue_slide
    slide_token = tile_server.register_slide(path)
    grid = probability_grid(np.array([512, 768]), np.array([256, 256]), [0.25, 0.75], size0=256)
    overlay_token = tile_server.register_overlay(slide_token, "test-run", grid, (2048, 1536), colormap="viridis", cut=None, outline=None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=tile_server.routes()), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", slide_token, overlay_token, image
    server.should_exit = True
    thread.join(timeout=10)


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers["Content-Type"], response.read()


def test_slide_tile_over_http(served):
    base, token, _, image = served
    status, kind, body = get(f"{base}/tiles/slide/{token}/3/2/1.jpg")  # max zoom 3: level-0 (512, 256)
    assert status == 200 and kind == "image/jpeg"
    tile = np.asarray(Image.open(io.BytesIO(body)))
    assert tile.shape == (256, 256, 3)
    assert np.abs(tile.astype(int) - image[256:512, 512:768]).mean() < 4


def test_overlay_tile_colours_match_the_probabilities(served):
    base, _, token, _ = served
    status, kind, body = get(f"{base}/tiles/overlay/{token}/3/2/1.png")
    assert status == 200 and kind == "image/png"
    rgba = np.asarray(Image.open(io.BytesIO(body)))
    lut = (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    assert rgba.shape == (256, 256, 4) and rgba[..., 3].min() == 255
    assert rgba[128, 128, :3].tolist() == lut[int(0.25 * 255 + 0.5)].tolist()  # the 0.25 patch
    right = np.asarray(Image.open(io.BytesIO(get(f"{base}/tiles/overlay/{token}/3/3/1.png")[2])))
    assert right[128, 128, :3].tolist() == lut[int(0.75 * 255 + 0.5)].tolist()  # the 0.75 patch
    empty = np.asarray(Image.open(io.BytesIO(get(f"{base}/tiles/overlay/{token}/3/7/7.png")[2])))
    assert empty[..., 3].max() == 0  # no prediction there: transparent


@pytest.mark.parametrize(
    "path",
    [
        "/tiles/slide/unknown-token/0/0/0.jpg",
        "/tiles/slide/..%2F..%2F..%2Fetc%2Fpasswd/0/0/0.jpg",
        "/tiles/slide/%2Fetc%2Fpasswd/0/0/0.jpg",
        "/tiles/overlay/unknown/0/0/0.png",
        "/tiles/grid/unknown.f32",
        "/tiles/grid/..%2F..%2Fetc%2Fpasswd.f32",
    ],
)
def test_unknown_tokens_and_paths_are_refused(served, path):
    base = served[0]
    with pytest.raises(urllib.error.HTTPError) as info:
        get(base + path)
    assert info.value.code in (400, 403, 404)


def test_grid_route_serves_the_runs_probabilities_as_float32(served):
    """The viewer draws the t outlines from these values: they are the grid's, NaN where no patch."""
    base = served[0]
    grid = probability_grid(np.array([0, 256, 0]), np.array([0, 0, 256]), [0.125, 0.29, 1.0], size0=256)
    token = tile_server.register_grid("some-slide", "some-run", grid)
    status, kind, body = get(f"{base}{tile_server.grid_url(token)}")
    assert status == 200 and kind == "application/octet-stream"
    values = np.frombuffer(body, dtype="<f4").reshape(grid.shape)
    assert np.array_equal(values, grid.values, equal_nan=True) and np.isnan(values[1, 1])


def test_tiles_outside_the_world_are_404(served):
    base, token, overlay, _ = served
    for url in (f"/tiles/slide/{token}/9/0/0.jpg", f"/tiles/slide/{token}/3/8/0.jpg", f"/tiles/overlay/{overlay}/1/2/0.png"):
        with pytest.raises(urllib.error.HTTPError) as info:
            get(base + url)
        assert info.value.code == 404


def test_out_of_range_and_absurd_tile_addresses_are_404_at_once(served):
    """No 2**z for a z out of the pyramid (it froze the server for 8.5 s at z = 10**9), no 500 for a huge number."""
    base, slide_token, overlay_token, _ = served
    huge = "9" * 5000  # beyond Python's 4300-digit int parsing limit
    addresses = [
        "4/0/0", "1000000000/0/0", f"{huge}/0/0", f"3/{huge}/0", "3/8/0", "3/0/8", "-1/0/0", "3/-1/0", "3/0/x", "%D9%A3/0/0",
    ]
    for kind, token, ext in (("slide", slide_token, "jpg"), ("overlay", overlay_token, "png")):
        for address in addresses:
            started = time.perf_counter()
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(f"{base}/tiles/{kind}/{token}/{address}.{ext}", timeout=10)
            assert info.value.code == 404, (kind, address[:20], info.value.code)
            assert time.perf_counter() - started < 2, (kind, address[:20])
    # The deepest real tile is still served.
    assert get(f"{base}/tiles/overlay/{overlay_token}/3/7/7.png")[0] == 200


def test_tile_caches_are_bounded_in_bytes():
    from core.deepzoom import LRU

    cache = LRU(max_bytes=1000)
    for i in range(50):
        cache.put(i, bytes(100))
    assert cache.nbytes <= 1000 and len(cache) == 10 and cache.get(49) is not None and cache.get(0) is None
    cache.put("big", bytes(5000))  # larger than the whole cache: not kept
    assert cache.get("big") is None and cache.nbytes <= 1000


def test_viewer_static_route_serves_only_the_vendored_files(served):
    from app.viewer import STATIC

    base = served[0]
    status, kind, body = get(f"{base}/viewer/static/openseadragon.min.js")
    assert status == 200 and kind.startswith("text/javascript") and body == (STATIC / "openseadragon.min.js").read_bytes()
    for name in ("viewer.js", "..%2F__init__.py", "%2Fetc%2Fpasswd", "nothing.js"):
        with pytest.raises(urllib.error.HTTPError) as info:
            get(f"{base}/viewer/static/{name}")
        assert info.value.code == 404, name
