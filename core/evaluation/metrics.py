"""Metrics of the evaluation: slide level (ROC, counts at t), patch level (ROC, PR, confusion matrix), FROC.

These functions take plain arrays (scores, labels, per-tumor scores, false-positive
probabilities) and know nothing of slides, annotations or modes: :mod:`core.evaluation.cohort`
builds those arrays from a cohort's predictions, one FROC mode module per rule
(:mod:`~core.evaluation.patch_mode`, :mod:`~core.evaluation.camelyon16`).

**What is computed by hand and why.** Slide ROC/AUC and slide confusion matrices use
scikit-learn's ``roc_curve``, ``roc_auc_score`` and ``confusion_matrix``. For patches
(millions of rows) each of scikit-learn's ``roc_curve``, ``roc_auc_score``,
``precision_recall_curve`` and ``average_precision_score`` sorts the data again (about 2 s
each for 5 M rows here), so the patch curves come from one sort and cumulative counts;
the AUC is ``sklearn.metrics.auc`` over those counts and the average precision uses
scikit-learn's formula (``sum((R_n - R_{n-1}) * P_n)``); the tests check both against
``roc_auc_score`` and ``average_precision_score``. The FROC has no scikit-learn
counterpart.

Probabilities are in [0, 1]; undefined numbers are None with a reason, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import auc as _sk_auc
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

__all__ = [
    "FROC_TARGETS",
    "FROCCurve",
    "FROCPoint",
    "PatchCounts",
    "PatchEvaluation",
    "SlideCounts",
    "SlideEvaluation",
    "evaluate_patches",
    "evaluate_slides",
    "froc_curve",
    "froc_score",
]

#: AvgFP values at which the FROC score averages the sensitivity (Camelyon16).
FROC_TARGETS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


# =========================================================================== slide level


class _Rates:
    """Rates of a 2 x 2 confusion matrix (``tp``, ``fp``, ``tn``, ``fn``); None where undefined."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def accuracy(self) -> float | None:
        n = self.tp + self.fp + self.tn + self.fn
        return (self.tp + self.tn) / n if n else None

    @property
    def sensitivity(self) -> float | None:
        """TP / (TP + FN); None without positives."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def specificity(self) -> float | None:
        """TN / (TN + FP); None without negatives."""
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else None

    @property
    def precision(self) -> float | None:
        """TP / (TP + FP); None when nothing is called positive."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None


@dataclass(frozen=True)
class SlideCounts(_Rates):
    """Slide-level results at one threshold (positive iff some patch has prob >= t)."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    predicted: np.ndarray = field(repr=False)  # bool, one per slide, in the cohort's order

    def to_dict(self) -> dict:
        return {
            "threshold": self.threshold, "tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn,
            "accuracy": self.accuracy, "sensitivity": self.sensitivity, "specificity": self.specificity,
        }


@dataclass(frozen=True)
class SlideEvaluation:
    """Slide-level evaluation: scores, ROC curve, AUC.

    Attributes:
        slides: slide names, in the cohort's order.
        is_tumor: bool ground truth per slide.
        scores: slide score = max patch probability; 0 for a slide without patches.
        n_patches: number of patch predictions per slide.
        auc: ROC-AUC over the slide scores, or None (see ``auc_reason``).
        fpr, tpr, roc_thresholds: scikit-learn's ROC curve (empty when the AUC is undefined);
            the first threshold is +inf (no slide positive).
    """

    slides: tuple[str, ...]
    is_tumor: np.ndarray
    scores: np.ndarray
    n_patches: np.ndarray
    auc: float | None
    auc_reason: str | None
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)
    roc_thresholds: np.ndarray = field(repr=False)

    def at_threshold(self, t: float) -> SlideCounts:
        """Return TP/FP/TN/FN of the slides at threshold ``t`` (a few microseconds per slide)."""
        predicted = (self.n_patches > 0) & (self.scores >= t)
        (tn, fp), (fn, tp) = confusion_matrix(self.is_tumor, predicted, labels=[False, True])
        return SlideCounts(float(t), int(tp), int(fp), int(tn), int(fn), predicted)


def evaluate_slides(slides: Sequence[str], is_tumor, scores, n_patches=None) -> SlideEvaluation:
    """Return the slide-level evaluation of given slide scores.

    Args:
        slides: names.
        is_tumor: ground truth (bool) per slide.
        scores: slide score (max patch probability, 0 without patches) per slide.
        n_patches: patches per slide; None: every slide has patches.
    """
    is_tumor = np.asarray(is_tumor, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_patches = np.ones(scores.shape, dtype=np.int64) if n_patches is None else np.asarray(n_patches, dtype=np.int64)
    n_t, n_n = int(is_tumor.sum()), int((~is_tumor).sum())
    empty = np.zeros(0)
    if n_t == 0 or n_n == 0:
        which = "tumor" if n_n == 0 else "normal"
        reason = f"slide AUC undefined: all {len(slides)} slides are {which} (it needs tumor and normal slides)"
        return SlideEvaluation(tuple(slides), is_tumor, scores, n_patches, None, reason, empty, empty, empty)
    fpr, tpr, thr = roc_curve(is_tumor, scores)
    value = float(roc_auc_score(is_tumor, scores))
    return SlideEvaluation(tuple(slides), is_tumor, scores, n_patches, value, None, fpr, tpr, thr)


# =========================================================================== patch level


@dataclass(frozen=True)
class PatchCounts(_Rates):
    """Patch-level confusion matrix at one threshold (positive iff prob >= t)."""

    threshold: float
    tn: int
    fp: int
    fn: int
    tp: int

    @property
    def confusion_matrix(self) -> list[list[int]]:
        """[[TN, FP], [FN, TP]]: rows truth (normal, tumor), columns prediction, as scikit-learn."""
        return [[self.tn, self.fp], [self.fn, self.tp]]


    def to_dict(self) -> dict:
        return {
            "threshold": self.threshold, "confusion_matrix": self.confusion_matrix,
            "tn": self.tn, "fp": self.fp, "fn": self.fn, "tp": self.tp,
            "accuracy": self.accuracy, "sensitivity": self.sensitivity,
            "specificity": self.specificity, "precision": self.precision,
        }


@dataclass(frozen=True)
class PatchEvaluation:
    """Patch-level evaluation from one sort: cumulative counts at every distinct probability.

    ``thresholds_asc`` are the distinct probabilities, ascending; ``tp_ge[i]`` /
    ``fp_ge[i]`` count the tumor / normal patches with prob >= ``thresholds_asc[i]``.
    """

    n_pos: int
    n_neg: int
    thresholds_asc: np.ndarray = field(repr=False)
    tp_ge: np.ndarray = field(repr=False)
    fp_ge: np.ndarray = field(repr=False)
    auc: float | None
    auc_reason: str | None
    average_precision: float | None
    average_precision_reason: str | None

    @property
    def n(self) -> int:
        return self.n_pos + self.n_neg

    def at_threshold(self, t: float) -> PatchCounts:
        """Return the confusion matrix at ``t`` (one binary search)."""
        i = int(np.searchsorted(self.thresholds_asc, t, side="left"))
        tp = int(self.tp_ge[i]) if i < self.tp_ge.size else 0
        fp = int(self.fp_ge[i]) if i < self.fp_ge.size else 0
        return PatchCounts(float(t), self.n_neg - fp, fp, self.n_pos - tp, tp)

    def roc_curve(self, drop_intermediate: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (fpr, tpr, thresholds), descending threshold, first threshold +inf.

        As ``sklearn.metrics.roc_curve``, including its dropping of collinear points.
        Empty arrays when the AUC is undefined.
        """
        if self.auc is None:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        fps = np.r_[0, self.fp_ge[::-1]]
        tps = np.r_[0, self.tp_ge[::-1]]
        thr = np.r_[np.inf, self.thresholds_asc[::-1]]
        if drop_intermediate and fps.size > 2:
            keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
            fps, tps, thr = fps[keep], tps[keep], thr[keep]
        return fps / self.n_neg, tps / self.n_pos, thr

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (precision, recall, thresholds) by descending threshold (no end point added).

        Empty arrays without tumor patches.
        """
        if self.n_pos == 0 or self.thresholds_asc.size == 0:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        tps, fps = self.tp_ge[::-1], self.fp_ge[::-1]
        return tps / (tps + fps), tps / self.n_pos, self.thresholds_asc[::-1].copy()


def evaluate_patches(prob, is_tumor) -> PatchEvaluation:
    """Return the patch-level evaluation of probabilities against inner-square labels.

    One sort of all probabilities (plus one of the tumor patches'), then cumulative counts.
    """
    prob = np.asarray(prob, dtype=np.float64).ravel()
    label = np.asarray(is_tumor, dtype=bool).ravel()
    if prob.shape != label.shape:
        raise ValueError("prob and is_tumor differ in length")
    n = prob.size
    n_pos = int(np.count_nonzero(label))
    n_neg = n - n_pos
    if n:
        ordered = np.sort(prob)
        first = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        thr = ordered[first]
        n_ge = n - first
        del ordered
        tp_ge = n_pos - np.searchsorted(np.sort(prob[label]), thr, side="left")
        fp_ge = n_ge - tp_ge
    else:
        thr = np.zeros(0)
        tp_ge = fp_ge = np.zeros(0, dtype=np.int64)
    auc_value = ap = None
    auc_reason = ap_reason = None
    if n == 0:
        auc_reason = ap_reason = "patch metrics undefined: no patch predictions"
    elif n_pos == 0:
        auc_reason = ap_reason = f"patch metrics undefined: none of the {n} patches is a tumor patch (inner-square rule)"
    elif n_neg == 0:
        auc_reason = f"patch AUC undefined: all {n} patches are tumor patches (inner-square rule)"
    if auc_reason is None:
        fpr = np.r_[0, fp_ge[::-1]] / n_neg
        tpr = np.r_[0, tp_ge[::-1]] / n_pos
        auc_value = float(_sk_auc(fpr, tpr))
    if ap_reason is None:
        tps, fps = tp_ge[::-1], fp_ge[::-1]
        recall = np.r_[0, tps] / n_pos
        ap = float(np.sum(np.diff(recall) * (tps / (tps + fps))))
    return PatchEvaluation(n_pos, n_neg, thr, tp_ge, fp_ge, auc_value, auc_reason, ap, ap_reason)


# =========================================================================== FROC


@dataclass(frozen=True)
class FROCPoint:
    """The FROC at one threshold."""

    threshold: float
    sensitivity: float | None
    avg_fp: float | None
    n_detected: int
    n_fp: int

    def to_dict(self) -> dict:
        return {
            "threshold": self.threshold, "sensitivity": self.sensitivity, "avg_fp": self.avg_fp,
            "n_detected": self.n_detected, "n_fp": self.n_fp,
        }


@dataclass(frozen=True)
class FROCCurve:
    """A FROC curve: one point per distinct probability, by descending threshold.

    Attributes:
        thresholds, sensitivity, avg_fp: the points (sensitivity NaN without tumors,
            avg_fp NaN without slides for the AvgFP).
        n_tumors: tumors in the sensitivity's denominator.
        n_fp_slides: slides in the AvgFP's denominator.
        tumor_scores: per tumor, the largest probability that hits it (-inf: never hit).
        tumor_slides: per tumor, its slide.
        fp_scores_sorted, tumor_scores_sorted: the false-positive probabilities and the
            finite tumor scores, ascending (what :meth:`at_threshold` searches).
        score: mean sensitivity at :data:`FROC_TARGETS`, or None (see ``score_reason``).
        target_sensitivity: sensitivity at each target AvgFP (empty when undefined).
    """

    thresholds: np.ndarray = field(repr=False)
    sensitivity: np.ndarray = field(repr=False)
    avg_fp: np.ndarray = field(repr=False)
    n_tumors: int
    n_fp_slides: int
    tumor_scores: np.ndarray = field(repr=False)
    tumor_slides: tuple[str, ...] = field(repr=False)
    fp_scores_sorted: np.ndarray = field(repr=False)
    tumor_scores_sorted: np.ndarray = field(repr=False)
    score: float | None
    score_reason: str | None
    target_sensitivity: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return int(self.thresholds.size)

    def at_threshold(self, t: float) -> FROCPoint:
        """Return sensitivity and AvgFP at ``t`` (two binary searches)."""
        detected = int(self.tumor_scores_sorted.size - np.searchsorted(self.tumor_scores_sorted, t, side="left"))
        n_fp = int(self.fp_scores_sorted.size - np.searchsorted(self.fp_scores_sorted, t, side="left"))
        sens = detected / self.n_tumors if self.n_tumors else None
        avg = n_fp / self.n_fp_slides if self.n_fp_slides else None
        return FROCPoint(float(t), sens, avg, detected, n_fp)

    def points(self) -> list[dict]:
        """Return the curve as ``[{threshold, sensitivity, avg_fp}, ...]`` (JSON-ready)."""
        sens = [None if math.isnan(v) else v for v in self.sensitivity.tolist()]
        avg = [None if math.isnan(v) else v for v in self.avg_fp.tolist()]
        return [{"threshold": t, "sensitivity": s, "avg_fp": a} for t, s, a in zip(self.thresholds.tolist(), sens, avg)]


def froc_score(avg_fp, sensitivity, targets: Sequence[float] = FROC_TARGETS) -> tuple[float, np.ndarray]:
    """Return the FROC score and the sensitivity at each target AvgFP.

    ``avg_fp`` and ``sensitivity`` are a curve by descending threshold (both non-decreasing).
    As the official Camelyon16 script: ``np.interp(target, [0, *avg_fp], [0, *sensitivity])``
    -- linear from (0, 0) below the curve's first AvgFP, the last sensitivity beyond its last
    AvgFP, the highest sensitivity where points share an AvgFP.
    """
    xs = np.r_[0.0, np.asarray(avg_fp, dtype=np.float64)]
    ys = np.r_[0.0, np.asarray(sensitivity, dtype=np.float64)]
    at = np.interp(np.asarray(targets, dtype=np.float64), xs, ys)
    return float(np.mean(at)), at


def froc_curve(
    tumor_scores,
    fp_scores,
    n_fp_slides: int,
    *,
    tumor_slides: Sequence[str] | None = None,
    fp_slides_kind: str = "normal slides",
) -> FROCCurve:
    """Return the FROC curve of per-tumor scores and false-positive probabilities.

    Args:
        tumor_scores: per tumor, the largest probability of what hits it; -inf or NaN for
            a tumor nothing hits (it counts in the denominator, never as detected).
        fp_scores: probability of every false positive (patch mode: every patch of a normal
            slide; Camelyon16: every false-positive detection).
        n_fp_slides: the AvgFP's denominator (normal slides; Camelyon16: all slides).
        tumor_slides: slide of each tumor (for tables), optional.
        fp_slides_kind: what the denominator counts, for the reason of an undefined score.
    """
    scores = np.asarray(tumor_scores, dtype=np.float64).ravel()
    scores = np.where(np.isnan(scores), -np.inf, scores)
    fp_sorted = np.sort(np.asarray(fp_scores, dtype=np.float64).ravel())
    n_tumors = int(scores.size)
    hit_sorted = np.sort(scores[np.isfinite(scores)])
    # Distinct probabilities: those of the false positives (sorted: O(n)), plus tumor scores.
    if fp_sorted.size:
        fp_unique = fp_sorted[np.r_[True, fp_sorted[1:] != fp_sorted[:-1]]]
    else:
        fp_unique = fp_sorted
    tu = np.unique(hit_sorted)
    at = np.searchsorted(fp_unique, tu)
    present = (at < fp_unique.size) & (fp_unique[np.minimum(at, max(fp_unique.size - 1, 0))] == tu) if fp_unique.size else np.zeros(tu.size, bool)
    thr_asc = np.insert(fp_unique, at[~present], tu[~present])
    tp_ge = hit_sorted.size - np.searchsorted(hit_sorted, thr_asc, side="left")
    fp_ge = fp_sorted.size - np.searchsorted(fp_sorted, thr_asc, side="left")
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = tp_ge[::-1] / n_tumors if n_tumors else np.full(thr_asc.size, np.nan)
        avg = fp_ge[::-1] / n_fp_slides if n_fp_slides else np.full(thr_asc.size, np.nan)
    reason = None
    if n_tumors == 0:
        reason = "FROC undefined: there are no tumors to detect"
    elif n_fp_slides == 0:
        reason = f"FROC undefined: AvgFP needs {fp_slides_kind}, and there are none"
    score, target = (None, np.zeros(0)) if reason else froc_score(avg, sens)
    slides = tuple(tumor_slides) if tumor_slides is not None else ("",) * n_tumors
    return FROCCurve(
        thresholds=thr_asc[::-1].copy(), sensitivity=np.asarray(sens, dtype=np.float64), avg_fp=np.asarray(avg, dtype=np.float64),
        n_tumors=n_tumors, n_fp_slides=int(n_fp_slides), tumor_scores=scores, tumor_slides=slides,
        fp_scores_sorted=fp_sorted, tumor_scores_sorted=hit_sorted, score=score, score_reason=reason, target_sensitivity=target,
    )
