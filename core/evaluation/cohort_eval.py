"""Evaluate a cohort's patch predictions at every threshold: the three questions of the source material.

1. **Slide level** -- *can we detect cancer somewhere in the slide?* The slide score is the
   largest patch probability; a slide is predicted positive at ``t`` iff some patch has
   ``F(I) >= t``. A slide with no patch predictions at all (no tissue) has slide score 0
   and is never predicted positive.
2. **Patch level** -- *can we detect cancer in patches?* Patch labels by the inner-square
   rule (:func:`core.tiling.inner_square_hits`); ROC-AUC, precision-recall curve, average
   precision, confusion matrix at ``t``.
3. **FROC** -- *do we detect the individual tumors?* By one of :data:`MODES`, each a module:
   :mod:`core.evaluation.patch_mode` (the source material's) or
   :mod:`core.evaluation.camelyon16` (the official challenge's). Slide- and patch-level
   numbers are the same in both modes.

**Points and score of the FROC.** The curve has one point per distinct probability that
enters it (a false-positive probability or a tumor score), by descending threshold; the
official script's dropping of its smallest threshold is not copied. The FROC score is the
mean sensitivity at AvgFP 1/4, 1/2, 1, 2, 4, 8 (:func:`core.evaluation.metrics.froc_score`).

**Undefined numbers** are ``None`` with a reason (``*_reason``), never a crash or a NaN:
an AUC with one class only, a FROC without tumors or without slides for the AvgFP.

Coordinates are level-0 pixels throughout; probabilities are in [0, 1].
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from shapely.geometry.base import BaseGeometry

from core.cohort import Cohort
from core.errors import EvaluationError, EvaluationWarning
from core.evaluation.camelyon16 import CAMELYON16_MPP, Camelyon16Mode, Camelyon16PolygonMode, CamelyonDetails, resolve_mpp
from core.evaluation.metrics import (
    FROC_TARGETS,
    FROCCurve,
    PatchCounts,
    PatchEvaluation,
    SlideCounts,
    SlideEvaluation,
    FROCPoint,
    evaluate_patches,
    evaluate_slides,
    froc_curve,
)
from core.evaluation.patch_mode import PatchMode, SlidePatches, patch_tumor_hits
from core.tiling import DEFAULT_INNER_FRACTION

__all__ = ["MODES", "CohortEvaluation", "ThresholdReport", "evaluate_cohort"]

#: Evaluation modes: the source material's FROC, or the official Camelyon16 one.
MODES = ("patch", "camelyon16", "camelyon16-polygons")
#: A slide's own resolution differing from the one Camelyon16 mode uses by more than this
#: (relative) is worth a warning: the dilation and the ITC size are set in microns.
MPP_WARNING_RATIO = 0.10


def _names(names: Sequence[str], limit: int = 5) -> str:
    """Return 'a, b, c (and 4 more)'."""
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


@dataclass(frozen=True)
class ThresholdReport:
    """Everything that depends on the threshold, at one ``t``."""

    threshold: float
    slide: SlideCounts
    patch: PatchCounts
    froc: FROCPoint

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "slide": self.slide.to_dict(), "patch": self.patch.to_dict(), "froc": self.froc.to_dict()}


@dataclass(frozen=True)
class CohortEvaluation:
    """The evaluation of one cohort, computed once; :meth:`at_threshold` is cheap.

    Attributes:
        mode: "patch" or "camelyon16".
        inner_fraction: the inner-square fraction of the patch labels.
        slide, patch, froc: the three levels.
        slide_n_tumors: tumors per slide (Camelyon16: non-ITC regions), cohort order.
        patch_slides: slides whose patches enter the patch level and the FROC (tumor slides
            without annotations do not).
        warnings: what was worked around, in words.
        camelyon: details of Camelyon16 mode, else None.
    """

    mode: str
    inner_fraction: float
    slide: SlideEvaluation
    patch: PatchEvaluation
    froc: FROCCurve
    slide_n_tumors: np.ndarray = field(repr=False)
    patch_slides: tuple[str, ...] = field(repr=False)
    warnings: tuple[str, ...] = ()
    camelyon: CamelyonDetails | None = None

    @property
    def slide_auc(self) -> float | None:
        return self.slide.auc

    @property
    def patch_auc(self) -> float | None:
        return self.patch.auc

    @property
    def froc_score(self) -> float | None:
        return self.froc.score

    @property
    def n_tumors(self) -> int:
        return self.froc.n_tumors

    def at_threshold(self, t: float) -> ThresholdReport:
        """Return the slide counts, patch confusion matrix and FROC point at ``t``.

        Binary searches on arrays sorted once: microseconds for the patches and FROC,
        and a confusion matrix over the slides.
        """
        return ThresholdReport(float(t), self.slide.at_threshold(t), self.patch.at_threshold(t), self.froc.at_threshold(t))

    def slide_table(self, t: float) -> list[dict]:
        """Return one row per slide: name, label, score, patches, tumors, detected tumors, prediction at ``t``."""
        predicted = self.slide.at_threshold(t).predicted
        detected: dict[str, int] = {}
        for slide, score in zip(self.froc.tumor_slides, self.froc.tumor_scores.tolist()):
            detected[slide] = detected.get(slide, 0) + (score >= t)
        return [
            {
                "slide": s, "label": "tumor" if lab else "normal", "score": float(sc), "n_patches": int(n),
                "n_tumors": int(nt), "n_detected": detected.get(s, 0), "predicted": "tumor" if pr else "normal",
            }
            for s, lab, sc, n, nt, pr in zip(
                self.slide.slides, self.slide.is_tumor.tolist(), self.slide.scores, self.slide.n_patches,
                self.slide_n_tumors, predicted.tolist(),
            )
        ]

    def to_dict(self, threshold: float = 0.5, *, curves: bool = True) -> dict:
        """Return the evaluation as JSON-ready data (None for undefined numbers).

        Args:
            threshold: the ``t`` of the ``at_threshold`` part.
            curves: include the FROC points (one per distinct probability: can be millions),
                the slide and patch ROC curves.
        """
        report = self.at_threshold(threshold)
        is_tumor = self.slide.is_tumor
        data: dict[str, Any] = {
            "mode": self.mode,
            "threshold": float(threshold),
            "inner_fraction": self.inner_fraction,
            "n_slides": len(self.slide.slides),
            "n_tumor_slides": int(is_tumor.sum()),
            "n_normal_slides": int((~is_tumor).sum()),
            "n_patches": self.patch.n,
            "n_tumor_patches": self.patch.n_pos,
            "slide_auc": self.slide.auc,
            "slide_auc_reason": self.slide.auc_reason,
            "patch_auc": self.patch.auc,
            "patch_auc_reason": self.patch.auc_reason,
            "patch_average_precision": self.patch.average_precision,
            "patch_average_precision_reason": self.patch.average_precision_reason,
            "froc_score": self.froc.score,
            "froc_score_reason": self.froc.score_reason,
            "n_tumors": self.froc.n_tumors,
            "froc_avg_fp_denominator": self.froc.n_fp_slides,
            "froc_targets": [
                {"avg_fp": a, "sensitivity": float(s)} for a, s in zip(FROC_TARGETS, self.froc.target_sensitivity.tolist())
            ],
            "at_threshold": report.to_dict(),
            "slides": self.slide_table(threshold),
            "warnings": list(self.warnings),
        }
        if self.camelyon is not None:
            data["camelyon16"] = self.camelyon.to_dict()
        if curves:
            data["froc"] = self.froc.points()
            data["slide_roc"] = _roc_dict(self.slide.fpr, self.slide.tpr, self.slide.roc_thresholds)
            data["patch_roc"] = _roc_dict(*self.patch.roc_curve(drop_intermediate=True))
        return data

    def summary(self, threshold: float = 0.5) -> str:
        """Return a short human summary (a few lines)."""
        r = self.at_threshold(threshold)
        s, p, f = r.slide, r.patch, r.froc
        is_tumor = self.slide.is_tumor
        mode = {
            "camelyon16": "Camelyon16 mode (the official evaluation)",
            "camelyon16-polygons": "Camelyon16 rules on exact polygons (not official)",
        }.get(self.mode, "patch mode")
        lines = [
            f"evaluation, {mode}: {len(is_tumor)} slides ({int(is_tumor.sum())} tumor, {int((~is_tumor).sum())} normal), "
            f"{self.patch.n} patches ({self.patch.n_pos} tumor), {self.froc.n_tumors} tumors"
            + (f" (+{self.camelyon.n_itc} isolated tumor cell regions ignored)" if self.camelyon else ""),
            f"slide level: AUC {_fmt(self.slide.auc, self.slide.auc_reason)}; at t={threshold:g}: "
            f"TP {s.tp} FP {s.fp} TN {s.tn} FN {s.fn}, accuracy {_fmt(s.accuracy)}, "
            f"sensitivity {_fmt(s.sensitivity)}, specificity {_fmt(s.specificity)}",
            f"patch level: ROC-AUC {_fmt(self.patch.auc, self.patch.auc_reason)}, average precision "
            f"{_fmt(self.patch.average_precision)}; at t={threshold:g}: TN {p.tn} FP {p.fp} FN {p.fn} TP {p.tp}",
            f"FROC: score {_fmt(self.froc.score, self.froc.score_reason)} ({len(self.froc)} points); at t={threshold:g}: "
            f"sensitivity {_fmt(f.sensitivity)}, AvgFP {_fmt(f.avg_fp)}",
        ]
        return "\n".join(lines)


def _fmt(value: float | None, reason: str | None = None) -> str:
    if value is None:
        return f"undefined ({reason.split(': ', 1)[-1]})" if reason else "undefined"
    return f"{value:.4f}"


def _roc_dict(fpr, tpr, thresholds) -> dict:
    thr = [None if not math.isfinite(v) else v for v in np.asarray(thresholds, dtype=np.float64).tolist()]
    return {"fpr": np.asarray(fpr).tolist(), "tpr": np.asarray(tpr).tolist(), "thresholds": thr}


def _warn(collected: list[str], message: str) -> None:
    collected.append(message)
    warnings.warn(message, EvaluationWarning, stacklevel=3)


def evaluate_cohort(
    predictions: Mapping[str, Any],
    cohort: Cohort | Mapping[str, str | bool],
    tumors: Mapping[str, Sequence[BaseGeometry]] | None = None,
    *,
    inner_fraction: float = DEFAULT_INNER_FRACTION,
    mode: str = "patch",
    mpp: float | Mapping[str, float | None] | None = None,
    nms_radius_um: float | None = None,
    allow_missing: bool = False,
    dimensions: Mapping[str, tuple[int, int]] | None = None,
) -> CohortEvaluation:
    """Evaluate patch predictions of a cohort at every threshold; return the result.

    Args:
        predictions: slide name -> object with arrays ``x, y, width, height, prob``
            (level-0 px; e.g. :class:`core.store.PatchPredictions`).
        cohort: a :class:`Cohort` or ``{slide: "tumor" | "normal"}``; only these slides
            are evaluated.
        tumors: slide -> tumor polygons in level-0 px (one per connected tumor, as
            :func:`core.annotations.load_tumors` gives); a slide not in it has none.
        inner_fraction: side of the inner square, as a fraction of the patch side.
        mode: "patch" (the source material's FROC), "camelyon16" (the official challenge
            evaluation, number for number) or "camelyon16-polygons" (its rules on exact
            polygons; not official).
        mpp: microns per level-0 pixel, Camelyon16 modes only: one value for all slides or
            slide -> value. None: "camelyon16" uses the official 0.243 for every slide (a
            slide whose own mpp, the cohort's column, differs by more than 10% gets a
            warning); "camelyon16-polygons" the cohort's ``mpp`` column.
        nms_radius_um: Camelyon16 NMS radius in um; None: 1.5 patch sides.
        dimensions: slide -> level-0 (width, height), so "camelyon16" clips its level-5
            mask at the slide's edge as the official mask is (None: unclipped).
        allow_missing: a cohort slide without a predictions entry is evaluated as a slide
            without tissue (score 0, its tumors missed) instead of raising.

    Raises:
        EvaluationError: a cohort slide has no predictions (unless ``allow_missing``), a
            normal slide has tumor annotations, bad probabilities or array lengths, an
            unknown mode, or Camelyon16 mode without the mpp of some slide.

    Warnings (:class:`EvaluationWarning`, also listed in ``.warnings``): predictions of
    slides not in the cohort (ignored), missing slides under ``allow_missing``, tumor slides
    without tumor annotations (kept at slide level only).
    """
    if mode not in MODES:
        raise EvaluationError(f"unknown evaluation mode {mode!r}; expected one of {', '.join(MODES)}")
    if not 0 < inner_fraction <= 1:
        raise EvaluationError(f"inner_fraction must be in (0, 1], got {inner_fraction}")
    if not isinstance(cohort, Cohort):
        cohort = Cohort.from_labels(cohort)
    if len(cohort) == 0:
        raise EvaluationError("the cohort has no slides")
    tumors = tumors or {}
    notes: list[str] = []

    missing = [s for s in cohort.slides if s not in predictions]
    if missing and not allow_missing:
        raise EvaluationError(
            f"{len(missing)} cohort slide(s) have no predictions: {_names(missing)} "
            "(predict them, or allow missing slides to count them as slides without tissue)"
        )
    if missing:
        _warn(notes, f"{len(missing)} cohort slide(s) have no predictions and count as slides without tissue (score 0): {_names(missing)}")
    extra = [s for s in predictions if s not in set(cohort.slides)]
    if extra:
        _warn(notes, f"ignored the predictions of {len(extra)} slide(s) not in the cohort: {_names(sorted(extra))}")
    is_tumor = cohort.is_tumor
    for slide, tumor_slide in zip(cohort.slides, is_tumor.tolist()):
        if not tumor_slide and len(tumors.get(slide, ())) > 0:
            raise EvaluationError(
                f"slide {slide!r} is 'normal' in the cohort but its annotations hold {len(tumors[slide])} tumor(s)"
            )
    unannotated = [s for s, t in zip(cohort.slides, is_tumor.tolist()) if t and len(tumors.get(s, ())) == 0]
    if unannotated:
        _warn(
            notes,
            f"{len(unannotated)} tumor slide(s) have no tumor annotations; they count at slide level only "
            f"(not in patch level or FROC): {_names(unannotated)}",
        )
    unannotated_set = set(unannotated)

    rule: PatchMode | Camelyon16Mode | Camelyon16PolygonMode
    if mode == "camelyon16":
        used = resolve_mpp(cohort.slides, (CAMELYON16_MPP,) * len(cohort), mpp)
        differ = [
            f"{s} ({own:g} vs {used[s]:g})" for s, own in zip(cohort.slides, cohort.mpp)
            if own is not None and abs(own - used[s]) > MPP_WARNING_RATIO * used[s]
        ]
        if differ:
            _warn(notes, f"Camelyon16 mode measures in microns at {', '.join(sorted({f'{v:g}' for v in used.values()}))} um/px, "
                         f"but {len(differ)} slide(s) have another resolution: {_names(differ)}")
        rule = Camelyon16Mode(used, nms_radius_um, dimensions)
    elif mode == "camelyon16-polygons":
        rule = Camelyon16PolygonMode(resolve_mpp(cohort.slides, cohort.mpp, mpp), nms_radius_um)
    else:
        rule = PatchMode()

    empty_i = np.zeros(0, dtype=np.int64)
    empty_f = np.zeros(0, dtype=np.float64)
    scores, n_patches, n_tumors_per_slide = [], [], []
    patch_probs, patch_labels, patch_slides = [], [], []
    tumor_scores, tumor_slides, fp_scores = [], [], []
    froc_only: list[str] = []  # slides in the FROC but not at patch level (official mode: unannotated tumor slides)
    for slide, tumor_slide in zip(cohort.slides, is_tumor.tolist()):
        pred = predictions.get(slide)
        if pred is None:
            x = y = w = h = empty_i
            prob = empty_f
        else:
            x, y, w, h, prob = _arrays(pred, slide)
        n = prob.size
        n_patches.append(n)
        scores.append(float(prob.max()) if n else 0.0)  # no tissue: score 0
        if slide in unannotated_set:
            n_tumors_per_slide.append(0)
            if isinstance(rule, Camelyon16Mode):
                # The official script scores a tumor slide without a mask as a normal slide.
                part = rule.score_slide(SlidePatches(slide, True, x, y, w, h, prob, [], empty_i, empty_i))
                fp_scores.append(part.fp_scores)
                froc_only.append(slide)
            continue
        slide_tumors = list(tumors.get(slide, ()))
        patch_slides.append(slide)
        hit_patch, hit_tumor = patch_tumor_hits(x, y, w, h, slide_tumors, inner_fraction)
        label = np.zeros(n, dtype=bool)
        label[hit_patch] = True
        patch_probs.append(prob)
        patch_labels.append(label)
        part = rule.score_slide(SlidePatches(slide, tumor_slide, x, y, w, h, prob, slide_tumors, hit_patch, hit_tumor))
        tumor_scores.append(part.tumor_scores)
        tumor_slides += [slide] * part.n_tumors
        fp_scores.append(part.fp_scores)
        n_tumors_per_slide.append(part.n_tumors)

    slide_eval = evaluate_slides(cohort.slides, is_tumor, scores, n_patches)
    patch_eval = evaluate_patches(
        np.concatenate(patch_probs) if patch_probs else empty_f,
        np.concatenate(patch_labels) if patch_labels else np.zeros(0, dtype=bool),
    )
    all_tumor_scores = np.concatenate(tumor_scores) if tumor_scores else empty_f
    all_fp_scores = np.concatenate(fp_scores) if fp_scores else empty_f
    n_fp_slides = rule.n_fp_slides(is_tumor, patch_slides + froc_only)
    if isinstance(rule, Camelyon16Mode):
        froc = rule.froc(all_tumor_scores, all_fp_scores, n_fp_slides, tumor_slides=tumor_slides)
    else:
        froc = froc_curve(all_tumor_scores, all_fp_scores, n_fp_slides, tumor_slides=tumor_slides, fp_slides_kind=rule.fp_slides_kind)
    details = rule.details()
    return CohortEvaluation(
        mode, float(inner_fraction), slide_eval, patch_eval, froc, np.asarray(n_tumors_per_slide, dtype=np.int64),
        tuple(patch_slides), tuple(notes), details,
    )




def _arrays(pred: Any, slide: str) -> tuple[np.ndarray, ...]:
    try:
        x, y, w, h = (np.asarray(getattr(pred, name)) for name in ("x", "y", "width", "height"))
        prob = np.asarray(pred.prob, dtype=np.float64)
    except AttributeError as exc:
        raise EvaluationError(f"slide {slide!r}: predictions need arrays x, y, width, height, prob ({exc})") from None
    n = prob.size
    if not (x.shape == y.shape == w.shape == h.shape == prob.shape) or prob.ndim != 1:
        raise EvaluationError(f"slide {slide!r}: predictions arrays x, y, width, height, prob differ in length")
    if n and not (prob.min() >= 0 and prob.max() <= 1):  # NaN fails both comparisons
        raise EvaluationError(f"slide {slide!r}: probabilities must be in [0, 1] (NaN found or out of range)")
    return x, y, w, h, prob
