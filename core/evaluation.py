"""Evaluation of patch predictions against tumor annotations: slide level, patch level, FROC.

The three questions of the source material, each answered for every threshold ``t`` at once
(curves) and cheaply for one ``t`` (the threshold page moves ``t`` without recomputing):

1. **Slide level** -- *can we detect cancer somewhere in the slide?* The slide score is the
   largest patch probability; a slide is predicted positive at ``t`` iff some patch has
   ``F(I) >= t``. ROC curve and AUC over the slide scores (scikit-learn), and accuracy,
   sensitivity, specificity at ``t``. A slide with no patch predictions at all (no tissue)
   has slide score 0 and is never predicted positive.
2. **Patch level** -- *can we detect cancer in patches?* Patch labels by the inner-square
   rule (:func:`core.tiling.inner_square_hits`); ROC-AUC, precision-recall curve, average
   precision, confusion matrix at ``t``.
3. **FROC** -- *do we detect the individual tumors?* For each threshold, sensitivity = the
   share of all tumors (connected annotated regions, over all slides) holding at least one
   patch with ``F(I) >= t`` (a patch is in a tumor iff its inner square intersects it), and
   AvgFP = the mean over normal slides of the number of patches with ``F(I) >= t``. A
   tumor's *score* is therefore the largest probability of the patches hitting it, and it
   is detected at ``t`` iff its score ``>= t``.

**Camelyon16 mode** (``mode="camelyon16"``) replaces the FROC by the one of the official
challenge evaluation: detections by non-maximum suppression, tumors dilated by 75 um,
isolated tumor cells ignored, every detection outside a tumor a false positive, AvgFP over
all slides (see :mod:`core.camelyon`). Slide- and patch-level numbers are the same in both
modes.

**Points and score of the FROC.** The curve has one point per distinct probability that
enters it (a normal-slide patch probability or a tumor score; in Camelyon16 mode a
false-positive detection or a tumor score, as the official ``computeFROC`` takes
``set(FPs + TPs)``), by descending threshold; the official script's dropping of its
smallest threshold is not copied. The FROC score is the mean sensitivity at AvgFP 1/4, 1/2,
1, 2, 4, 8, by ``np.interp`` along the curve exactly as the official script does, with
its anchor point (AvgFP 0, sensitivity 0) for a threshold above every probability:

* below the smallest AvgFP the curve reaches, sensitivity is interpolated linearly from
  (0, 0) to the curve's first point;
* above the largest AvgFP it reaches (its lowest threshold), sensitivity stays at the
  curve's last value (``np.interp`` holds the end value);
* where several points share one AvgFP, ``np.interp`` takes the last of them: the highest
  sensitivity reached at that AvgFP.

**What is computed by hand and why.** Slide ROC/AUC and slide confusion matrices use
scikit-learn's ``roc_curve``, ``roc_auc_score`` and ``confusion_matrix``. For patches
(millions of rows) each of scikit-learn's ``roc_curve``, ``roc_auc_score``,
``precision_recall_curve`` and ``average_precision_score`` sorts the data again (about 2 s
each for 5 M rows here), so the patch curves come from one sort and cumulative counts;
the AUC is ``sklearn.metrics.auc`` over those counts and the average precision uses
scikit-learn's formula (``sum((R_n - R_{n-1}) * P_n)``); the tests check both against
``roc_auc_score`` and ``average_precision_score``. FROC and Camelyon16 mode have no
scikit-learn counterpart.

**Undefined numbers** are ``None`` with a reason (``*_reason``), never a crash or a NaN:
an AUC with one class only, a FROC without tumors or without slides for the AvgFP.

Coordinates are level-0 pixels throughout; probabilities are in [0, 1].
"""

from __future__ import annotations

import csv
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from shapely.geometry.base import BaseGeometry
from sklearn.metrics import auc as _sk_auc
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from core.camelyon import (
    DILATION_UM,
    ITC_MAJOR_AXIS_UM,
    EvaluationRegions,
    evaluation_regions,
    major_axis_length,
    nms_detections,
)
from core.errors import EvaluationError, EvaluationWarning
from core.tiling import DEFAULT_INNER_FRACTION, inner_square_hits, inner_squares

__all__ = [
    "FROC_TARGETS",
    "MODES",
    "CamelyonDetails",
    "Cohort",
    "CohortEvaluation",
    "EvaluationError",
    "EvaluationRegions",
    "EvaluationWarning",
    "FROCCurve",
    "FROCPoint",
    "PatchCounts",
    "PatchEvaluation",
    "SlideCounts",
    "SlideEvaluation",
    "ThresholdReport",
    "evaluate_cohort",
    "evaluate_patches",
    "evaluate_slides",
    "evaluation_regions",
    "find_annotation_file",
    "froc_curve",
    "froc_score",
    "load_cohort_tumors",
    "major_axis_length",
    "nms_detections",
    "patch_tumor_hits",
    "read_cohort",
    "read_predictions_csv",
]

log = logging.getLogger(__name__)

#: AvgFP values at which the FROC score averages the sensitivity (Camelyon16).
FROC_TARGETS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: Evaluation modes: the source material's FROC, or the official Camelyon16 one.
MODES = ("patch", "camelyon16")
#: Default NMS radius in Camelyon16 mode, in patch sides: the 8 grid neighbours of a
#: detection (centres 1 and sqrt(2) sides away) are suppressed.
NMS_RADIUS_PATCH_SIDES = 1.5

PREDICTIONS_HEADER = ("slide", "x", "y", "width", "height", "prob")
ANNOTATION_SUFFIXES = (".geojson", ".geojson.gz", ".json", ".xml")
_LABELS = {"tumor": True, "tumour": True, "normal": False}




# =========================================================================== inputs


@dataclass(frozen=True)
class Cohort:
    """The slides to evaluate and their ground truth.

    Attributes:
        slides: slide names (file stems), unique, in file order.
        labels: "tumor" or "normal", one per slide.
        splits: the split of each slide ("train", "val", "test"), or None when not given.
        mpp: microns per level-0 pixel of each slide, or None when not given.
    """

    slides: tuple[str, ...]
    labels: tuple[str, ...]
    splits: tuple[str | None, ...] = ()
    mpp: tuple[float | None, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.slides)
        if not self.splits:
            object.__setattr__(self, "splits", (None,) * n)
        if not self.mpp:
            object.__setattr__(self, "mpp", (None,) * n)
        if not (len(self.labels) == len(self.splits) == len(self.mpp) == n):
            raise EvaluationError("cohort columns have different lengths")
        if len(set(self.slides)) != n:
            dup = sorted({s for s in self.slides if self.slides.count(s) > 1})
            raise EvaluationError(f"cohort lists slides more than once: {_names(dup)}")
        bad = [lab for lab in self.labels if lab not in ("tumor", "normal")]
        if bad:
            raise EvaluationError(f"cohort labels must be 'tumor' or 'normal', got {bad[0]!r}")

    def __len__(self) -> int:
        return len(self.slides)

    @property
    def is_tumor(self) -> np.ndarray:
        """Boolean array: True for tumor slides."""
        return np.array([lab == "tumor" for lab in self.labels], dtype=bool)

    @classmethod
    def from_labels(cls, labels: Mapping[str, str | bool]) -> Cohort:
        """Return a cohort from ``{slide: "tumor" | "normal" | True | False}``."""
        names = tuple(str(s) for s in labels)
        return cls(names, tuple(_parse_label(v, s) for s, v in labels.items()))

    def select(self, split: str) -> Cohort:
        """Return the slides of one split."""
        keep = [i for i, s in enumerate(self.splits) if s == split]
        if not keep:
            known = sorted({s for s in self.splits if s is not None})
            raise EvaluationError(f"no slide of the cohort is in split {split!r} (splits: {', '.join(known) or 'none given'})")
        pick = lambda seq: tuple(seq[i] for i in keep)  # noqa: E731
        return Cohort(pick(self.slides), pick(self.labels), pick(self.splits), pick(self.mpp))


def _parse_label(value: Any, slide: str) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "tumor" if value else "normal"
    key = str(value).strip().lower()
    if key not in _LABELS:
        raise EvaluationError(f"slide {slide!r}: label must be 'tumor' or 'normal', got {value!r}")
    return "tumor" if _LABELS[key] else "normal"


def _names(names: Sequence[str], limit: int = 5) -> str:
    """Return 'a, b, c (and 4 more)'."""
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def read_cohort(path: str | os.PathLike) -> Cohort:
    """Return the cohort of a ``cohort.csv``: columns ``slide,label[,split][,mpp]``.

    ``label`` is "tumor" or "normal" (case ignored; "tumour" accepted); ``mpp`` (microns
    per level-0 pixel) may be empty for a slide.

    Raises:
        EvaluationError: the file is missing, lacks a column, repeats a slide, or holds a
            bad label or mpp.
    """
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise EvaluationError(f"cohort file not found: {p}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvaluationError(f"cannot read cohort file {p}: {exc}") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise EvaluationError(f"{p}: the cohort file is empty")
    header = [h.strip().lower() for h in rows[0]]
    for column in ("slide", "label"):
        if column not in header:
            raise EvaluationError(f"{p}: the cohort needs columns slide,label[,split][,mpp]; header is {','.join(rows[0])!r}")
    col = {name: header.index(name) for name in ("slide", "label", "split", "mpp") if name in header}
    slides, labels, splits, mpps = [], [], [], []
    for line, row in enumerate(rows[1:], start=2):
        row = row + [""] * (len(header) - len(row))
        slide = row[col["slide"]].strip()
        if not slide:
            raise EvaluationError(f"{p}, line {line}: empty slide name")
        slides.append(slide)
        labels.append(_parse_label(row[col["label"]], slide))
        splits.append((row[col["split"]].strip() or None) if "split" in col else None)
        mpps.append(_parse_mpp(row[col["mpp"]], p, line) if "mpp" in col else None)
    if not slides:
        raise EvaluationError(f"{p}: the cohort lists no slides")
    return Cohort(tuple(slides), tuple(labels), tuple(splits), tuple(mpps))


def _parse_mpp(text: str, p: Path, line: int) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise EvaluationError(f"{p}, line {line}: mpp is not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise EvaluationError(f"{p}, line {line}: mpp must be a positive number, got {text!r}")
    return value


def read_predictions_csv(path: str | os.PathLike) -> dict:
    """Return slide name -> :class:`core.store.PatchPredictions` from a patch predictions CSV.

    The header must be exactly ``slide,x,y,width,height,prob``; x, y, width, height are
    whole level-0 pixels (x, y >= 0 the top-left corner, width, height > 0), prob in [0, 1].
    Each slide's rows come back sorted by (y, x).

    Raises:
        EvaluationError: missing file, other header, a bad value, or a patch given twice.
    """
    import pandas as pd

    from core.store import PatchPredictions

    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as handle:
            first = handle.readline()
    except FileNotFoundError:
        raise EvaluationError(f"predictions file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"cannot read predictions file {p}: {exc}") from None
    header = tuple(h.strip() for h in next(csv.reader([first]), []))
    if header != PREDICTIONS_HEADER:
        raise EvaluationError(f"{p}: the header must be {','.join(PREDICTIONS_HEADER)!r}, got {first.strip()!r}")
    try:
        frame = pd.read_csv(p, engine="pyarrow", dtype={"slide": str}, encoding="utf-8")
    except ImportError:  # pyarrow absent: pandas' own parser (slower, same result)
        frame = pd.read_csv(p, dtype={"slide": str}, encoding="utf-8")
    except Exception as exc:  # noqa: BLE001 -- pandas/pyarrow parse errors share no base class
        raise EvaluationError(f"{p}: not a valid predictions CSV ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if len(frame) == 0:
        return {}
    if frame["slide"].isna().any():
        raise EvaluationError(f"{p}: a row has no slide name")
    columns = {}
    for name in ("x", "y", "width", "height"):
        columns[name] = _whole_pixels(frame[name].to_numpy(), name, p)
    prob = pd.to_numeric(frame["prob"], errors="coerce").to_numpy(dtype=np.float64)
    if not (prob.min() >= 0 and prob.max() <= 1):  # also catches NaN (failed parses)
        raise EvaluationError(f"{p}: prob must be numbers in [0, 1] (min {prob.min()}, max {prob.max()}, or a non-number)")
    x, y = columns["x"], columns["y"]
    if x.min() < 0 or y.min() < 0:
        raise EvaluationError(f"{p}: x and y must be >= 0 (level-0 pixels)")
    if columns["width"].min() <= 0 or columns["height"].min() <= 0:
        raise EvaluationError(f"{p}: width and height must be > 0 (level-0 pixels)")
    codes, names = pd.factorize(frame["slide"].str.strip(), sort=False)
    codes = codes.astype(np.int64)
    # Sort by (slide, y, x) through one int64 key when it fits, and find duplicates in it.
    span = int(max(x.max(), y.max())) + 1
    if len(names) * span * span < 2**62:
        key = (codes * span + y) * span + x
        steps = np.diff(key)
        if np.all(steps > 0):  # already in order (the store writes CSVs this way)
            order = None
        else:
            order = np.argsort(key, kind="stable")
            steps = np.diff(key[order])
        dup = np.flatnonzero(steps == 0)
    else:
        order = np.lexsort((x, y, codes))
        k = (codes[order], y[order], x[order])
        dup = np.flatnonzero((k[0][1:] == k[0][:-1]) & (k[1][1:] == k[1][:-1]) & (k[2][1:] == k[2][:-1]))
    if order is not None:
        codes, prob = codes[order], prob[order]
        columns = {name: values[order] for name, values in columns.items()}
    if dup.size:
        i = dup[0]
        raise EvaluationError(
            f"{p}: patch ({columns['x'][i]}, {columns['y'][i]}) of slide {names[codes[i]]!r} is given twice"
        )
    bounds = np.flatnonzero(np.diff(codes)) + 1
    starts = np.r_[0, bounds]
    stops = np.r_[bounds, codes.size]
    out = {}
    for start, stop in zip(starts.tolist(), stops.tolist()):
        arrays = [columns[n][start:stop] for n in ("x", "y", "width", "height")] + [prob[start:stop]]
        for a in arrays:
            a.flags.writeable = False
        out[str(names[codes[start]])] = PatchPredictions(str(names[codes[start]]), *arrays)
    return out


def _whole_pixels(values: np.ndarray, name: str, p: Path) -> np.ndarray:
    if values.dtype.kind in "iu":
        return values.astype(np.int64, copy=False)
    try:
        as_float = values.astype(np.float64)
    except (TypeError, ValueError):
        raise EvaluationError(f"{p}: column {name} must hold whole numbers of level-0 pixels") from None
    if not np.all(np.isfinite(as_float)) or not np.all(as_float == np.round(as_float)):
        raise EvaluationError(f"{p}: column {name} must hold whole numbers of level-0 pixels")
    return as_float.astype(np.int64)


def find_annotation_file(folder: str | os.PathLike, slide: str) -> Path | None:
    """Return the annotation file of a slide in ``folder``, or None.

    Looks for ``<slide>.geojson``, ``.geojson.gz``, ``.json``, ``.xml``, in that order;
    the first that exists wins (the demo cohort writes the same tumors as .geojson and .xml).
    """
    folder = Path(folder)
    for suffix in ANNOTATION_SUFFIXES:
        candidate = folder / f"{slide}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def load_cohort_tumors(folder: str | os.PathLike, slides: Sequence[str]) -> dict[str, list]:
    """Return slide -> tumor polygons (level-0 px, one per connected tumor) for each slide.

    A slide without an annotation file, or with an empty one (0 bytes or only white space),
    has no tumors.

    Raises:
        EvaluationError: ``folder`` is not a folder.
        AnnotationError: an annotation file does not parse (the message names it).
    """
    from core.annotations import load_tumors

    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"annotations folder not found: {folder}")
    tumors: dict[str, list] = {}
    for slide in slides:
        path = find_annotation_file(folder, slide)
        if path is None or _is_blank(path):
            tumors[slide] = []
        else:
            tumors[slide] = list(load_tumors(path))
    return tumors


def _is_blank(path: Path) -> bool:
    size = path.stat().st_size
    if size == 0:
        return True
    if size > 4096 or path.suffix == ".gz":
        return False
    return not path.read_bytes().strip()


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


# =========================================================================== cohort


def patch_tumor_hits(x, y, width, height, tumors: Sequence[BaseGeometry], inner_fraction: float = DEFAULT_INNER_FRACTION):
    """Return (patch_index, tumor_index) pairs: the patch's inner square intersects the tumor.

    :func:`core.tiling.inner_square_hits` on the patches whose inner square meets some
    tumor's bounding box (a cheap numpy test on the same boxes), so slides with small
    tumors skip building shapely boxes for most patches.
    """
    x = np.asarray(x)
    empty = np.zeros(0, dtype=np.int64)
    if len(tumors) == 0 or x.size == 0:
        return empty, empty
    boxes = inner_squares(x, y, width, height, inner_fraction)
    near = np.zeros(x.size, dtype=bool)
    for tumor in tumors:
        minx, miny, maxx, maxy = tumor.bounds
        near |= (boxes[:, 2] >= minx) & (boxes[:, 0] <= maxx) & (boxes[:, 3] >= miny) & (boxes[:, 1] <= maxy)
    index = np.flatnonzero(near)
    if index.size == 0:
        return empty, empty
    w = np.broadcast_to(np.asarray(width), x.shape)[index]
    h = np.broadcast_to(np.asarray(height), x.shape)[index]
    p, k = inner_square_hits(x[index], np.asarray(y)[index], w, h, list(tumors), inner_fraction)
    return index[p], k


@dataclass(frozen=True)
class CamelyonDetails:
    """What Camelyon16 mode did: regions, ITCs, detections, units."""

    n_itc: int
    n_detections: int
    n_fp_detections: int
    dilation_um: float
    itc_um: float
    nms_radius_um: float | None  # None: NMS_RADIUS_PATCH_SIDES patch sides
    mpp: dict[str, float]

    def to_dict(self) -> dict:
        return {
            "n_itc": self.n_itc, "n_detections": self.n_detections, "n_fp_detections": self.n_fp_detections,
            "dilation_um": self.dilation_um, "itc_major_axis_um": self.itc_um,
            "nms_radius_um": self.nms_radius_um,
            "nms_radius_rule": None if self.nms_radius_um else f"{NMS_RADIUS_PATCH_SIDES} x the slide's median patch side",
            "fp_denominator": "all slides", "mpp": self.mpp,
        }


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
        mode = "Camelyon16 mode (official-style FROC)" if self.mode == "camelyon16" else "patch mode"
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
        mode: "patch" (the source material's FROC) or "camelyon16" (the official one).
        mpp: microns per level-0 pixel, Camelyon16 mode only: one value for all slides or
            slide -> value; None: the cohort's ``mpp`` column.
        nms_radius_um: Camelyon16 NMS radius in um; None: 1.5 patch sides.
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

    mpps: dict[str, float] = {}
    if mode == "camelyon16":
        mpps = _resolve_mpp(cohort, mpp, predictions)

    empty_i = np.zeros(0, dtype=np.int64)
    empty_f = np.zeros(0, dtype=np.float64)
    scores, n_patches, n_tumors_per_slide = [], [], []
    patch_probs, patch_labels, patch_slides = [], [], []
    tumor_scores, tumor_slides, fp_scores = [], [], []
    n_itc = n_detections = n_fp_detections = 0
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
        slide_tumors = list(tumors.get(slide, ()))
        if slide in unannotated_set:
            n_tumors_per_slide.append(0)
            continue
        patch_slides.append(slide)
        label = np.zeros(n, dtype=bool)
        hit_patch, hit_tumor = patch_tumor_hits(x, y, w, h, slide_tumors, inner_fraction)
        label[hit_patch] = True
        patch_probs.append(prob)
        patch_labels.append(label)
        if mode == "patch":
            best = np.full(len(slide_tumors), -np.inf)
            np.maximum.at(best, hit_tumor, prob[hit_patch])
            tumor_scores.append(best)
            tumor_slides += [slide] * len(slide_tumors)
            n_tumors_per_slide.append(len(slide_tumors))
            if not tumor_slide:
                fp_scores.append(prob)
        else:
            keep = _detections(x, y, w, h, prob, mpps[slide], nms_radius_um)
            n_detections += keep.size
            cx, cy, dprob = (x[keep] + w[keep] / 2), (y[keep] + h[keep] / 2), prob[keep]  # patch centres, level-0 px
            regions = evaluation_regions(slide_tumors, mpps[slide]) if slide_tumors else None
            if regions is None or len(regions) == 0:
                fp_scores.append(dprob)
                n_fp_detections += dprob.size
                n_tumors_per_slide.append(0)
                continue
            where = regions.locate(cx, cy)
            outside = where < 0
            fp_scores.append(dprob[outside])
            n_fp_detections += int(outside.sum())
            best = np.full(len(regions), -np.inf)
            np.maximum.at(best, where[~outside], dprob[~outside])
            counted = ~regions.is_itc
            n_itc += int(regions.is_itc.sum())
            tumor_scores.append(best[counted])
            tumor_slides += [slide] * int(counted.sum())
            n_tumors_per_slide.append(int(counted.sum()))

    slide_eval = evaluate_slides(cohort.slides, is_tumor, scores, n_patches)
    patch_eval = evaluate_patches(
        np.concatenate(patch_probs) if patch_probs else empty_f,
        np.concatenate(patch_labels) if patch_labels else np.zeros(0, dtype=bool),
    )
    if mode == "patch":
        n_fp_slides = sum(1 for s, t in zip(cohort.slides, is_tumor.tolist()) if not t)
        kind = "normal slides"
    else:
        n_fp_slides = len(patch_slides)
        kind = "slides"
    froc = froc_curve(
        np.concatenate(tumor_scores) if tumor_scores else empty_f,
        np.concatenate(fp_scores) if fp_scores else empty_f,
        n_fp_slides,
        tumor_slides=tumor_slides,
        fp_slides_kind=kind,
    )
    details = None
    if mode == "camelyon16":
        details = CamelyonDetails(n_itc, n_detections, n_fp_detections, DILATION_UM, ITC_MAJOR_AXIS_UM, nms_radius_um, mpps)
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


def _resolve_mpp(cohort: Cohort, mpp, predictions) -> dict[str, float]:
    out: dict[str, float] = {}
    lacking = []
    for slide, from_cohort in zip(cohort.slides, cohort.mpp):
        if isinstance(mpp, Mapping):
            value = mpp.get(slide, from_cohort)
        elif mpp is not None:
            value = mpp
        else:
            value = from_cohort
        if value is None:
            lacking.append(slide)
            continue
        value = float(value)
        if not math.isfinite(value) or value <= 0:
            raise EvaluationError(f"slide {slide!r}: mpp must be a positive number of microns per pixel, got {value}")
        out[slide] = value
    if lacking:
        raise EvaluationError(
            f"Camelyon16 mode needs the microns per pixel (mpp) of every slide; {len(lacking)} slide(s) have none: "
            f"{_names(lacking)} (give --mpp, an mpp column in the cohort, or --slides to read it from the slide files)"
        )
    return out


def _detections(x, y, w, h, prob, mpp: float, nms_radius_um: float | None) -> np.ndarray:
    """Return the indices of one slide's Camelyon16 detections (greedy NMS on patch centres)."""
    if prob.size == 0:
        return np.zeros(0, dtype=np.int64)
    if nms_radius_um is None:
        radius = NMS_RADIUS_PATCH_SIDES * float(np.median(np.maximum(w, h)))  # level-0 px
    else:
        radius = nms_radius_um / mpp  # um -> level-0 px
    return nms_detections(x + w / 2, y + h / 2, prob, radius)
