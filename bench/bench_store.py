"""Benchmark of core.store: write and read 100,000 patch predictions of one run.

Baseline measured in the same run: a plain ``SELECT *`` of the same rows into a Python list
(no sort, no numpy), the least any reader can do through sqlite3.

    python bench/bench_store.py [--rows 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.store import ResultStore  # noqa: E402


def best_of(repeat: int, fn) -> tuple[float, object]:
    """Return the fastest wall time in seconds of ``repeat`` calls and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.rows

    with tempfile.TemporaryDirectory() as tmp:
        slide_file = Path(tmp) / "bench_slide.tiff"
        slide_file.write_bytes(np.random.default_rng(0).integers(0, 256, 4 << 20, dtype=np.uint8).tobytes())
        with ResultStore(Path(tmp) / "results.sqlite") as store:
            slide = store.register_slide(slide_file, width=200_000, height=100_000, mpp=0.25)
            store.register_model("bench", arch="vgg16", metadata={})
            run = store.get_or_create_run(slide.id, "bench", {"patch_size": 512})
            cols = 390  # a 390-column tissue grid of 512 px patches, written in shuffled order
            i = np.random.default_rng(1).permutation(n)
            x, y = (i % cols) * 512, (i // cols) * 512
            prob = np.random.default_rng(2).random(n).astype(np.float32)

            t = time.perf_counter()
            inserted = store.add_predictions(run.id, x, y, 512, 512, prob)
            write_s = time.perf_counter() - t
            assert inserted == n

            read_s, preds = best_of(args.repeat, lambda: store.read_predictions(run.id))
            assert len(preds) == n

            baseline = sqlite3.connect(store.path)
            base_s, rows = best_of(
                args.repeat, lambda: baseline.execute("SELECT * FROM predictions WHERE run_id = ?", (run.id,)).fetchall()
            )
            baseline.close()
            assert len(rows) == n

            done_s, done = best_of(args.repeat, lambda: store.done_locations(run.id))
            assert len(done) == n

    print(f"rows                         {n:>10,}")
    print(f"add_predictions (1 txn)      {write_s * 1e3:10.1f} ms  {n / write_s:12,.0f} rows/s")
    print(f"read_predictions (sorted)    {read_s * 1e3:10.1f} ms  {n / read_s:12,.0f} rows/s")
    print(f"baseline SELECT * -> list    {base_s * 1e3:10.1f} ms  {n / base_s:12,.0f} rows/s")
    print(f"done_locations (set)         {done_s * 1e3:10.1f} ms  {n / done_s:12,.0f} rows/s")
    print(f"read_predictions / baseline  {read_s / base_s:10.2f} x")


if __name__ == "__main__":
    main()
