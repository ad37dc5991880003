"""Benchmark: the felt latency of a t move in the browser, on the Review page's deep-zoom viewer.

For each fixture (a ~250-patch slide and a ~100,000-patch slide, predictions written straight
into a store as bench_review.py does), the real server runs in headless Debian Chromium; t is
moved one step with the keyboard, 10 times, and the time from the key press to the new overlay
drawn in the viewer is measured in the page (OpenSeadragon drawing the t outlines itself: the
outlines of the new t drawn; OpenSeadragon with t in the tiles: the new overlay item fully loaded;
the old plotly/MapLibre viewer: the map idle with the new overlay source's tiles loaded).

    python bench/bench_viewer.py                       # this tree
    git worktree add /tmp/before <commit> && python bench/bench_viewer.py --tree /tmp/before   # another tree, same fixtures

Prints the median and max per fixture and the load average (2-core machines are shared: compare
runs made back to back).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OSD_DRAWN = """(old) => { const v = window.pathexViewer; return !!(v && v.overlayDrawn.token && v.overlayDrawn.token !== old && !v.pendingOverlay); }"""
# A viewer that draws the t outlines itself (viewer.drawn()): the outlines for the t it was last given.
OSD_OUTLINES = """(old) => { const v = window.pathexViewer; return !!(v && v.outlinesDrawn && v.outlinesDrawn.key && v.outlinesDrawn.key !== old && v.drawn()); }"""
# The old viewer: plotly's MapLibre map, its overlay source and whether its tiles are in.
MAP_STATE = """() => { const gd = document.querySelector('[data-testid="stMain"] .js-plotly-plot');
    const m = gd && gd._fullLayout && gd._fullLayout.map && gd._fullLayout.map._subplot && gd._fullLayout.map._subplot.map;
    if (!m || !m.getStyle()) return null; const src = m.getStyle().sources.overlay;
    return {tiles: src ? src.tiles[0] : null, idle: m.loaded() && m.areTilesLoaded()}; }"""


def prepare(folder: Path, slide_source: Path, patch: int, limit: int) -> int:
    """A data folder: the slide (hard link), cohort.csv, a checkpoint and a store with synthetic predictions."""
    import numpy as np
    import torch

    from core.model import build_model, save_checkpoint
    from core.slide_io import open_slide
    from core.store import ResultStore
    from core.tiling import TilingParams, grid_corners

    if folder.exists():
        shutil.rmtree(folder)
    (folder / "slides").mkdir(parents=True)
    (folder / "models").mkdir()
    slide_path = folder / "slides" / "bench.tiff"
    try:
        os.link(slide_source, slide_path)
    except OSError:
        shutil.copy(slide_source, slide_path)
    (folder / "cohort.csv").write_text("slide,label,split\nbench,tumor,test\n")
    torch.manual_seed(0)
    meta = {"patch_size": patch, "level": 0, "label": "bench"}
    model_id = save_checkpoint(folder / "models" / "bench-tiny.pt", build_model("tiny"), meta)
    slide = open_slide(slide_path)
    x, y, size0 = grid_corners(slide.dimensions, 1.0, patch, patch)
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(x.size, size=min(limit, x.size), replace=False))
    x, y = x[keep], y[keep]
    w, h = slide.dimensions
    # A smooth probability field with one hot spot (F(I) 0.1 .. 1), so every t step changes the outlines.
    prob = np.clip(0.1 + 0.9 * np.exp(-(((x - w / 2) / (w / 5)) ** 2 + ((y - h / 2) / (h / 6)) ** 2)) + rng.normal(0, 0.03, x.size), 0, 1)
    with ResultStore(folder / "results.sqlite") as store:
        record = store.register_slide(slide_path, width=w, height=h, mpp=slide.mpp)
        store.register_model(model_id, arch="tiny", metadata=meta)
        run = store.get_or_create_run(record.id, model_id, {"tiling": TilingParams(level=0, patch_size=patch).to_dict()})
        store.set_total(run.id, x.size)
        store.add_predictions(run.id, x, y, size0, size0, prob)
        store.finish_run(run.id)
    return int(x.size)


def serve(tree: Path, data: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PATHEX_DEMO_DIR": str(data), "PATHEX_NO_DEMO_TRAINING": "1", "PATHEX_UPLOAD_DIR": str(data.parent / "uploads")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port), "--server.headless", "true"],
        cwd=tree, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=1)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    sys.exit(f"the server did not start (log {log})")


def wait_run(page) -> None:
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=300_000)


def measure(url: str, moves: int) -> tuple[str, list[float]]:
    """Open Review with the bench model; move t ``moves`` steps; return (viewer kind, seconds per move)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_role("heading", name="Review").wait_for(timeout=120_000)
        wait_run(page)
        model = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').nth(1)
        model.click()
        page.get_by_role("option", name="bench-tiny (models/)").click()
        wait_run(page)
        osd = page.locator('[data-testid="pathexViewer"]')
        page.wait_for_function(f"() => !!document.querySelector('[data-testid=\"pathexViewer\"]') || ({MAP_STATE})() !== null", timeout=300_000)
        kind = "openseadragon" if osd.count() else "plotly-maplibre"
        (osd if osd.count() else page.locator(".maplibregl-canvas")).scroll_into_view_if_needed()
        if kind == "openseadragon":
            page.wait_for_function("() => window.pathexViewer && window.pathexViewer.overlayDrawn.token", timeout=300_000)
        else:
            page.wait_for_function(f"() => {{ const s = ({MAP_STATE})(); return s && s.idle; }}", timeout=300_000)
        page.wait_for_timeout(1500)
        slider = page.locator('[data-testid="stSidebar"] input[aria-label="Decision threshold t"]')
        times, rerun = [], []
        outlines = kind == "openseadragon" and page.evaluate("() => typeof window.pathexViewer.drawn === 'function'")
        for i in range(moves):
            if outlines:
                old = page.evaluate("() => window.pathexViewer.outlinesDrawn.key")
            else:
                old = page.evaluate("() => window.pathexViewer.overlayDrawn.token") if kind == "openseadragon" else page.evaluate(MAP_STATE)["tiles"]
            slider.focus()
            start = page.evaluate("() => performance.now()")
            slider.press("ArrowRight" if i % 2 == 0 else "ArrowLeft")
            if outlines:  # no new tiles: the outlines for the new t, drawn in the browser
                page.wait_for_function(OSD_OUTLINES, arg=old, timeout=300_000, polling="raf")
                done = page.evaluate("() => window.pathexViewer.outlinesDrawn.at")
            elif kind == "openseadragon":
                page.wait_for_function(OSD_DRAWN, arg=old, timeout=300_000, polling="raf")
                done = page.evaluate("() => window.pathexViewer.overlayDrawn.at")
                rerun.append((page.evaluate("() => window.pathexViewer.overlayRequested.at") - start) / 1000)
            else:
                page.wait_for_function(
                    f"(old) => {{ const s = ({MAP_STATE})(); return !document.querySelector('[data-testid=\"stStatusWidget\"]') && s && s.tiles !== old && s.idle; }}",
                    arg=old, timeout=300_000, polling="raf",
                )
                done = page.evaluate("() => performance.now()")
            times.append((done - start) / 1000)
            wait_run(page)
            page.wait_for_timeout(700)
        browser.close()
    if rerun:
        print(f"  of which the page's rerun (key press to the new overlay's URL in the viewer): median {statistics.median(rerun) * 1e3:.0f} ms; "
              f"drawing its tiles: the rest")
    return kind, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose app is measured (default: this one)")
    parser.add_argument("--moves", type=int, default=10)
    parser.add_argument("--big", type=Path, default=ROOT / "bench" / "out" / "big_20480.tiff", help="a 20,480 px slide (bench_tiles.big_slide(20480))")
    parser.add_argument("--small", type=Path, default=ROOT / "bench" / "out" / "bench_4096.tiff", help="a 4,096 px slide (bench_tiles.py makes it)")
    args = parser.parse_args()
    tree = args.tree.resolve()
    sys.path.insert(0, str(tree))
    os.chdir(tree)
    out = ROOT / "bench" / "out" / "viewer"
    fixtures = [("small", args.small, 256, 10**9), ("100k", args.big, 64, 100_000)]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, tree {tree}")
    for name, slide, patch, limit in fixtures:
        if not slide.exists():
            print(f"{name}: {slide} is missing, skipped")
            continue
        data = out / name / "cohort"
        n = prepare(data, slide, patch, limit)
        port = 8700 + (os.getpid() % 200)
        proc = serve(tree, data, port, out / name / "server.log")
        try:
            load = os.getloadavg()
            kind, times = measure(f"http://localhost:{port}", args.moves)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        print(
            f"{name}: {n:,} patches, viewer {kind}: t move to new overlay drawn, median {statistics.median(times) * 1e3:.0f} ms, "
            f"max {max(times) * 1e3:.0f} ms over {len(times)} moves (target < 500 ms); load average {load[0]:.2f} before, "
            f"{os.getloadavg()[0]:.2f} after; all: {[round(t * 1e3) for t in times]}"
        )


if __name__ == "__main__":
    main()
