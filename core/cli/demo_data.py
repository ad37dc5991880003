"""``python -m core demo-data``: write the synthetic demo cohort (slides, annotations, cohort.csv).

    python -m core demo-data data/demo
    python -m core demo-data /tmp/small --slides 6 --size 2048 --seed 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from core.cli.common import keyword_default, progress_bar
from core.errors import CommandError

HELP = "write the synthetic demo cohort (slides, annotations, cohort.csv)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``demo-data`` (defaults: those of :func:`core.demo.make_demo_cohort`)."""
    from core.demo import cohort_layout, make_demo_cohort

    n_slides, seed, size = (keyword_default(make_demo_cohort, k) for k in ("n_slides", "seed", "size"))
    n_tumor = sum(label == "tumor" for _, label, _ in cohort_layout(n_slides, seed))
    parser.add_argument("out", type=Path, help="folder to write slides/, annotations/ and cohort.csv into")
    parser.add_argument(
        "--slides", type=int, default=n_slides,
        help=f"number of slides (default {n_slides}: {n_tumor} tumor, {n_slides - n_tumor} normal)",
    )
    parser.add_argument("--seed", type=int, default=seed, help="random seed; the same seed gives the same cohort")
    parser.add_argument("--size", type=int, default=size, help=f"level-0 width of each slide in px (default {size})")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU core)")


def run(args: argparse.Namespace) -> int:
    """Write the cohort into ``args.out`` with a progress bar; return 0."""
    from core.demo import make_demo_cohort

    if args.slides < 2:
        raise CommandError("--slides must be at least 2")
    started = time.perf_counter()
    bar, update = progress_bar(args.slides, "demo slides", "slide")
    try:
        cohort = make_demo_cohort(args.out, n_slides=args.slides, seed=args.seed, size=args.size, workers=args.workers, progress=update)
    finally:
        bar.close()
    size = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
    print(
        f"wrote synthetic demo cohort: {args.slides} slides, {size / 1e6:.1f} MB, "
        f"{time.perf_counter() - started:.1f} s -> {cohort}",
        file=sys.stderr,
    )
    return 0
