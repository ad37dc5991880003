"""What every export shares: the error type, the tumor regions at a threshold, the source data.

* :func:`merge_regions` turns the patches with ``F(I) >= t`` into connected tumor regions
  (union of the patch squares, level-0 pixels): what QuPath gets as annotations and ASAP
  as polygons.
* :func:`load_slide_export` reads what an export needs from the
  results store, with one clear :class:`ExportError` per thing that is missing.
* :func:`demo_note` says whether the model or the slides are the synthetic demo, so every
  picture and report can say so (DESIGN: the demo is labelled as such).
* :func:`write_bytes` writes a file atomically, gzip-compressed when its name ends in ``.gz``.

Coordinates are level-0 pixels (x right, y down, origin top-left) throughout.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from core.evaluation.camelyon16 import group_touching
from core.errors import ExportError, PathologyError
from core.fileio import atomic_write_bytes

__all__ = [
    "NORMAL_RGB",
    "TUMOR_RGB",
    "ExportError",
    "SlideExport",
    "TumorRegion",
    "demo_note",
    "encode",
    "load_slide_export",
    "merge_regions",
    "patch_arrays",
    "write_bytes",
]

#: Colour of the "Tumor" class in exported files (QuPath's own default for Tumor).
TUMOR_RGB = (200, 0, 0)
#: Colour of the "Normal" class in exported files.
NORMAL_RGB = (0, 160, 0)

#: zlib level of ``.gz`` exports: level 6 is 2x faster than 9 for the same size (+0.3%),
#: measured on a 100k-patch QuPath export (bench/bench_export.py).
GZIP_LEVEL = 6

_SYNTHETIC_MARK = "synthetic demo"



# --------------------------------------------------------------------------- predictions


def patch_arrays(predictions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (x, y, width, height, prob) of patch predictions as int64 / float64 arrays.

    ``predictions`` is anything with those attributes (e.g. :class:`core.store.PatchPredictions`),
    x, y the top-left corner and width, height the size of each patch in level-0 pixels.

    Raises:
        ExportError: missing arrays, unequal lengths, or probabilities outside [0, 1].
    """
    try:
        x, y, w, h = (np.asarray(getattr(predictions, name), dtype=np.int64) for name in ("x", "y", "width", "height"))
        prob = np.asarray(predictions.prob, dtype=np.float64)
    except AttributeError as exc:
        raise ExportError(f"predictions need arrays x, y, width, height, prob ({exc})") from None
    if not (x.shape == y.shape == w.shape == h.shape == prob.shape) or prob.ndim != 1:
        raise ExportError("prediction arrays x, y, width, height, prob differ in length")
    if prob.size and not (prob.min() >= 0 and prob.max() <= 1):  # NaN fails both comparisons
        raise ExportError("probabilities must be in [0, 1] (NaN found or out of range)")
    return x, y, w, h, prob


def check_threshold(threshold: float) -> float:
    """Return ``threshold`` as a float in [0, 1]; raise ExportError otherwise."""
    t = float(threshold)
    if not 0.0 <= t <= 1.0:
        raise ExportError(f"the threshold must be in [0, 1], got {threshold}")
    return t


# --------------------------------------------------------------------------- regions


@dataclass(frozen=True)
class TumorRegion:
    """One connected region of patches with ``F(I) >= t`` (level-0 pixels).

    Attributes:
        geometry: the union of the region's patch squares: a Polygon (possibly with holes),
            or a MultiPolygon whose parts touch at corners only (8-connectivity: diagonal
            neighbours belong to one region, as in the Camelyon16 evaluation regions).
        max_prob: the largest F(I) of its patches.
        n_patches: number of patches with ``F(I) >= t`` in it.
        patch_index: indices (into the predictions) of those patches.
    """

    geometry: BaseGeometry
    max_prob: float
    n_patches: int
    patch_index: np.ndarray = field(repr=False)

    @property
    def area_px(self) -> float:
        """Area in square level-0 pixels."""
        return float(self.geometry.area)


def _union_of_boxes(boxes: np.ndarray, w: np.ndarray, h: np.ndarray, x: np.ndarray, y: np.ndarray) -> BaseGeometry:
    """Return the union of axis-aligned patch squares, fast when they do not overlap.

    Patches on a tiling grid with stride >= size form a *coverage* (no two interiors
    overlap): ``coverage_union_all`` merges them in ~0.15 s for 85k squares where
    ``union_all`` takes ~2.4 s. Distinct x values at least ``max(w)`` apart and distinct y
    values at least ``max(h)`` apart guarantee that (any two squares differ in x or in y by
    at least a side) unless a patch is repeated; otherwise, or if the result is not valid,
    the general union is used.
    """
    ux, uy = np.unique(x), np.unique(y)
    dx = np.diff(ux).min() if ux.size > 1 else np.inf
    dy = np.diff(uy).min() if uy.size > 1 else np.inf
    distinct = np.unique(np.column_stack([x, y]), axis=0).shape[0] == x.size  # a repeated patch overlaps itself
    if distinct and dx >= w.max() and dy >= h.max():
        merged = shapely.coverage_union_all(boxes)
        if merged.is_valid:
            return merged
    return shapely.union_all(boxes)


def merge_regions(predictions: Any, threshold: float) -> list[TumorRegion]:
    """Return the tumor regions at ``threshold``: connected unions of patches with ``F(I) >= t``.

    Each patch is its square (x, y)-(x + width, y + height) in level-0 pixels. The union of
    the squares of the patches with ``prob >= threshold`` is cut into connected regions;
    parts that touch at a single corner are one region (8-connectivity). Collinear vertices
    are removed, so a region's outline has one vertex per corner.

    Returns:
        The regions, most suspicious first (descending ``max_prob``, then by position).

    Raises:
        ExportError: bad predictions or a threshold outside [0, 1].
    """
    t = check_threshold(threshold)
    x, y, w, h, prob = patch_arrays(predictions)
    chosen = np.flatnonzero(prob >= t)
    if chosen.size == 0:
        return []
    xs, ys, ws, hs = x[chosen], y[chosen], w[chosen], h[chosen]
    boxes = shapely.box(xs, ys, xs + ws, ys + hs)
    union = shapely.simplify(_union_of_boxes(boxes, ws, hs, xs, ys), 0.0)  # drops collinear vertices only
    parts = [p for p in shapely.get_parts(union) if isinstance(p, Polygon) and not p.is_empty]
    # 8-connectivity: parts of the union touch at corners at most; such parts are one region.
    geometries = group_touching(parts)
    # Patch centres lie inside their own square, so inside exactly one region. The regions
    # query a tree of the points: the predicate then runs on each (prepared) region once,
    # 15x faster than points querying a tree of large polygons.
    centres = shapely.points(xs + ws / 2, ys + hs / 2)
    region_i, point_i = shapely.STRtree(centres).query(geometries, predicate="intersects")
    owner = np.full(chosen.size, -1, dtype=np.int64)
    owner[point_i] = region_i
    regions = []
    for k, geometry in enumerate(geometries):
        members = chosen[owner == k]
        regions.append(TumorRegion(geometry, float(prob[members].max()), int(members.size), members))
    regions.sort(key=lambda r: (-r.max_prob, r.geometry.bounds[1], r.geometry.bounds[0]))
    return regions


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class SlideExport:
    """What the exports of one slide need, read from the results store.

    Attributes:
        slide: the slide's record (name, path, level-0 width and height, mpp).
        model: the model's record: id, path, arch, metadata (dict).
        run: the complete prediction run the predictions come from.
        predictions: the run's patch predictions (level-0 px, sorted by (y, x)).
    """

    slide: Any  # core.store.SlideRecord
    model: dict
    run: Any  # core.store.RunRecord
    predictions: Any  # core.store.PatchPredictions

    @property
    def model_id(self) -> str:
        return self.model["id"]

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height) in pixels."""
        return int(self.slide.width), int(self.slide.height)

    @property
    def demo(self) -> str | None:
        """The "synthetic demo" note of this slide and model, or None (see :func:`demo_note`)."""
        return demo_note(self.model.get("metadata") or {}, [self.slide])


def load_slide_export(store: Any, slide: str, model_id: str | None = None) -> SlideExport:
    """Return a slide's predictions by a model, with the slide's and the model's records.

    Args:
        store: an open :class:`core.store.ResultStore`.
        slide: the slide's name (its file stem).
        model_id: the model; None: the store's only model.

    The run is the slide's most recently finished complete run of the model (whatever its
    tiling parameters), as :meth:`ResultStore.predictions_for_model` chooses.

    Raises:
        ExportError: unknown model or slide, a slide name held by two slides, or no
            complete run of the model on the slide.
    """
    model = store.choose_model(model_id)
    records = [s for s in store.slides() if s.name == slide]
    if not records:
        names = sorted({s.name for s in store.slides()})
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        raise ExportError(f"slide {slide!r} is not in the results store (slides: {shown or 'none'})")
    runs = [r for rec in records for r in store.runs(model_id=model["id"], slide_id=rec.id, status="complete")]
    if not runs:
        raise ExportError(f"slide {slide!r} has no complete prediction run of model {model['id']!r}; run `python -m core predict` first")
    if len({r.slide_id for r in runs}) > 1:
        raise ExportError(f"two different slides are named {slide!r} in the store; exports by name would be ambiguous")
    run = max(runs, key=lambda r: (r.finished or 0.0, r.id))
    record = next(s for s in records if s.id == run.slide_id)
    return SlideExport(record, model, run, store.read_predictions(run.id))


def _slide_is_synthetic(record: Any) -> bool:
    """Return True if a slide is a demo slide: named ``demo_*`` or its TIFF description says so."""
    from core.demo import SYNTHETIC_NOTE

    if str(getattr(record, "name", "")).startswith("demo_"):
        return True
    path = getattr(record, "path", None)
    if not path or not Path(path).is_file():
        return False
    try:
        from core.slide_io import open_slide

        return SYNTHETIC_NOTE in open_slide(path).properties.get("tiff.ImageDescription", "")
    except PathologyError:
        return False  # unreadable slide: it says nothing about being synthetic


def demo_note(model_metadata: dict, slides: Iterable[Any] = ()) -> str | None:
    """Return the label of demo material ("synthetic demo: ..."), or None for real material.

    The model is the demo model when its checkpoint metadata says ``demo``; a slide is
    synthetic when its name starts with ``demo_`` or its TIFF description carries the demo
    cohort's note (:data:`core.demo.SYNTHETIC_NOTE`).
    """
    what = []
    if bool((model_metadata or {}).get("demo")):
        what.append("demo model")
    if any(_slide_is_synthetic(s) for s in slides):
        what.append("synthetic slides")
    return f"{_SYNTHETIC_MARK} ({', '.join(what)}; not for diagnosis)" if what else None


# --------------------------------------------------------------------------- files


def encode(text: str | bytes, *, compress: bool) -> bytes:
    """Return ``text`` as UTF-8 bytes, gzip-compressed (reproducibly: mtime 0) when ``compress``."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0) if compress else data


def is_gzip_path(path: str | os.PathLike) -> bool:
    """Return True when a file name ends in ``.gz`` (case ignored)."""
    return Path(path).suffix.lower() == ".gz"


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (``core.fileio``); return the path.

    The folder is created if missing. A failure leaves no half-written file. ``data`` is
    written as given: gzip it first with ``encode(..., compress=is_gzip_path(path))``.

    Raises:
        ExportError: the file cannot be written.
        FileWriteError: ``path`` is a device, FIFO, directory or symbolic link; not replaced.
    """
    p = Path(path)
    try:
        return atomic_write_bytes(p, data)
    except OSError as exc:
        raise ExportError(f"cannot write {p}: {exc.strerror or exc}") from None


def median_patch_side(width: Sequence[int] | np.ndarray, height: Sequence[int] | np.ndarray) -> float:
    """Return the median patch side in level-0 pixels (the larger of width and height)."""
    w = np.asarray(width)
    if w.size == 0:
        return 0.0
    return float(np.median(np.maximum(w, np.asarray(height))))
