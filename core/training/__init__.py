"""Training the patch classifier by the source recipe, on one process or many (torchrun), and the demo model.

Parts, each small: ``config`` (TrainConfig, the recipe's defaults), ``sampler`` (three-step
sampling), ``augment`` (flips and colour jitter on the batch), ``data`` (cohort table, slide
index, threaded patch reading), ``schedule`` (halve the rate, stop early), ``distributed``
(torchrun / DDP), ``evaluate`` (validation AUC, test slide AUC), ``loop`` (``train``) and
``demo`` (the preset and ``ensure_demo_model``).

Names are imported on first use, so ``import core.training.demo`` (the CLI's help text) does
not pull in torch.

Example:
    >>> from core.training import TrainConfig, train
    >>> result = train(TrainConfig(cohort="data/cohort.csv", out="runs/vgg", arch="vgg16"))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "core.training.config": ("TrainConfig", "TrainingError", "IDENTITY_FIELDS"),
    "core.training.sampler": ("ThreeStepSampler", "Samples"),
    "core.training.augment": ("ColorJitterRanges", "augment_batch", "color_jitter", "random_flips"),
    "core.training.schedule": ("Plateau", "RecipeSchedule", "EpochDecision"),
    "core.training.loop": ("train", "train_precision", "load_state", "TrainResult", "EpochMetrics", "METRICS_COLUMNS"),
    "core.training.demo": (
        "DEMO_PRESET", "DEMO_COMMAND", "DEMO_MODEL_PATH", "DEMO_TARGETS", "demo_config", "ensure_demo_model", "is_demo_model",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'core.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from core.training.augment import ColorJitterRanges, augment_batch, color_jitter, random_flips
    from core.training.config import IDENTITY_FIELDS, TrainConfig, TrainingError
    from core.training.demo import (
        DEMO_COMMAND, DEMO_MODEL_PATH, DEMO_PRESET, DEMO_TARGETS, demo_config, ensure_demo_model, is_demo_model,
    )
    from core.training.loop import METRICS_COLUMNS, EpochMetrics, TrainResult, load_state, train, train_precision
    from core.training.sampler import Samples, ThreeStepSampler
    from core.training.schedule import EpochDecision, Plateau, RecipeSchedule
