"""Scores used during training: validation patch loss / ROC-AUC, and test-split slide ROC-AUC.

The slide score is the source material's: max F(I) over the slide's tissue patches, and a slide
is tumor (1) or normal (0) by the cohort label. (``core.evaluation`` holds the full evaluation:
FROC, patch ROC/PR, thresholds; this module only needs the two numbers training reports.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from core.model import PatchClassifier
from core.training.data import SlidePatches, prefetch, read_slide_patches

__all__ = ["binary_auc", "bce_from_logits", "slide_max_scores", "slide_auc"]


def binary_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Return the ROC-AUC of ``scores`` for binary ``labels``; NaN when only one class is present."""
    labels = np.asarray(labels).astype(np.int64)
    if labels.size == 0 or labels.min() == labels.max():
        return math.nan
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


def bce_from_logits(labels: np.ndarray, logits: np.ndarray) -> float:
    """Return the mean binary cross-entropy of sigmoid(logits) against labels (stable form)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if z.size == 0:
        return math.nan
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


def slide_max_scores(
    model: PatchClassifier,
    index: Sequence[SlidePatches],
    *,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 64,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Return max F(I) over each slide's tissue patches (0 for a slide without tissue patches).

    Runs the model through ``core.inference.PredictionRunner`` (same device, precision and
    layout as ``predict``); nothing is written to a results store.
    """
    from core.inference import PredictionRunner

    runner = PredictionRunner(model, device=device, precision=precision, batch_size=batch_size, workers=workers)
    jobs, owners = [], []
    for s, entry in enumerate(index):
        for start in range(0, len(entry), batch_size):
            rows = np.arange(start, min(start + batch_size, len(entry)))
            jobs.append(lambda e=entry, r=rows: read_slide_patches(e, r))
            owners.append(s)
    scores = np.zeros(len(index), dtype=np.float64)
    total = sum(len(e) for e in index)
    done = 0
    for s, patches in zip(owners, prefetch(jobs, workers)):
        scores[s] = max(scores[s], float(runner.forward(patches).max()))
        done += len(patches)
        if progress:
            progress(done, total)
    return scores


def slide_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Return the slide-level ROC-AUC of slide scores (tumor = 1); NaN with a single class."""
    return binary_auc(labels, scores)
