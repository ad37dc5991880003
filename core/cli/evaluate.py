"""``python -m core evaluate``: slide AUC, patch AUC, FROC points and FROC score of a cohort.

    python -m core evaluate --db results.sqlite --cohort data/demo/cohort.csv --annotations data/demo/annotations
    python -m core evaluate --predictions patches.csv --cohort cohort.csv --annotations annotations --split test
    python -m core evaluate --db results.sqlite --cohort cohort.csv --annotations annotations --mode camelyon16 --json report.json
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from core.cli import common
from core.errors import CommandError

HELP = "evaluate patch predictions of a cohort: slide AUC, patch AUC, FROC points and FROC score"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``evaluate``."""
    from core.tiling import DEFAULT_INNER_FRACTION

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", type=Path, metavar="CSV", help="patch predictions CSV (slide,x,y,width,height,prob)")
    common.add_db(source, default=None)
    common.add_model_id(parser)
    common.add_annotations(parser, required=True)
    common.add_cohort_table(parser)
    common.add_split(parser, verb="evaluate")
    common.add_inner_fraction(parser, default=DEFAULT_INNER_FRACTION, shown=DEFAULT_INNER_FRACTION)
    common.add_threshold(parser)
    common.add_mode(parser)
    parser.add_argument(
        "--mpp", type=float,
        help="Camelyon16 modes: microns per level-0 pixel of every slide (camelyon16 default: the official 0.243, "
        "which makes the score comparable with the challenge's; camelyon16-polygons default: each slide's own)",
    )
    parser.add_argument(
        "--slides", type=Path, metavar="DIR",
        help="Camelyon16 modes: folder of the slide files, to read each slide's own mpp (camelyon16: to warn where it differs)",
    )
    common.add_nms_radius_um(parser)
    common.add_allow_missing(parser)
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the full report (with the FROC points) as JSON")


def _slide_mpp(folder: Path, slides) -> dict:
    """Return slide -> mpp read from the slide files in ``folder`` (the data folder's rule, core.cohort)."""
    from core.cohort import list_slides
    from core.evaluation import EvaluationError
    from core.slide_io import slide_info

    if not folder.is_dir():
        raise EvaluationError(f"slides folder not found: {folder}")
    by_stem = {path.stem: path for path in list_slides([folder])}
    out = {}
    for slide in slides:
        if slide in by_stem:
            mpp = slide_info(by_stem[slide]).mpp
            if mpp:
                out[slide] = mpp
    return out


def _evaluate_csv(args: argparse.Namespace, full, cohort):
    """Return the evaluation of a predictions CSV (no store: mpp from --mpp, the cohort or --slides)."""
    from core.cohort import load_cohort_tumors
    from core.evaluation import EvaluationWarning, evaluate_cohort, read_predictions_csv

    if args.model:
        raise CommandError("--model goes with --db, not with --predictions")
    predictions = read_predictions_csv(args.predictions)
    if args.split:
        # Slides of other splits are expected in the predictions: not worth a warning.
        others = set(full.slides) - set(cohort.slides)
        predictions = {s: p for s, p in predictions.items() if s not in others}
    if args.mode != "patch" and args.mpp is None and args.slides is not None:
        cohort = cohort.with_mpp(_slide_mpp(args.slides, [s for s, m in zip(cohort.slides, cohort.mpp) if m is None]))
    tumors = load_cohort_tumors(args.annotations, cohort.slides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EvaluationWarning)  # printed below from result.warnings
        return evaluate_cohort(
            predictions, cohort, tumors, inner_fraction=args.inner_fraction, mode=args.mode,
            mpp=args.mpp if args.mode != "patch" else None, nms_radius_um=args.nms_radius_um,
            allow_missing=args.allow_missing,
        )


def _evaluate_store(args: argparse.Namespace, cohort):
    """Return the evaluation of what the store holds (core.evaluation.evaluate_store_cohort)."""
    from core.evaluation import EvaluationError, evaluate_store_cohort
    from core.store import ResultStore

    if not args.db.is_file():
        raise EvaluationError(f"results store not found: {args.db}")
    with ResultStore(args.db) as store:
        extra = None
        if args.mode != "patch" and args.mpp is None and args.slides is not None:
            extra = _slide_mpp(args.slides, [s for s, m in zip(cohort.slides, cohort.mpp) if m is None])
        results = evaluate_store_cohort(
            store, cohort, annotations=args.annotations, model_id=args.model, mode=args.mode,
            mpp=args.mpp if args.mode != "patch" else None, extra_mpp=extra, inner_fraction=args.inner_fraction,
            nms_radius_um=args.nms_radius_um, allow_missing=args.allow_missing,
        )
    return results.evaluation


def run(args: argparse.Namespace) -> int:
    """Evaluate the cohort, print the summary at the threshold (and write the JSON report); return 0."""
    from core.cohort import read_cohort
    from core.evaluation import EvaluationError

    common.check_threshold(args.threshold)
    if args.mode == "patch" and (args.mpp or args.slides or args.nms_radius_um):
        raise CommandError("--mpp, --slides and --nms-radius-um only apply to the Camelyon16 modes")
    full = read_cohort(args.cohort)
    cohort = full.select(args.split) if args.split else full
    result = _evaluate_csv(args, full, cohort) if args.predictions is not None else _evaluate_store(args, cohort)
    for message in result.warnings:
        print(f"warning: {message}", file=sys.stderr)
    if args.json is not None:
        from core.fileio import atomic_write

        try:
            with atomic_write(args.json, "w", encoding="utf-8") as handle:
                json.dump(result.to_dict(args.threshold), handle, allow_nan=False)
                handle.write("\n")
        except OSError as exc:
            raise EvaluationError(f"cannot write the JSON report {args.json}: {exc.strerror or exc}") from None
    print(result.summary(args.threshold))
    if args.json is not None:
        print(f"report written to {args.json}")
    return 0

