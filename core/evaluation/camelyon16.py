"""The FROC of the Camelyon16 challenge (``mode="camelyon16"``): its geometry and its counting rule.

What the official Camelyon16 evaluation script (Bejnordi et al., ``Evaluation_FROC.py``)
does on raster masks, done here on the annotation polygons themselves, in level-0 pixels:

* **Evaluation regions** (``computeEvaluationMask``): every pixel closer than
  ``75 / (2 * resolution)`` pixels to the annotated tumor becomes part of it, i.e. each
  outline moves outwards by half of 75 um (37.5 um) and a region's diameter grows by
  75 um ("the size of 5 tumor cells"); two tumors less than 75 um apart therefore merge.
  Holes are filled, then regions are labelled with 8-connectivity (here: regions that
  touch, even at a single point, are one region).
* **Isolated tumor cells** (``computeITCList``): a region whose major axis, measured after
  the dilation, is below 275 um (200 um + 75 um) is an ITC: it is neither a hit nor part of
  the sensitivity's denominator, and a detection inside it is not a false positive either.
  The major axis is the one of ``skimage.measure.regionprops``: the length of the ellipse
  with the same second moments, ``4 * sqrt(largest eigenvalue of the covariance)``, here
  computed exactly from the polygon's area moments instead of from pixels.
* **Detections**: Camelyon16 scored lists of (probability, x, y) points. A patch grid is
  turned into such points by greedy non-maximum suppression: patches in descending
  probability, each one kept unless a kept patch's centre lies within ``radius`` of its
  centre. A detection's location is its patch centre.

* **Counting** (:class:`Camelyon16Mode`): a detection inside a counted region hits it (the
  region's score is its best detection), inside an ITC it is ignored, elsewhere it is a
  false positive; the AvgFP's denominator is *all* slides (the official script divides by
  the number of result files).
It works with polygons, so results do not depend on a mask level (the official script
works at level 5, ~7.8 um per pixel, and its numbers differ from these by that much).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from core.errors import EvaluationError

__all__ = [
    "CAMELYON16_MPP",
    "MASK_LEVEL",
    "NMS_RADIUS_PATCH_SIDES",
    "CamelyonDetails",
    "Camelyon16Mode",
    "Camelyon16PolygonMode",
    "evaluation_mask",
    "itc_labels",
    "official_froc",
    "DILATION_UM",
    "ITC_MAJOR_AXIS_UM",
    "EvaluationRegions",
    "evaluation_regions",
    "major_axis_length",
    "nms_detections",
]

#: Growth of a tumor's diameter by the evaluation mask, in um (outline moved by half of it).
DILATION_UM = 75.0
#: Regions whose major axis (after dilation) is below this many um are isolated tumor cells.
ITC_MAJOR_AXIS_UM = 275.0
#: The level-0 resolution the official script assumes for every slide (L0_RESOLUTION), um/px.
CAMELYON16_MPP = 0.243
#: The pyramid level of the official evaluation mask: 2**5 = 32 level-0 pixels per mask pixel.
MASK_LEVEL = 5
#: Default NMS radius, in patch sides: the 8 grid neighbours of a detection (centres 1 and
#: sqrt(2) sides away) are suppressed.
NMS_RADIUS_PATCH_SIDES = 1.5

# Segments per quarter circle of the dilation's round corners: the outline of a buffered
# point is then within 0.5% of the true circle.
_QUAD_SEGS = 16


@dataclass(frozen=True)
class EvaluationRegions:
    """The Camelyon16 evaluation regions of one slide (level-0 pixels).

    Attributes:
        regions: one Polygon or MultiPolygon per region (dilated, holes filled; a
            MultiPolygon gathers parts that touch at a point: 8-connectivity).
        major_axis_um: major axis length of each region in um.
        is_itc: True where the region is an isolated tumor cell cluster.
    """

    regions: tuple[BaseGeometry, ...]
    major_axis_um: np.ndarray
    is_itc: np.ndarray

    def __len__(self) -> int:
        return len(self.regions)

    @property
    def n_tumors(self) -> int:
        """Number of regions that count in the sensitivity (not ITC)."""
        return int(np.count_nonzero(~self.is_itc))

    def locate(self, x, y) -> np.ndarray:
        """Return, for each point (level-0 px), the index of the region holding it, or -1.

        A point on a region's outline is inside it (closed sets, like the inner-square rule).
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        where = np.full(x.shape, -1, dtype=np.int64)
        if len(self.regions) == 0 or x.size == 0:
            return where
        tree = shapely.STRtree(list(self.regions))
        point_index, region_index = tree.query(shapely.points(x, y), predicate="intersects")
        # Regions are disjoint, so a point lies in at most one; keep the first if not.
        where[point_index[::-1]] = region_index[::-1]
        return where


def major_axis_length(geometry: BaseGeometry) -> float:
    """Return the major axis length (same unit as the coordinates) of a polygonal area.

    As ``skimage.measure.regionprops(...).major_axis_length``: ``4 * sqrt(l1)``, l1 the
    largest eigenvalue of the covariance of the area's points; exact for polygons (area
    moments by Green's theorem), holes subtracted. A disc of diameter d gives d.
    """
    polygons = [g for g in shapely.get_parts(geometry) if isinstance(g, Polygon) and not g.is_empty]
    if not polygons:
        return 0.0
    minx, miny, _, _ = geometry.bounds  # moments about a nearby origin: no cancellation
    m = np.zeros(6)  # area, Sx, Sy, Sxx, Syy, Sxy
    for polygon in polygons:
        polygon = shapely.orient_polygons(polygon, exterior_cw=False)  # holes then run clockwise
        for ring in (polygon.exterior, *polygon.interiors):
            xy = np.asarray(ring.coords, dtype=np.float64) - (minx, miny)
            x0, y0, x1, y1 = xy[:-1, 0], xy[:-1, 1], xy[1:, 0], xy[1:, 1]
            c = x0 * y1 - x1 * y0
            m += (
                c.sum() / 2,
                ((x0 + x1) * c).sum() / 6,
                ((y0 + y1) * c).sum() / 6,
                ((x0 * x0 + x0 * x1 + x1 * x1) * c).sum() / 12,
                ((y0 * y0 + y0 * y1 + y1 * y1) * c).sum() / 12,
                ((x0 * y1 + 2 * x0 * y0 + 2 * x1 * y1 + x1 * y0) * c).sum() / 24,
            )
    area, sx, sy, sxx, syy, sxy = m
    if area <= 0:
        return 0.0
    cx, cy = sx / area, sy / area
    mu20, mu02, mu11 = sxx / area - cx * cx, syy / area - cy * cy, sxy / area - cx * cy
    l1 = (mu20 + mu02) / 2 + np.sqrt(((mu20 - mu02) / 2) ** 2 + mu11**2)
    return float(4 * np.sqrt(max(l1, 0.0)))


def group_touching(parts: list[Polygon]) -> list[BaseGeometry]:
    """Return the polygons grouped by 8-connectivity: parts that touch (even at one corner
    point, which a union leaves apart) form one region, a Polygon or a MultiPolygon."""
    if not parts:
        return []
    tree = shapely.STRtree(parts)
    a, b = tree.query(parts, predicate="intersects")
    n, label = connected_components(coo_matrix((np.ones(a.size), (a, b)), shape=(len(parts), len(parts))), directed=False)
    regions: list[BaseGeometry] = []
    for k in range(n):
        members = [parts[i] for i in np.flatnonzero(label == k)]
        regions.append(members[0] if len(members) == 1 else MultiPolygon(members))
    return regions


def evaluation_regions(
    tumors: Sequence[BaseGeometry],
    mpp: float,
    *,
    dilation_um: float = DILATION_UM,
    itc_um: float = ITC_MAJOR_AXIS_UM,
) -> EvaluationRegions:
    """Return the Camelyon16 evaluation regions of one slide's tumors.

    Args:
        tumors: tumor polygons in level-0 pixels.
        mpp: microns per level-0 pixel.
        dilation_um: growth of the diameter in um; outlines move by half of it.
        itc_um: major-axis limit (after dilation) below which a region is an ITC.

    Returns:
        The regions, ordered by (miny, minx) of their bounds.
    """
    if not mpp or not np.isfinite(mpp) or mpp <= 0:
        raise ValueError(f"mpp must be a positive number of microns per pixel, got {mpp!r}")
    parts = [g for g in tumors if g is not None and not g.is_empty]
    if not parts:
        return EvaluationRegions((), np.zeros(0), np.zeros(0, dtype=bool))
    radius = dilation_um / 2 / mpp  # um -> level-0 px
    grown = shapely.union_all(shapely.buffer(np.asarray(parts, dtype=object), radius, quad_segs=_QUAD_SEGS))
    # binary_fill_holes: keep exteriors only; a filled part may now cover another part.
    filled = shapely.union_all([Polygon(p.exterior) for p in shapely.get_parts(grown) if isinstance(p, Polygon)])
    pieces = [p for p in shapely.get_parts(filled) if isinstance(p, Polygon) and not p.is_empty]
    regions = group_touching(pieces)
    regions.sort(key=lambda g: (g.bounds[1], g.bounds[0], g.bounds[3], g.bounds[2]))
    axis_um = np.array([major_axis_length(g) * mpp for g in regions])  # px -> um
    return EvaluationRegions(tuple(regions), axis_um, axis_um < itc_um)


def nms_detections(x, y, prob, radius: float) -> np.ndarray:
    """Return the indices of the points kept by greedy non-maximum suppression.

    Points are visited by descending probability (ties: lower index first); a point is kept
    unless a kept point lies within ``radius`` (Euclidean, inclusive) of it.

    Greedy NMS is sequential by definition; this computes the same result in vectorized
    rounds: an undecided point none of whose undecided neighbours comes before it in the
    visiting order is kept (everything before it is settled, and a kept neighbour would
    already have suppressed it), then its neighbours are suppressed. A few rounds settle a
    noisy probability map; after :data:`NMS_MAX_ROUNDS` (long monotone ramps) the rest is
    finished by the plain sequential loop.

    Args:
        x, y: point coordinates (e.g. level-0 patch centres).
        prob: one probability per point.
        radius: suppression radius, in the unit of x and y; 0 keeps every point.

    Returns:
        int64 indices of the kept points, by descending probability.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    prob = np.asarray(prob, dtype=np.float64)
    n = prob.size
    order = np.argsort(-prob, kind="stable")
    if n == 0 or radius <= 0:
        return order.astype(np.int64)
    pairs = cKDTree(np.column_stack([x, y])).query_pairs(radius, output_type="ndarray")
    if pairs.size == 0:
        return order.astype(np.int64)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    # Orient every pair: ``first`` is visited before ``second``.
    a, b = pairs[:, 0], pairs[:, 1]
    a_first = rank[a] < rank[b]
    first = np.where(a_first, a, b)
    second = np.where(a_first, b, a)
    state = np.zeros(n, dtype=np.int8)  # 0 undecided, 1 kept, 2 suppressed
    for _ in range(NMS_MAX_ROUNDS):
        undecided = state == 0
        blocked = np.zeros(n, dtype=bool)
        blocked[second[undecided[first]]] = True
        chosen = undecided & ~blocked
        state[chosen] = 1
        victims = second[chosen[first]]
        state[victims[state[victims] == 0]] = 2
        live = state[second] == 0  # edges that can still block or suppress someone
        first, second = first[live], second[live]
        if not (state == 0).any():
            break
    else:
        _finish_sequentially(order, state, first, second)
    return order[state[order] == 1].astype(np.int64)


#: Rounds of vectorized NMS before the sequential loop finishes the remaining points.
NMS_MAX_ROUNDS = 64


def _finish_sequentially(order: np.ndarray, state: np.ndarray, first: np.ndarray, second: np.ndarray) -> None:
    """Settle the undecided points of ``state`` in visiting order (plain greedy NMS)."""
    n = state.size
    by_first = np.argsort(first, kind="stable")
    neighbours = second[by_first]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(first, minlength=n), out=indptr[1:])
    for i in order[state[order] == 0].tolist():
        if state[i] != 0:
            continue
        state[i] = 1
        later = neighbours[indptr[i] : indptr[i + 1]]
        state[later[state[later] == 0]] = 2


# =========================================================================== counting


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
        """Return the details as JSON-ready data."""
        return {
            "n_itc": self.n_itc, "n_detections": self.n_detections, "n_fp_detections": self.n_fp_detections,
            "dilation_um": self.dilation_um, "itc_major_axis_um": self.itc_um,
            "nms_radius_um": self.nms_radius_um,
            "nms_radius_rule": None if self.nms_radius_um else f"{NMS_RADIUS_PATCH_SIDES} x the slide's median patch side",
            "fp_denominator": "all slides", "mpp": self.mpp,
        }


def resolve_mpp(slides: Sequence[str], cohort_mpp: Sequence[float | None], mpp: float | Mapping[str, float | None] | None) -> dict[str, float]:
    """Return slide -> microns per level-0 pixel: ``mpp`` (one value, or per slide) else the cohort's.

    Raises:
        EvaluationError: a slide without mpp (the message says how to give it), or a value
            that is not a positive number.
    """
    out: dict[str, float] = {}
    lacking = []
    for slide, from_cohort in zip(slides, cohort_mpp):
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
        shown = ", ".join(repr(n) for n in lacking[:5]) + (f" (and {len(lacking) - 5} more)" if len(lacking) > 5 else "")
        raise EvaluationError(
            f"Camelyon16 mode needs the microns per pixel (mpp) of every slide; {len(lacking)} slide(s) have none: "
            f"{shown} (give --mpp, an mpp column in the cohort, or --slides to read it from the slide files)"
        )
    return out


def detections(x, y, w, h, prob, mpp: float, nms_radius_um: float | None) -> np.ndarray:
    """Return the indices of one slide's Camelyon16 detections (greedy NMS on patch centres)."""
    if prob.size == 0:
        return np.zeros(0, dtype=np.int64)
    if nms_radius_um is None:
        radius = NMS_RADIUS_PATCH_SIDES * float(np.median(np.maximum(w, h)))  # level-0 px
    else:
        radius = nms_radius_um / mpp  # um -> level-0 px
    return nms_detections(x + w / 2, y + h / 2, prob, radius)


class Camelyon16PolygonMode:
    """Camelyon16's rules on exact polygons (``mode="camelyon16-polygons"``; not the official numbers).

    Detections against tumors buffered by 37.5 um as polygons, ITCs by exact moments: free of
    the official level-5 raster's pixel effects, so it differs from the leaderboard's numbers
    by up to a few hundredths. :class:`Camelyon16Mode` is the official computation.
    """

    name = "camelyon16-polygons"
    #: What the AvgFP's denominator counts (for the reason of an undefined score).
    fp_slides_kind = "slides"

    def __init__(self, mpp: Mapping[str, float], nms_radius_um: float | None = None) -> None:
        self.mpp = dict(mpp)
        self.nms_radius_um = nms_radius_um
        self.n_itc = self.n_detections = self.n_fp_detections = 0

    def score_slide(self, patches):
        """Return the slide's counted-region scores and false-positive detection probabilities.

        ``patches`` is a :class:`core.evaluation.patch_mode.SlidePatches`.
        """
        from core.evaluation.patch_mode import SlideFROC

        x, y, w, h, prob = patches.x, patches.y, patches.width, patches.height, patches.prob
        mpp = self.mpp[patches.slide]
        keep = detections(x, y, w, h, prob, mpp, self.nms_radius_um)
        self.n_detections += keep.size
        cx, cy, dprob = (x[keep] + w[keep] / 2), (y[keep] + h[keep] / 2), prob[keep]  # patch centres, level-0 px
        regions = evaluation_regions(patches.tumors, mpp) if patches.tumors else None
        if regions is None or len(regions) == 0:
            self.n_fp_detections += dprob.size
            return SlideFROC(np.zeros(0), dprob, 0)
        where = regions.locate(cx, cy)
        outside = where < 0
        self.n_fp_detections += int(outside.sum())
        best = np.full(len(regions), -np.inf)
        np.maximum.at(best, where[~outside], dprob[~outside])
        counted = ~regions.is_itc
        self.n_itc += int(regions.is_itc.sum())
        return SlideFROC(best[counted], dprob[outside], int(counted.sum()))

    def n_fp_slides(self, is_tumor: np.ndarray, patch_slides: Sequence[str]) -> int:
        """Return the AvgFP's denominator: every slide whose patches are evaluated."""
        return len(patch_slides)

    def details(self) -> CamelyonDetails:
        """Return what this mode counted (call after every slide is scored)."""
        return CamelyonDetails(
            self.n_itc, self.n_detections, self.n_fp_detections, DILATION_UM, ITC_MAJOR_AXIS_UM, self.nms_radius_um, self.mpp
        )


# =========================================================================== the official raster method


def evaluation_mask(
    tumors: Sequence[BaseGeometry], resolution: float, dimensions: tuple[int, int] | None = None, level: int = MASK_LEVEL
) -> tuple[np.ndarray, tuple[int, int]]:
    """Return the official evaluation mask of one slide's tumors (labels, 8-connectivity) and its offset.

    The official script works on the ground-truth mask at level 5 (``computeEvaluationMask``);
    that mask, written by ASAP's AnnotationToMask, takes at level-5 pixel (row i, column j)
    the value of the level-0 pixel (32 j, 32 i). So pixel (i, j) is tumor iff the level-0
    point (32 j, 32 i) lies inside a tumor polygon and outside its holes (the ``_2``
    exclusions), as ``skimage.draw.polygon`` decides for the polygons scaled by 1/32. Then, as
    the script: Euclidean distance to the tumor < ``75 / (resolution * 2**level * 2)`` pixels,
    holes filled, regions labelled with 8-connectivity.

    Only the window around the tumors is computed (the distance threshold plus a margin on
    every side, clipped at 0 and at the slide's level-5 size ``ceil(dimension / 32)`` when
    ``dimensions`` is given); every step is local to it, so the labels equal the full mask's.

    Returns:
        (labels, (i0, j0)): int32 labels of the window, 0 = outside; level-5 pixel (i, j) of
        the full mask is ``labels[i - i0, j - j0]`` when inside the window, else 0.
    """
    from scipy import ndimage
    from skimage import draw, measure

    scale = 2**level
    geoms = [g for t in tumors for g in (t.geoms if isinstance(t, MultiPolygon) else [t]) if not g.is_empty]
    if not geoms:
        return np.zeros((0, 0), dtype=np.int32), (0, 0)
    threshold = 75 / (resolution * scale * 2)  # level-`level` pixels, as the script
    pad = int(math.ceil(threshold)) + 2
    minx = min(g.bounds[0] for g in geoms)
    miny = min(g.bounds[1] for g in geoms)
    maxx = max(g.bounds[2] for g in geoms)
    maxy = max(g.bounds[3] for g in geoms)
    i0, j0 = max(0, int(math.floor(miny / scale)) - pad), max(0, int(math.floor(minx / scale)) - pad)
    i1, j1 = int(math.ceil(maxy / scale)) + pad + 1, int(math.ceil(maxx / scale)) + pad + 1
    if dimensions is not None:
        j1 = min(j1, int(math.ceil(dimensions[0] / scale)))
        i1 = min(i1, int(math.ceil(dimensions[1] / scale)))
    shape = (max(i1 - i0, 0), max(j1 - j0, 0))
    tumor = np.zeros(shape, dtype=bool)
    for polygon in geoms:  # frame change: level-0 px -> window pixels of the level-`level` mask
        xs, ys = np.asarray(polygon.exterior.coords).T
        tumor[draw.polygon(ys / scale - i0, xs / scale - j0, shape)] = True
    for polygon in geoms:
        for ring in polygon.interiors:
            xs, ys = np.asarray(ring.coords).T
            tumor[draw.polygon(ys / scale - i0, xs / scale - j0, shape)] = False
    if not tumor.any():
        return np.zeros(shape, dtype=np.int32), (i0, j0)
    distance = ndimage.distance_transform_edt(~tumor)  # to the nearest tumor pixel, as EDT(255 - mask)
    filled = ndimage.binary_fill_holes(distance < threshold)
    return measure.label(filled, connectivity=2).astype(np.int32), (i0, j0)


def itc_labels(labels: np.ndarray, resolution: float, level: int = MASK_LEVEL) -> np.ndarray:
    """Return the labels that are isolated tumor cells (``computeITCList``): major axis < 275 um.

    The major axis is ``skimage.measure.regionprops``'s, in level-``level`` pixels, against
    ``275 / (resolution * 2**level)``.
    """
    from skimage import measure

    threshold = 275 / (resolution * 2**level)
    return np.array([r.label for r in measure.regionprops(labels) if r.axis_major_length < threshold], dtype=np.int64)


def official_froc(
    tp_scores: np.ndarray, fp_scores: np.ndarray, n_files: int, n_tumors: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the official FROC points (``computeFROC``): thresholds, AvgFP, sensitivity, ascending threshold.

    Args:
        tp_scores: float32, every label's score of every tumor slide (``TP_probs``: 0 for a
            missed tumor and for an ITC).
        fp_scores: float64, every false-positive detection's probability.
        n_files: the AvgFP's denominator (result files: every slide).
        n_tumors: the sensitivity's denominator (non-ITC regions).

    The thresholds are ``sorted(set(FPs + TPs))[1:]``: the lowest probability is dropped. At
    each, AvgFP counts FPs ``>=`` it in float64 and the sensitivity TPs ``>=`` it in float32
    (NumPy compares a float32 array with a Python float in float32), as the script does;
    its final (0, 0) point is :func:`core.evaluation.metrics.froc_score`'s anchor, not
    repeated here. Vectorised (two sorts and binary searches) instead of its loop, which is
    quadratic in the number of detections.
    """
    tp = np.sort(np.asarray(tp_scores, dtype=np.float32).ravel())
    fp = np.sort(np.asarray(fp_scores, dtype=np.float64).ravel())
    values = np.unique(np.concatenate([fp, tp.astype(np.float64)]))  # set(): float32 values equal as float64
    thresholds = values[1:]
    n_fp = fp.size - np.searchsorted(fp, thresholds, side="left")
    n_tp = tp.size - np.searchsorted(tp, thresholds.astype(np.float32), side="left")
    with np.errstate(invalid="ignore", divide="ignore"):
        avg_fp = n_fp / float(n_files) if n_files else np.full(thresholds.size, np.nan)
        sensitivity = n_tp / float(n_tumors) if n_tumors else np.full(thresholds.size, np.nan)
    return thresholds, avg_fp, sensitivity


class Camelyon16Mode:
    """The official Camelyon16 FROC (``mode="camelyon16"``), number for number.

    Per slide (``compute_FP_TP_Probs``): the evaluation mask of its tumors
    (:func:`evaluation_mask`), the ITCs (:func:`itc_labels`); each detection (NMS on patch
    centres, written as whole level-0 pixels as in the CSV) is looked up at
    ``mask[int(y / 32), int(x / 32)]``: outside every region a false positive, in an ITC
    ignored, else it raises that region's float32 score (starting at 0) when greater. A slide
    without tumor annotations is a normal slide: all its detections are false positives.
    Then :func:`official_froc` over all slides and the mean sensitivity at AvgFP 1/4 .. 8.

    Resolution: ``CAMELYON16_MPP`` (0.243 um/px) for every slide unless one is given, which
    is what makes the score comparable with the challenge's leaderboard.
    """

    name = "camelyon16"
    fp_slides_kind = "slides"

    def __init__(self, mpp: Mapping[str, float], nms_radius_um: float | None = None, dimensions: Mapping[str, tuple[int, int]] | None = None) -> None:
        self.mpp = dict(mpp)
        self.nms_radius_um = nms_radius_um
        self.dimensions = dict(dimensions or {})
        self.n_itc = self.n_detections = self.n_fp_detections = 0
        self._tp_all: list[np.ndarray] = []  # every label's TP_probs, ITCs included (their 0s enter the set)

    def score_slide(self, patches):
        """Return the slide's non-ITC region scores (float32, 0 when missed) and false-positive probabilities."""
        from core.evaluation.patch_mode import SlideFROC

        x, y, w, h, prob = patches.x, patches.y, patches.width, patches.height, patches.prob
        mpp = self.mpp[patches.slide]
        keep = detections(x, y, w, h, prob, mpp, self.nms_radius_um)
        self.n_detections += keep.size
        # Detections as the CSV writes them: whole level-0 pixels of the patch centres.
        cx = np.floor(x[keep] + w[keep] / 2).astype(np.int64)
        cy = np.floor(y[keep] + h[keep] / 2).astype(np.int64)
        dprob = prob[keep].astype(np.float64)
        labels, (i0, j0) = evaluation_mask(patches.tumors, mpp, self.dimensions.get(patches.slide)) if patches.tumors else (
            np.zeros((0, 0), dtype=np.int32), (0, 0))
        n_labels = int(labels.max()) if labels.size else 0
        if n_labels == 0:
            self.n_fp_detections += dprob.size
            return SlideFROC(np.zeros(0, dtype=np.float32), dprob, 0)
        scale = 2**MASK_LEVEL
        i, j = cy // scale - i0, cx // scale - j0  # int(y / 32): floor for level-0 pixels >= 0
        inside = (i >= 0) & (j >= 0) & (i < labels.shape[0]) & (j < labels.shape[1])
        hit = np.zeros(dprob.size, dtype=np.int64)
        hit[inside] = labels[i[inside], j[inside]]
        itc = itc_labels(labels, mpp)
        is_itc = np.isin(hit, itc)
        tp = np.zeros(n_labels, dtype=np.float32)
        counted = (hit > 0) & ~is_itc
        np.maximum.at(tp, hit[counted] - 1, dprob[counted].astype(np.float32))
        fp = dprob[hit == 0]
        self.n_fp_detections += fp.size
        self.n_itc += itc.size
        self._tp_all.append(tp)
        non_itc = np.setdiff1d(np.arange(1, n_labels + 1), itc) - 1
        return SlideFROC(tp[non_itc], fp, int(non_itc.size))

    def n_fp_slides(self, is_tumor: np.ndarray, patch_slides: Sequence[str]) -> int:
        """Return the AvgFP's denominator: every slide (the script divides by its result files)."""
        return len(patch_slides)

    def froc(self, tumor_scores: np.ndarray, fp_scores: np.ndarray, n_fp_slides: int, *, tumor_slides: Sequence[str]):
        """Return the official FROC curve (:func:`official_froc`) as a :class:`~core.evaluation.metrics.FROCCurve`."""
        from core.evaluation.metrics import FROC_TARGETS, FROCCurve, froc_score

        n_tumors = int(np.asarray(tumor_scores).size)
        tp_all = np.concatenate(self._tp_all) if self._tp_all else np.zeros(0, dtype=np.float32)
        thresholds, avg_fp, sensitivity = official_froc(tp_all, fp_scores, n_fp_slides, n_tumors)
        reason = None
        if n_tumors == 0:
            reason = "FROC undefined: there are no tumors to detect"
        elif n_fp_slides == 0:
            reason = "FROC undefined: AvgFP needs slides, and there are none"
        # By descending threshold, as every FROCCurve; the script's (0, 0) point is froc_score's anchor.
        avg_desc, sens_desc = avg_fp[::-1].astype(np.float64), sensitivity[::-1].astype(np.float64)
        score, target = (None, np.zeros(0)) if reason else froc_score(avg_desc, sens_desc, FROC_TARGETS)
        scores = np.asarray(tumor_scores, dtype=np.float64)
        hit_scores = np.where(scores > 0, scores, -np.inf)  # a 0 never passes a threshold (the lowest is dropped)
        return FROCCurve(
            thresholds=thresholds[::-1].copy(), sensitivity=sens_desc, avg_fp=avg_desc, n_tumors=n_tumors,
            n_fp_slides=int(n_fp_slides), tumor_scores=hit_scores, tumor_slides=tuple(tumor_slides),
            fp_scores_sorted=np.sort(np.asarray(fp_scores, dtype=np.float64)), tumor_scores_sorted=np.sort(scores[scores > 0]),
            score=score, score_reason=reason, target_sensitivity=target,
        )

    def details(self) -> CamelyonDetails:
        """Return what this mode counted (call after every slide is scored)."""
        return CamelyonDetails(
            self.n_itc, self.n_detections, self.n_fp_detections, DILATION_UM, ITC_MAJOR_AXIS_UM, self.nms_radius_um, self.mpp
        )
