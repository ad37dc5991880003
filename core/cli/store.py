"""``python -m core store merge``: join the results stores of several nodes into one.

    python -m core store merge node0/results.shards/*.sqlite node1/results.shards/*.sqlite --into results.sqlite
    python -m core store merge a.sqlite b.sqlite --into results.sqlite --csv patches.csv

SQLite must not be shared over a network filesystem, so each node (each rank under
``torchrun``) writes its own store; this joins them. Slides are matched by content fingerprint,
runs by slide, model and parameters. Merging is idempotent (a store merged twice changes
nothing) and each source is merged in one transaction: a source that conflicts with the target
(a run with other patches, probabilities further apart than ``--tolerance``) is refused whole,
with one ``error:`` line, and the next sources are not merged. Sources are opened read-only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.cli import common

HELP = "results stores: merge the stores of several nodes into one (idempotent)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``store merge SOURCES... --into TARGET [--tolerance P] [--csv FILE [--model ID]]``."""
    from core.store import MERGE_TOLERANCE

    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    merge = actions.add_parser("merge", help="merge stores into one", description=__doc__.split("\n\n")[2])
    merge.add_argument("sources", nargs="+", type=Path, metavar="SQLITE", help="stores to merge (read-only)")
    merge.add_argument("--into", required=True, type=Path, metavar="SQLITE", help="the merged store (created if absent)")
    merge.add_argument(
        "--tolerance", type=float, default=MERGE_TOLERANCE,
        help=f"largest accepted difference of one patch's probability in two stores (default {MERGE_TOLERANCE:g})",
    )
    merge.add_argument("--csv", type=Path, help="then write the merged patch predictions: slide,x,y,width,height,prob (level-0 px)")
    common.add_model_id(merge)


def run(args: argparse.Namespace) -> int:
    """Merge each source into ``--into`` in order, report each, then write the CSV; return 0."""
    from core.errors import CommandError
    from core.store import ResultStore

    if not 0 <= args.tolerance <= 1:
        raise CommandError(f"--tolerance must be in [0, 1], got {args.tolerance}")
    into = Path(args.into)
    for source in args.sources:
        if source.exists() and into.exists() and source.resolve() == into.resolve():
            raise CommandError(f"{source} is the --into store itself")
    with ResultStore(into) as store:
        for source in args.sources:
            report = store.merge(source, tolerance=args.tolerance)
            print(
                f"{source}: {report.runs_added} runs added, {report.runs_completed} completed, {report.runs_extended} extended, "
                f"{report.runs_same} already there; {report.rows_added} patch predictions, {report.slides_added} slides, "
                f"{report.models_added} models added ({report.seconds:.2f} s)",
                file=sys.stderr,
            )
        if args.csv:
            model = store.choose_model(args.model)
            runs = sorted(store.runs(model_id=model["id"], status="complete"), key=lambda r: (r.slide_name, r.id))
            rows = store.write_csv(args.csv, [r.id for r in runs])
            print(f"wrote {rows} patch predictions of {len(runs)} runs to {args.csv}", file=sys.stderr)
    print(f"merged {len(args.sources)} stores into {into} ({common.size_text(into)})", file=sys.stderr)
    return 0
