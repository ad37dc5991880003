"""Benchmark of ``store merge`` on a large cohort's stores (default 1M patch predictions).

Writes N node stores (``--nodes``) that together hold ``--rows`` predictions over ``--slides``
slides (stand-in slide files: only their fingerprints matter), then times, in one run:
  (a) writing them (``add_predictions`` in 512-row commits, as ``predict`` does): the baseline;
  (b) merging every node store into an empty target;
  (c) merging them all again (idempotent: nothing changes; the cost of the checks);
  (d) ``store merge`` of a store holding unfinished runs that the target has complete;
and prints rows/s, the ratio merge/write, file sizes and the load average before and after.

    python bench/bench_merge.py [--rows 1000000] [--slides 100] [--nodes 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from core.store import ResultStore  # noqa: E402


def write_node(path: Path, slides: list[Path], rows_per_slide: int, rng: np.random.Generator, *, complete: bool = True) -> int:
    """Write one node's store: one complete run per slide on a square grid; return the rows written."""
    side = int(np.ceil(np.sqrt(rows_per_slide)))
    xs = (np.arange(rows_per_slide) % side) * 512
    ys = (np.arange(rows_per_slide) // side) * 512
    n = 0
    with ResultStore(path) as store:
        store.register_model("bench-model", arch="vgg16", metadata={"patch_size": 224, "mpp": 0.5})
        for slide in slides:
            record = store.register_slide(slide, width=side * 512, height=side * 512, mpp=0.25)
            run = store.get_or_create_run(record.id, "bench-model", {"tiling": {"patch_size": 224, "mpp": 0.5}})
            store.set_total(run.id, rows_per_slide)
            keep = rows_per_slide if complete else rows_per_slide // 2
            for start in range(0, keep, 512):
                sl = slice(start, min(start + 512, keep))
                store.add_predictions(run.id, xs[sl], ys[sl], 512, 512, rng.random(sl.stop - sl.start))
                n += sl.stop - sl.start
            if complete:
                store.finish_run(run.id)
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--slides", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=4)
    args = parser.parse_args()
    load_before = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    rows_per_slide = args.rows // args.slides
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        folder = Path(tmp)
        slides = []
        for i in range(args.slides):
            path = folder / f"slide_{i:05d}.tiff"
            path.write_bytes(rng.bytes(4096))
            slides.append(path)
        shares = [slides[k :: args.nodes] for k in range(args.nodes)]
        nodes = [folder / f"node{k}.sqlite" for k in range(args.nodes)]
        started = time.perf_counter()
        written = sum(write_node(p, share, rows_per_slide, rng) for p, share in zip(nodes, shares))
        write_s = time.perf_counter() - started
        print(f"(a) wrote {written:,} rows in {args.nodes} node stores: {write_s:.1f} s, {written / write_s:,.0f} rows/s (baseline)")

        target = folder / "merged.sqlite"
        with ResultStore(target) as store:
            started = time.perf_counter()
            reports = [store.merge(p) for p in nodes]
            merge_s = time.perf_counter() - started
            added = sum(r.rows_added for r in reports)
            print(f"(b) merged into an empty store: {added:,} rows in {merge_s:.2f} s, {added / merge_s:,.0f} rows/s; "
                  f"merge/write time {merge_s / write_s:.2f}")
            started = time.perf_counter()
            again = [store.merge(p) for p in nodes]
            again_s = time.perf_counter() - started
            assert not any(r.changed for r in again)
            print(f"(c) merged again (nothing changes): {again_s:.2f} s, {written / again_s:,.0f} rows checked/s")
            partial = folder / "partial.sqlite"
            part_rows = write_node(partial, shares[0], rows_per_slide, rng, complete=False)
            started = time.perf_counter()
            report = store.merge(partial, tolerance=1.0)  # random probabilities: compare patches, not values
            partial_s = time.perf_counter() - started
            assert not report.changed
            print(f"(d) an unfinished node store ({part_rows:,} rows) whose runs the target has complete: {partial_s:.2f} s")
        size = target.stat().st_size  # closed: the WAL is checkpointed into the file
        print(f"merged store: {size / 1e6:.1f} MB for {added:,} rows ({size / max(added, 1):.0f} bytes/row)")
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")


if __name__ == "__main__":
    main()
