"""``python -m core report``: the cohort report as one self-contained HTML file.

    python -m core report --db results.sqlite --cohort data/demo/cohort.csv --annotations data/demo/annotations --out report.html
    python -m core report --cohort cohort.csv --split test --figures figures --figure-format svg --out report.html

The work is done by :mod:`core.evaluation` and :mod:`core.export`, imported when the command runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from core.cli import common
from core.errors import CommandError

HELP = "write the cohort report: one self-contained HTML file (cohort table, the three evaluation views at t, a heatmap thumbnail per slide)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``report`` (defaults: those of :mod:`core.export`)."""
    from core.cli.common import keyword_default
    from core.export import render_cohort_report
    from core.export.figures import FIGURE_FORMATS

    common.add_db(parser)
    common.add_model_id(parser)
    common.add_threshold(parser)
    common.add_cohort_table(parser)
    common.add_annotations(parser, required=False, help="without: no patch level or FROC")
    common.add_mode(parser)
    common.add_split(parser, verb="report")
    common.add_allow_missing(parser)
    common.add_nms_radius_um(parser)
    thumbnail_width = keyword_default(render_cohort_report, "thumbnail_width")
    parser.add_argument(
        "--thumbnail-width", type=int, default=thumbnail_width, help=f"width in px of each slide's heatmap picture (default {thumbnail_width})"
    )
    parser.add_argument("--figures", type=Path, metavar="DIR", help="also write each evaluation figure to DIR (see --figure-format)")
    parser.add_argument(
        "--figure-format", choices=FIGURE_FORMATS, action="append",
        help="format of the --figures files, repeatable (default png; png/svg by Plotly's kaleido when installed, else matplotlib)",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="HTML", help="the report file to write")


def run(args: argparse.Namespace) -> int:
    """Evaluate the store's cohort, write the HTML report (and the figure files); return 0."""
    from core import export
    from core.cohort import read_cohort
    from core.evaluation import evaluate_store_cohort

    common.check_threshold(args.threshold)
    if args.figure_format and args.figures is None:
        raise CommandError("--figure-format goes with --figures DIR")
    started = time.perf_counter()
    with common.open_store(args.db) as store:
        results = evaluate_store_cohort(
            store, read_cohort(args.cohort), annotations=args.annotations, model_id=args.model, split=args.split,
            mode=args.mode, allow_missing=args.allow_missing, nms_radius_um=args.nms_radius_um,
        )
    page = export.render_cohort_report(results, args.threshold, thumbnail_width=args.thumbnail_width)
    export.write_bytes(args.out, page.encode("utf-8"))
    figures = []
    if args.figures is not None:
        for name, fig in export.evaluation_figures(results.evaluation, args.threshold).items():
            for fmt in args.figure_format or ["png"]:
                figures.append(export.write_figure(args.figures / f"{name}.{fmt}", fig, fmt))
    print(
        f"wrote the cohort report of {len(results.cohort)} slides (model {results.model['id']}, t = {args.threshold:g}, "
        f"{args.mode} mode) to {args.out} ({common.size_text(args.out)}, {time.perf_counter() - started:.1f} s)"
        + (f" and {len(figures)} figure files to {args.figures} (static images by {export.static_engine()})" if args.figures is not None else "")
    )
    return 0
