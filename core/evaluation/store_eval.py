"""Evaluate what is in a results store: the one function the CLI, the Threshold page and the report call.

:func:`evaluate_store_cohort` picks the model, reads its complete runs on the cohort's slides,
finds the tumors, fills each slide's microns per pixel for Camelyon16 mode and runs
:func:`core.evaluation.cohort_eval.evaluate_cohort`; it returns the predictions and slide
records beside the evaluation, so a report can draw them without reading the store again.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.cohort import Cohort, load_cohort_tumors, read_cohort
from core.errors import EvaluationError, EvaluationWarning
from core.evaluation.cohort_eval import CohortEvaluation, evaluate_cohort
from core.tiling import DEFAULT_INNER_FRACTION

__all__ = ["CohortResults", "evaluate_store_cohort", "resolve_cohort"]


@dataclass(frozen=True)
class CohortResults:
    """A model's predictions on a cohort, read from the store, and their evaluation.

    Attributes:
        model: the store's model record (id, path, arch, metadata).
        cohort: the slides and their labels (:class:`core.cohort.Cohort`), mpp filled.
        predictions: slide name -> patch predictions of the cohort's predicted slides.
        slides: slide name -> the store's slide record (path, dimensions, mpp).
        evaluation: :func:`core.evaluation.evaluate_cohort` of the predictions.
        source: where the predictions come from (the store's path), for a report's footer.
        tumors: slide name -> tumor polygons (level-0 px).
        warnings: what the evaluation worked around, in words (as ``evaluation.warnings``).
    """

    model: dict
    cohort: Cohort
    predictions: dict
    slides: dict
    evaluation: CohortEvaluation
    source: str = ""
    tumors: dict = field(default_factory=dict)

    @property
    def warnings(self) -> tuple[str, ...]:
        """Return the evaluation's warnings."""
        return self.evaluation.warnings


def resolve_cohort(cohort: Cohort | Mapping[str, Any] | str | os.PathLike) -> Cohort:
    """Return a :class:`Cohort` from a cohort, ``{slide: label}`` or the path of a ``cohort.csv``."""
    if isinstance(cohort, Cohort):
        return cohort
    if isinstance(cohort, Mapping):
        return Cohort.from_labels(cohort)
    return read_cohort(cohort)


def evaluate_store_cohort(
    store: Any,
    cohort: Cohort | Mapping[str, Any] | str | os.PathLike,
    *,
    annotations: str | os.PathLike | Mapping[str, Any] | None = None,
    model_id: str | None = None,
    params: dict | None = None,
    slide_params: Mapping[str, dict] | None = None,
    split: str | None = None,
    mode: str = "patch",
    mpp: float | None = None,
    extra_mpp: Mapping[str, float] | None = None,
    inner_fraction: float = DEFAULT_INNER_FRACTION,
    nms_radius_um: float | None = None,
    allow_missing: bool = False,
) -> CohortResults:
    """Return a model's predictions on a cohort, read from the store, and their evaluation.

    Args:
        store: an open :class:`core.store.ResultStore`.
        cohort: a :class:`Cohort`, ``{slide: label}`` or the path of a ``cohort.csv``.
        annotations: folder of tumor annotations (:func:`core.cohort.find_annotation_file`),
            or ``{slide: tumor polygons}``; None: no tumors (patch level and FROC undefined,
            the evaluation says why).
        model_id: the model; None: the store's only model.
        params: only prediction runs with these tiling params; None: each slide's latest.
        slide_params: per slide, other run params than ``params`` (e.g. a slide whose
            microns per pixel the user gave has runs of its own params).
        split: evaluate only the cohort's slides of this split.
        mode: "patch" or "camelyon16" (:data:`core.evaluation.MODES`).
        mpp: Camelyon16 modes: microns per level-0 pixel of every slide, or slide -> value,
            overriding all else. Otherwise "camelyon16" uses the official 0.243 and
            "camelyon16-polygons" each slide's own: the cohort's, else ``extra_mpp``'s (e.g.
            read from the slide files), else the store's record of the slide.
        inner_fraction: side of the labelling inner square, as a fraction of the patch side.
        nms_radius_um: Camelyon16 NMS radius in um (None: 1.5 patch sides).
        allow_missing: count cohort slides without predictions as slides without tissue
            instead of failing.

    Raises:
        StoreError: no model, several (none chosen) or an unknown one.
        EvaluationError: no predictions on the cohort's slides, or what
            :func:`evaluate_cohort` refuses (slides without predictions, a normal slide with
            tumors, Camelyon16 mode without mpp).
        CohortError: a malformed cohort table, an unknown split, a missing annotations folder.
        AnnotationError: an annotation file does not parse.
    """
    model = store.choose_model(model_id)
    cohort = resolve_cohort(cohort)
    if split is not None:
        cohort = cohort.select(split)
    all_predictions = store.predictions_for_model(model["id"], params)
    predictions = {s: all_predictions[s] for s in cohort.slides if s in all_predictions}
    if slide_params:
        by_params: dict[str, list[str]] = {}
        for slide in cohort.slides:
            if slide in slide_params:
                by_params.setdefault(json.dumps(slide_params[slide], sort_keys=True), []).append(slide)
                predictions.pop(slide, None)  # not the run of these params
        for params_json, slides in by_params.items():
            found = store.predictions_for_model(model["id"], json.loads(params_json))
            predictions.update({s: found[s] for s in slides if s in found})
    if not predictions:
        raise EvaluationError(f"the store holds no complete prediction run of model {model['id']!r} on the cohort's slides")
    if annotations is None:
        tumors: dict = {}
    elif isinstance(annotations, Mapping):
        tumors = dict(annotations)
    else:
        tumors = load_cohort_tumors(annotations, cohort.slides)
    records = {s.name: s for s in store.slides()}
    if mode in ("camelyon16", "camelyon16-polygons"):
        # Each slide's own resolution: the polygon mode measures with it; the official mode
        # uses 0.243 um/px unless told otherwise and warns where a slide's own differs.
        known = {s: r.mpp for s, r in records.items() if r.mpp}
        known.update(extra_mpp or {})
        cohort = cohort.with_mpp(known)  # the cohort's own column wins
    with warnings.catch_warnings():
        # The caller shows the evaluation's warnings itself (evaluation.warnings).
        warnings.simplefilter("ignore", EvaluationWarning)
        result = evaluate_cohort(
            predictions, cohort, tumors, inner_fraction=inner_fraction, mode=mode, mpp=mpp,
            nms_radius_um=nms_radius_um, allow_missing=allow_missing,
            dimensions={s: (r.width, r.height) for s, r in records.items()},
        )
    slides = {s: records[s] for s in cohort.slides if s in records}
    return CohortResults(model, cohort, predictions, slides, result, str(getattr(store, "path", "")), tumors)
