"""The FROC of the source material (``mode="patch"``): tumors hit by patches, false positives on normal slides.

For each threshold ``t``: sensitivity = the share of all tumors (connected annotated regions,
all slides) holding at least one patch with ``F(I) >= t`` (a patch is in a tumor iff its
inner square intersects it); AvgFP = the mean over normal slides of the number of patches
with ``F(I) >= t``. A tumor's *score* is therefore the largest probability of the patches
hitting it, and it is detected at ``t`` iff its score ``>= t``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from shapely.geometry.base import BaseGeometry

from core.tiling import DEFAULT_INNER_FRACTION, inner_square_hits, inner_squares

__all__ = ["PatchMode", "SlideFROC", "SlidePatches", "patch_tumor_hits"]


class SlidePatches(NamedTuple):
    """One slide's patch predictions and how they meet its tumors (level-0 px)."""

    slide: str
    is_tumor_slide: bool
    x: np.ndarray
    y: np.ndarray
    width: np.ndarray
    height: np.ndarray
    prob: np.ndarray
    tumors: list
    hit_patch: np.ndarray  # (patch, tumor) pairs whose inner square meets the tumor
    hit_tumor: np.ndarray


class SlideFROC(NamedTuple):
    """What one slide adds to the FROC: scores of its counted tumors, its false-positive probabilities."""

    tumor_scores: np.ndarray  # per counted tumor, the best probability hitting it (-inf: none)
    fp_scores: np.ndarray
    n_tumors: int


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


class PatchMode:
    """The source material's FROC: every patch of a normal slide is a false positive candidate."""

    name = "patch"
    #: What the AvgFP's denominator counts (for the reason of an undefined score).
    fp_slides_kind = "normal slides"

    def score_slide(self, patches: SlidePatches) -> SlideFROC:
        """Return the slide's tumor scores (best patch hitting each tumor) and false-positive probabilities."""
        best = np.full(len(patches.tumors), -np.inf)
        np.maximum.at(best, patches.hit_tumor, patches.prob[patches.hit_patch])
        fp = np.zeros(0) if patches.is_tumor_slide else patches.prob
        return SlideFROC(best, fp, len(patches.tumors))

    def n_fp_slides(self, is_tumor: np.ndarray, patch_slides: Sequence[str]) -> int:
        """Return the AvgFP's denominator: the cohort's normal slides."""
        return int(np.count_nonzero(~np.asarray(is_tumor, dtype=bool)))

    def details(self) -> None:
        """Return nothing: the patch mode has no details beyond the curve."""
        return None
