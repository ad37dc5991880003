"""``python -m core evaluate``: slide AUC, patch AUC, FROC points and FROC score of a cohort.

Registered with :func:`core.cli.register` when :mod:`core.cli` loads its extensions.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from core import cli
from core.tiling import DEFAULT_INNER_FRACTION

HELP = "evaluate patch predictions of a cohort: slide AUC, patch AUC, FROC points and FROC score"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", type=Path, metavar="CSV", help="patch predictions CSV (slide,x,y,width,height,prob)")
    source.add_argument("--db", type=Path, metavar="SQLITE", help="results store written by `predict`")
    parser.add_argument("--model", help="model id in the store (default: its only model)")
    parser.add_argument("--annotations", type=Path, required=True, metavar="DIR", help="folder of <slide>.geojson / <slide>.xml tumor annotations")
    parser.add_argument("--cohort", type=Path, required=True, metavar="CSV", help="cohort table: slide,label[,split][,mpp], label tumor/normal")
    parser.add_argument("--split", help="evaluate only the cohort's slides of this split (e.g. test)")
    parser.add_argument("--inner-fraction", type=float, default=DEFAULT_INNER_FRACTION, help="inner-square side as a fraction of the patch side (default 0.5)")
    parser.add_argument("--threshold", type=float, default=0.5, help="threshold t of the at-threshold counts (default 0.5)")
    parser.add_argument("--mode", choices=("patch", "camelyon16"), default="patch", help="FROC of the source material (patch) or of the official Camelyon16 evaluation")
    parser.add_argument("--mpp", type=float, help="camelyon16: microns per level-0 pixel of every slide")
    parser.add_argument("--slides", type=Path, metavar="DIR", help="camelyon16: folder of the slide files, to read each slide's mpp")
    parser.add_argument("--nms-radius-um", type=float, help="camelyon16: non-maximum suppression radius in um (default 1.5 patch sides)")
    parser.add_argument("--allow-missing", action="store_true", help="count cohort slides without predictions as slides without tissue (score 0)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the full report (with the FROC points) as JSON")


def _load_predictions(args: argparse.Namespace) -> tuple[dict, dict]:
    """Return (slide -> predictions, slide -> mpp known to the store)."""
    from core.evaluation import EvaluationError, read_predictions_csv

    if args.predictions is not None:
        if args.model:
            raise cli.CommandError("--model goes with --db, not with --predictions")
        return read_predictions_csv(args.predictions), {}
    from core.store import ResultStore

    if not args.db.is_file():
        raise EvaluationError(f"results store not found: {args.db}")
    with ResultStore(args.db) as store:
        models = [m["id"] for m in store.models()]
        model = args.model
        if model is None:
            if len(models) != 1:
                raise cli.CommandError(
                    f"the store holds {len(models)} models; choose one with --model ({', '.join(models) or 'none'})"
                )
            model = models[0]
        elif model not in models:
            raise cli.CommandError(f"model {model!r} is not in the store (models: {', '.join(models) or 'none'})")
        predictions = store.predictions_for_model(model)
        mpp = {s.name: s.mpp for s in store.slides() if s.mpp}
    if not predictions:
        raise EvaluationError(f"the store holds no complete prediction run of model {model!r}")
    return predictions, mpp


def _slide_mpp(folder: Path, slides) -> dict:
    """Return slide -> mpp read from the slide files in ``folder`` (first file whose stem matches)."""
    from core.evaluation import EvaluationError
    from core.slide_io import slide_info

    if not folder.is_dir():
        raise EvaluationError(f"slides folder not found: {folder}")
    by_stem: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file():
            by_stem.setdefault(path.stem, path)
    out = {}
    for slide in slides:
        if slide in by_stem:
            mpp = slide_info(by_stem[slide]).mpp
            if mpp:
                out[slide] = mpp
    return out


def run(args: argparse.Namespace) -> int:
    from core.evaluation import Cohort, EvaluationError, EvaluationWarning, evaluate_cohort, load_cohort_tumors, read_cohort

    if not 0 <= args.threshold <= 1:
        raise cli.CommandError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.mode != "camelyon16" and (args.mpp or args.slides or args.nms_radius_um):
        raise cli.CommandError("--mpp, --slides and --nms-radius-um only apply to --mode camelyon16")
    full = read_cohort(args.cohort)
    cohort = full.select(args.split) if args.split else full
    predictions, store_mpp = _load_predictions(args)
    if args.split:
        # Slides of other splits are expected in the predictions: not worth a warning.
        others = set(full.slides) - set(cohort.slides)
        predictions = {s: p for s, p in predictions.items() if s not in others}
    tumors = load_cohort_tumors(args.annotations, cohort.slides)

    mpp = None
    if args.mode == "camelyon16":
        if args.mpp is not None:
            mpp = args.mpp
        else:
            known = dict(store_mpp)
            if args.slides is not None:
                known.update(_slide_mpp(args.slides, [s for s, m in zip(cohort.slides, cohort.mpp) if m is None]))
            # The cohort's own mpp column wins over the store and the slide files; a slide
            # still without mpp is named by evaluate_cohort's error.
            filled = tuple(m if m is not None else known.get(s) for s, m in zip(cohort.slides, cohort.mpp))
            cohort = Cohort(cohort.slides, cohort.labels, cohort.splits, filled)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EvaluationWarning)
        result = evaluate_cohort(
            predictions, cohort, tumors, inner_fraction=args.inner_fraction, mode=args.mode, mpp=mpp,
            nms_radius_um=args.nms_radius_um, allow_missing=args.allow_missing,
        )
    for w in caught:
        if issubclass(w.category, EvaluationWarning):
            print(f"warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump(result.to_dict(args.threshold), handle, allow_nan=False)
                handle.write("\n")
        except OSError as exc:
            raise EvaluationError(f"cannot write the JSON report {args.json}: {exc.strerror or exc}") from None
    print(result.summary(args.threshold))
    if args.json is not None:
        print(f"report written to {args.json}")
    return 0


cli.register("evaluate", HELP, add_arguments, run)
