"""Evaluation of patch predictions against tumor annotations: slide level, patch level, FROC.

The package, one module per part:

* :mod:`~core.evaluation.metrics`: slide ROC and counts, patch ROC / PR / confusion matrix,
  the FROC curve and score, from plain arrays.
* :mod:`~core.evaluation.patch_mode` and :mod:`~core.evaluation.camelyon16`: one module per
  FROC mode (the source material's rule, the official Camelyon16 one with its geometry).
* :mod:`~core.evaluation.predictions`: the patch predictions CSV.
* :mod:`~core.evaluation.cohort_eval`: :func:`evaluate_cohort`, a cohort's predictions at
  every threshold at once, cheap to ask at one ``t``.
* :mod:`~core.evaluation.store_eval`: :func:`evaluate_store_cohort`, what the CLI, the
  Threshold page and the cohort report call to evaluate what is in a results store.

The cohort table and the annotation files are :mod:`core.cohort`'s. Nothing here imports
torch or streamlit. Coordinates are level-0 pixels; probabilities are in [0, 1].
"""

from core.errors import EvaluationError, EvaluationWarning
from core.evaluation.camelyon16 import (
    NMS_RADIUS_PATCH_SIDES,
    CamelyonDetails,
    EvaluationRegions,
    evaluation_regions,
    major_axis_length,
    nms_detections,
)
from core.evaluation.cohort_eval import MODES, CohortEvaluation, ThresholdReport, evaluate_cohort
from core.evaluation.metrics import (
    FROC_TARGETS,
    FROCCurve,
    FROCPoint,
    PatchCounts,
    PatchEvaluation,
    SlideCounts,
    SlideEvaluation,
    evaluate_patches,
    evaluate_slides,
    froc_curve,
    froc_score,
)
from core.evaluation.patch_mode import patch_tumor_hits
from core.evaluation.predictions import PREDICTIONS_HEADER, read_predictions_csv
from core.evaluation.store_eval import CohortResults, evaluate_store_cohort

__all__ = [
    "FROC_TARGETS",
    "MODES",
    "NMS_RADIUS_PATCH_SIDES",
    "PREDICTIONS_HEADER",
    "CamelyonDetails",
    "CohortEvaluation",
    "CohortResults",
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
    "evaluate_store_cohort",
    "evaluation_regions",
    "froc_curve",
    "froc_score",
    "major_axis_length",
    "nms_detections",
    "patch_tumor_hits",
    "read_predictions_csv",
]
