"""Benchmark: how long the Review page takes to rerun when the threshold t moves, for a slide
with 100,000 patch predictions (AppTest, the app's real script, a store filled with synthetic
predictions). Baseline in the same run: the first (cold) run of the page, and the cost of
reading the predictions and summaries from SQLite that the warm reruns avoid.

    python bench/bench_review.py [--patches 100000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.model import build_model, save_checkpoint  # noqa: E402
from core.slide_io import open_slide  # noqa: E402
from core.store import ResultStore  # noqa: E402
from core.tiling import TilingParams, grid_corners  # noqa: E402


def prepare(folder: Path, slide_source: Path, n_patches: int) -> tuple[Path, str]:
    """Build a data folder: the slide (hard link), a cohort.csv, a checkpoint and a filled store."""
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "slides").mkdir(parents=True)
    (folder / "models").mkdir()
    slide_path = folder / "slides" / "big.tiff"
    try:
        os.link(slide_source, slide_path)
    except OSError:
        shutil.copy(slide_source, slide_path)
    (folder / "cohort.csv").write_text("slide,label,split\nbig,tumor,test\n")
    torch.manual_seed(0)
    model_id = save_checkpoint(folder / "models" / "bench-tiny.pt", build_model("tiny"), {"patch_size": 128, "level": 0, "label": "bench"})
    slide = open_slide(slide_path)
    tiling = TilingParams(level=0, patch_size=128)
    x, y, size0 = grid_corners(slide.dimensions, 1.0, 128, 128)
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(x.size, size=min(n_patches, x.size), replace=False))
    x, y = x[keep], y[keep]
    # A smooth synthetic probability field with a few hot spots.
    prob = np.clip(0.1 + 0.9 * np.exp(-(((x - 20000) / 6000.0) ** 2 + ((y - 30000) / 4000.0) ** 2)) + rng.normal(0, 0.03, x.size), 0, 1)
    with ResultStore(folder / "results.sqlite") as store:
        record = store.register_slide(slide_path, width=slide.dimensions[0], height=slide.dimensions[1], mpp=slide.mpp)
        store.register_model(model_id, arch="tiny", metadata={"patch_size": 128, "level": 0})
        run = store.get_or_create_run(record.id, model_id, {"tiling": tiling.to_dict()})
        store.set_total(run.id, x.size)
        store.add_predictions(run.id, x, y, size0, size0, prob)
        store.finish_run(run.id)
    return folder, model_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", type=int, default=100_000)
    parser.add_argument("--slide", type=Path, default=ROOT / "bench" / "out" / "big_50176.tiff", help="a large slide (bench_tiles.py makes it)")
    args = parser.parse_args()
    if not args.slide.exists():
        sys.exit(f"{args.slide} is missing: run bench/bench_tiles.py first (it generates the 50,000 px slide)")
    folder, model_id = prepare(ROOT / "bench" / "out" / "review_data", args.slide, args.patches)
    os.environ["PATHEX_DEMO_DIR"] = str(folder)
    os.environ["PATHEX_NO_DEMO_TRAINING"] = "1"

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=300)
    started = time.perf_counter()
    at.run()
    label = next(o for o in at.sidebar.selectbox[1].options if "bench-tiny" in o)
    at.sidebar.selectbox[1].select(label).run()
    cold = time.perf_counter() - started
    assert not at.exception, at.exception
    n_shown = next(m for m in at.metric if m.label.startswith("Patches with")).value
    reruns = []
    for t in (0.3, 0.5, 0.7, 0.9, 0.4, 0.6, 0.8, 0.2):
        started = time.perf_counter()
        at.sidebar.slider[0].set_value(t).run()  # Review's view reruns alone (a fragment)
        reruns.append(time.perf_counter() - started)
        assert not at.exception, at.exception
        if not len(at.sidebar):  # AppTest then holds only the fragment's elements: a full run (not timed) brings the slider back
            at.run()
    decision = next(m for m in at.metric if m.label.startswith("Decision")).value

    with ResultStore(folder / "results.sqlite") as store:
        started = time.perf_counter()
        [run] = store.runs()
        store.read_predictions(run.id)
        store.run_summaries(model_id, {"tiling": TilingParams(level=0, patch_size=128).to_dict()})
        sqlite_read = time.perf_counter() - started

    print(f"slide {open_slide(args.slide).dimensions}, {args.patches:,} patch predictions ({n_shown} at t=0.5 before the sweep)")
    print(f"cold first run (model load, thumbnail, predictions):  {cold:.2f} s")
    print(f"rerun after moving t: median {statistics.median(reruns) * 1e3:.0f} ms, max {max(reruns) * 1e3:.0f} ms over {len(reruns)} moves (target < 300 ms)")
    print(f"what caching avoids per rerun: SQLite read of the run + summaries {sqlite_read * 1e3:.0f} ms")
    print(f"decision at the last t: {decision}")


if __name__ == "__main__":
    main()
