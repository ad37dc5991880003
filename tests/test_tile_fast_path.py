"""The slide-tile route answers a known tiler's encoded tile on the event loop, without a worker thread."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from app import tile_server


def get(token: str, z: int, x: int, y: int):
    """Call the slide-tile route as the server does, on the running event loop."""
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b"",
             "path_params": {"token": token, "z": str(z), "x": str(x), "y": str(y)}}
    return tile_server.slide_tile(Request(scope))


def test_a_cached_tile_needs_no_worker_thread(tissue_slide, monkeypatch):
    token = tile_server.register_slide(tissue_slide[0])
    threads = []
    real_render, real_pool = tile_server._render, tile_server.run_in_threadpool

    async def render(function, *args, **kwargs):
        threads.append(("render", args))
        return await real_render(function, *args, **kwargs)

    async def pool(function, *args):
        threads.append(("open", args))
        return await real_pool(function, *args)

    monkeypatch.setattr(tile_server, "_render", render)
    monkeypatch.setattr(tile_server, "run_in_threadpool", pool)

    async def walk():
        first = await get(token, 3, 1, 0)
        opened_and_rendered = list(threads)
        again = await get(token, 3, 1, 0)
        outside = await get(token, 99, 0, 0)
        return first, opened_and_rendered, again, outside

    tile_server._tilers.pop(token, None)
    first, opened_and_rendered, again, outside = asyncio.run(walk())
    assert first.status_code == 200 and first.media_type == "image/jpeg"
    assert opened_and_rendered == [("open", (token,)), ("render", (3, 1, 0))]  # first time: opened, decoded in threads
    assert again.status_code == 200 and again.body == first.body
    assert threads == opened_and_rendered  # second time: no thread at all
    assert outside.status_code == 404
