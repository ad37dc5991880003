"""The demo model: the tiny arch trained on the synthetic demo cohort by ``train --preset demo``.

Decision: the checkpoint is committed as ``models/demo-tiny.pt`` (~0.4 MB), so the app works at
once on a fresh machine; it is reproducible with ``python -m core train --preset demo`` (the
command, seed and numbers are in its metadata). ``ensure_demo_model`` returns it, or trains it
with the preset when it is missing or unreadable (a checkout without it, a damaged file).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from core.errors import CheckpointError
from core.fileio import atomic_write
from core.paths import REPO_ROOT, demo_dir
from core.training.config import TrainConfig

__all__ = [
    "DEMO_PRESET", "DEMO_COMMAND", "DEMO_MODEL_PATH", "DEMO_TARGETS", "DEMO_RANGES", "DEMO_SHIPPED_RUN", "HELD_OUT_SEEDS", "HELD_OUT_SPLITS",
    "demo_config", "ensure_demo_model", "evaluate_demo_model", "is_demo_model", "ship_demo_run",
]

log = logging.getLogger(__name__)

DEMO_COMMAND = "python -m core train --preset demo"
DEMO_MODEL_PATH = REPO_ROOT / "models" / "demo-tiny.pt"
DEMO_RUN_DIR = Path("runs") / "demo"
# The demo model's training run, shipped beside the checkpoint (metrics.csv, summary.json and
# evaluation.json, the held-out evaluation): the Training page shows it on a fresh clone.
DEMO_SHIPPED_RUN = REPO_ROOT / "models" / "demo-tiny-run"
HELD_OUT_SPLITS = ("val", "test")
# The held-out set the demo model is judged on: the val and test splits of the shipped cohort
# (seed 0, the slides the app shows; the model trained on its train split) and of two more cohorts
# the model and the recipe never saw: 36 slides (21 tumour, 15 normal), so slide ROC-AUC moves in
# steps of ~1/300, not 1/35 as on the shipped cohort's 12 alone.
HELD_OUT_SEEDS = (0, 1, 2)
# Where the demo model should land on the held-out slides (issue 15): good, not perfect, so
# that the threshold has trade-offs to show. Slide ROC-AUC, patch ROC-AUC, FROC score.
DEMO_RANGES = MappingProxyType({"slide_auc": (0.85, 0.97), "patch_auc": (0.90, 0.98), "froc_score": (0.5, 0.85)})
# The lower bounds a retrained preset must reach: validation patch ROC-AUC, test-split slide ROC-AUC.
DEMO_TARGETS = MappingProxyType({"val_auc": 0.9, "test_slide_auc": 0.8})

# The preset's settings; everything not named here is the recipe's default. The learning rate is
# 6x the recipe's 5e-5 and an epoch is 1024 draws (not all ~2100 train patches), at most 10
# epochs: a randomly initialised tiny network (no ImageNet weights) must converge in a few
# minutes on a 2-core CPU (1e-3 also converges but its first epoch's loss spikes to ~13).
# Hard-negative mining (Wang et al. 2016, core.training.hard_negatives) from epoch 6: a quarter of
# the normal draws come from the highest-scoring tenth of the train split's normal patches (the
# lymphoid aggregates, hyperchromatic benign epithelium and crushed cells a tiny CNN confuses with
# tumour). Judged on seed 7's cohort, never on the shipped seed 0's held-out slides, three training
# seeds each (held-out slide AUC / patch AUC / FROC): 5 epochs, no mining: 0.73/0.96/0.45 and
# 0.69/0.96/0.29 (undertrained, validation AUC still rising); 10 epochs, no mining: 0.91/0.99/0.59,
# 0.91/0.96/0.61, 0.71/0.97/0.38; 10 epochs, mining share 0.25 (this preset): 0.97/0.99/0.69,
# 0.94/0.99/0.58, 0.91/0.99/0.55; share 0.5: 1.00/0.98/0.82, 0.83/0.99/0.59, 0.69/0.98/0.40.
DEMO_PRESET: Mapping[str, object] = MappingProxyType({
    "arch": "tiny",
    "pretrained": "none",
    "level": 1,
    "mpp": 1.0,  # level 1 of the demo slides (0.5 um/px at level 0): read as is, no resize
    "patch_size": 128,
    "tissue_threshold": 0.25,
    "inner_fraction": 0.5,
    "epochs": 10,
    "samples_per_epoch": 1024,
    "batch_size": 32,
    "lr": 3e-4,
    "hard_negatives": 0.25,
    "hard_negative_after": 5,
    "hard_negative_top": 0.1,
    "workers": 2,
    "device": "auto",
    "precision": "auto",
    "seed": 0,
    "test_slide_auc": True,
    "demo": True,
    "label": "demo model (synthetic data)",
    "note": (
        "Demo model trained on the synthetic demo cohort (generated slides, not real tissue); "
        "not for diagnosis. Preset 'demo': tiny arch, learning rate 3e-4 (6x the recipe's 5e-5) "
        "and at most 10 epochs of 1024 three-step draws so that it trains in minutes on a CPU; "
        "hard-negative mining from epoch 6 (a quarter of the normal draws from the highest-scoring "
        "tenth of the train split's normal patches)."
    ),
    "command": DEMO_COMMAND,
})


def demo_config(cohort: str | os.PathLike | None = None, out: str | os.PathLike | None = None, **overrides) -> TrainConfig:
    """Return the demo preset as a TrainConfig (cohort: the demo folder's cohort.csv; out: runs/demo)."""
    values = dict(DEMO_PRESET)
    values["cohort"] = str(cohort if cohort is not None else demo_dir() / "cohort.csv")
    values["out"] = str(out if out is not None else DEMO_RUN_DIR)
    values.update(overrides)
    return TrainConfig(**values)


def is_demo_model(path: str | os.PathLike) -> bool:
    """Return True if ``path`` is a loadable checkpoint whose metadata says it is the demo model."""
    from core.model import load_checkpoint

    try:
        _, meta = load_checkpoint(path)
    except CheckpointError as exc:
        log.warning("demo model %s is unusable: %s", path, exc)
        return False
    return bool(meta.get("demo"))


def _install(source: Path, target: Path) -> bool:
    """Copy ``source`` to ``target`` atomically; return False (with a warning) if the folder is read-only."""
    try:
        with open(source, "rb") as src, atomic_write(target) as dst:
            shutil.copyfileobj(src, dst)
    except OSError as exc:
        log.warning("cannot install the demo model at %s (%s); using %s", target, exc, source)
        return False
    return True


def ensure_demo_model(
    progress: Callable[[int, int], None] | None = None,
    *,
    path: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
) -> Path:
    """Return the path of a usable demo checkpoint, training it with the preset if needed.

    The committed ``models/demo-tiny.pt`` is returned when it loads and says ``demo``.
    Otherwise the demo cohort is generated if absent, the preset is trained (or resumed) in
    ``run_dir`` (default ``<repo>/runs/demo``) and its best checkpoint installed at ``path``
    (or returned from the run folder when ``path``'s folder is read-only).

    Args:
        progress: ``progress(done, total)`` of the current phase: demo slides written, then
            training steps.
    """
    from core.demo import cohort_in_progress, make_demo_cohort
    from core.training.loop import train

    target = Path(path) if path is not None else DEMO_MODEL_PATH
    if target.is_file() and is_demo_model(target):
        return target
    run = Path(run_dir) if run_dir is not None else REPO_ROOT / DEMO_RUN_DIR
    best = run / "best.pt"
    if not (best.is_file() and is_demo_model(best) and (run / "summary.json").is_file()):
        cohort = demo_dir() / "cohort.csv"
        if not cohort.is_file() or cohort_in_progress(demo_dir()):  # absent, or half-written: (re)generate
            log.info("generating the demo cohort in %s", demo_dir())
            make_demo_cohort(demo_dir(), progress=progress)
        config = demo_config(cohort=cohort, out=run)
        train(config, resume=(run / "last-state.pt").is_file(), progress=progress)
    return target if _install(best, target) else best


def evaluate_demo_model(
    model_path: str | os.PathLike,
    folder: str | os.PathLike,
    *,
    n_slides: int | None = None,
    seeds: Sequence[int] = HELD_OUT_SEEDS,
    size: int | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Evaluate a checkpoint on the held-out slides (val and test splits) of the demo cohorts of ``seeds``.

    Generates only those slides of each cohort (``n_slides``, ``size``: the defaults of
    :func:`core.demo.make_demo_cohort`) into ``folder/seed-<seed>`` (kept: a second call reuses the
    slides and the stored predictions in each folder's results.sqlite), predicts every tissue
    patch and evaluates all of them together as ``python -m core evaluate`` does (patch mode).
    Slides are named ``seed<seed>/<name>``.

    Returns:
        plain data: slides, tumor slides, tumors, slide/patch ROC-AUC, FROC score (mean
        sensitivity at 1/4 ... 8 false positives per normal slide), slide scores (max F(I)),
        the model id and what was evaluated.
    """
    from core.annotations import load_tumors
    from core.cohort import read_cohort_rows
    from core.demo import cohort_in_progress, make_demo_cohort
    from core.evaluation import evaluate_cohort
    from core.inference import predict_slide
    from core.model import load_checkpoint
    from core.store import ResultStore

    folder = Path(folder)
    kwargs = {k: v for k, v in {"n_slides": n_slides, "size": size}.items() if v is not None}
    model, meta = load_checkpoint(model_path)
    cohorts = []
    for seed in seeds:
        part = folder / f"seed-{seed}"
        cohort = part / "cohort.csv"
        if not cohort.is_file() or cohort_in_progress(part):
            make_demo_cohort(part, seed=seed, workers=workers, splits=HELD_OUT_SPLITS, **kwargs)
        cohorts.append((seed, part, read_cohort_rows(cohort)))
    total = sum(len(rows) for _, _, rows in cohorts)
    predictions, tumors, labels = {}, {}, {}
    for seed, part, rows in cohorts:
        with ResultStore(part / "results.sqlite") as store:
            for row in rows:
                name = f"seed{seed}/{row.slide}"
                result = predict_slide(row.path, model, store, model_id=meta["model_id"], metadata=meta)
                predictions[name] = result.predictions
                tumors[name] = load_tumors(row.annotations) if row.annotations else []
                labels[name] = row.label
                if progress:
                    progress(len(predictions), total)
    evaluation = evaluate_cohort(predictions, labels, tumors, inner_fraction=float(meta.get("inner_fraction", 0.5)))
    return {
        "what": "the demo model on the held-out slides (val and test splits) of the demo cohorts of these seeds, patch-mode FROC",
        "model_id": meta["model_id"],
        "cohort": {"seeds": list(seeds), **kwargs, "splits": list(HELD_OUT_SPLITS)},
        "slides": len(labels),
        "tumor_slides": sum(label == "tumor" for label in labels.values()),
        "tumors": int(evaluation.n_tumors),
        "patches": int(sum(len(p.prob) for p in predictions.values())),
        "slide_auc": _round(evaluation.slide_auc),
        "patch_auc": _round(evaluation.patch_auc),
        "froc_score": _round(evaluation.froc_score),
        "slide_scores": {name: round(float(p.prob.max()), 6) if len(p.prob) else 0.0 for name, p in predictions.items()},
        "labels": labels,
        "ranges": {k: list(v) for k, v in DEMO_RANGES.items()},
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def ship_demo_run(run: str | os.PathLike, evaluation: Mapping | None = None, target: str | os.PathLike | None = None) -> Path:
    """Copy a demo training run's metrics.csv and summary.json (and the held-out evaluation as
    evaluation.json) to the shipped run folder beside the checkpoint; return that folder."""
    import json

    run = Path(run)
    target = Path(target) if target is not None else DEMO_SHIPPED_RUN
    target.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.csv", "summary.json"):
        with open(run / name, "rb") as src, atomic_write(target / name) as dst:
            shutil.copyfileobj(src, dst)
    if evaluation is not None:
        with atomic_write(target / "evaluation.json", "w") as handle:
            handle.write(json.dumps(dict(evaluation), indent=2) + "\n")
    return target
