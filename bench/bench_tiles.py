"""Benchmark of the viewer's tile routes under a burst of requests on a large slide.

Generates (once, cached under bench/out/) a synthetic demo slide of at least 50,000 x 50,000
px, serves it with the app's own tile routes (app.tile_server: the same Starlette routes the
app mounts with st.App, run here by uvicorn on 127.0.0.1 with a registered slide and a
probability overlay), then sends a bounded burst of requests from several keep-alive clients
and prints latency percentiles, cold and warm, for slide JPEG tiles and overlay PNG tiles.
Baseline in the same run: the same tiles produced in-process without HTTP (read + encode).

    python bench/bench_tiles.py [--size 50176] [--clients 8] [--requests 1500]
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.demo import plan_slide, write_slide  # noqa: E402
from core.slide_io import open_slide  # noqa: E402
from core.deepzoom import SlideTiler, max_zoom  # noqa: E402

SERVER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import uvicorn
    from starlette.applications import Starlette
    sys.path.insert(0, {root!r})
    from app import tile_server
    from core.heatmap import probability_grid
    from core.slide_io import open_slide
    from core.tiling import grid_corners
    slide = open_slide({path!r})
    token = tile_server.register_slide(slide.path)
    x, y, size0 = grid_corners(slide.dimensions, 1.0, 512, 512)
    rng = np.random.default_rng(0)
    grid = probability_grid(x, y, rng.uniform(size=x.size), size0)
    overlay = tile_server.register_overlay(token, "bench", grid, slide.dimensions, colormap="inferno", cut=None, outline=0.5)
    print(json.dumps({{"slide": token, "overlay": overlay, "patches": int(x.size)}}), flush=True)
    uvicorn.run(Starlette(routes=tile_server.routes(), lifespan=tile_server.lifespan), host="127.0.0.1", port={port}, log_level="warning")
    """
)


def big_slide(size: int) -> Path:
    folder = ROOT / "bench" / "out"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"big_{size}.tiff"
    if not path.exists():
        started = time.perf_counter()
        write_slide(plan_slide("bench_big", "tumor", "test", size, (7, size), height=size), path, workers=2)
        print(f"generated {path.name} ({size} x {size} px, {path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - started:.0f} s")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def burst(port: int, urls: list[str], clients: int) -> list[float]:
    """Return per-request latencies (ms) of GETs sent by ``clients`` keep-alive connections."""
    chunks = [urls[i::clients] for i in range(clients)]

    def run(chunk: list[str]) -> list[float]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        out = []
        for url in chunk:
            started = time.perf_counter()
            conn.request("GET", url)
            response = conn.getresponse()
            body = response.read()
            out.append((time.perf_counter() - started) * 1e3)
            assert response.status == 200 and body, (url, response.status)
        conn.close()
        return out

    with ThreadPoolExecutor(clients) as pool:
        return [t for part in pool.map(run, chunks) for t in part]


def pct(values: list[float]) -> str:
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return f"p50 {p50:6.1f} ms  p90 {p90:6.1f} ms  p99 {p99:6.1f} ms  max {max(values):6.1f} ms  (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=50176, help="slide side in px (default 50176, i.e. >= 50,000)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1500)
    args = parser.parse_args()
    path = big_slide(args.size)
    slide = open_slide(path)
    top = max_zoom(slide.dimensions)
    rng = random.Random(0)
    # A viewer session's requests: mostly deep zooms inside the slide, some overview levels.
    tiles = []
    for _ in range(args.requests):
        z = rng.choice([top, top, top, top - 1, top - 1, top - 2, top - 3, top - 5])
        span = 2**z * slide.dimensions[0] / (256 * 2**top)
        tiles.append((z, rng.randrange(int(max(1, span))), rng.randrange(int(max(1, span)))))

    # Baseline: the same slide tiles in-process (no HTTP): read + JPEG encode, cold cache.
    tiler = SlideTiler(slide)
    direct = []
    for z, x, y in tiles[:300]:
        started = time.perf_counter()
        tiler.tile(z, x, y)
        direct.append((time.perf_counter() - started) * 1e3)

    port = free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(SERVER.format(root=str(ROOT), path=str(path), port=port))
    proc = subprocess.Popen([sys.executable, f.name], stdout=subprocess.PIPE, text=True)
    tokens = json.loads(proc.stdout.readline())
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    try:
        slide_urls = [f"/tiles/slide/{tokens['slide']}/{z}/{x}/{y}.jpg" for z, x, y in tiles]
        overlay_urls = [f"/tiles/overlay/{tokens['overlay']}/{z}/{x}/{y}.png" for z, x, y in tiles]
        cold = burst(port, slide_urls, args.clients)
        warm = burst(port, slide_urls, args.clients)
        overlay = burst(port, overlay_urls, args.clients)
        overlay_warm = burst(port, overlay_urls, args.clients)
        single = burst(port, slide_urls[:200], 1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"slide {slide.dimensions[0]} x {slide.dimensions[1]} px, max zoom {top}, {tokens['patches']} overlay patches, {args.clients} clients")
    print(f"baseline in-process tile (read + encode, cold)  {pct(direct)}")
    print(f"HTTP slide tiles, cold burst                    {pct(cold)}")
    print(f"HTTP slide tiles, warm burst                    {pct(warm)}")
    print(f"HTTP slide tiles, warm, one client              {pct(single)}")
    print(f"HTTP overlay tiles, cold (render + PNG)         {pct(overlay)}")
    print(f"HTTP overlay tiles, warm burst                  {pct(overlay_warm)}")
    print(f"warm single-client median / in-process median: {np.median(single) / np.median(direct):.2f}x (target: < 20 ms median warm)")


if __name__ == "__main__":
    main()
