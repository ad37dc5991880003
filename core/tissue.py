"""Tissue detection on a low-resolution view of a slide.

The mask is Otsu's threshold on the HSV saturation of a low-resolution level: stained tissue
is coloured, glass and background are grey or white. Small specks are removed and small holes
filled. The mask keeps its scale, so any level-0 box can ask what share of it is tissue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.filters import threshold_otsu
from skimage.morphology import remove_small_holes, remove_small_objects

from core.slide_io import Slide

# Below this saturation nothing is tissue, whatever Otsu says (a blank slide has only noise).
MIN_SATURATION = 0.05


@dataclass(frozen=True)
class TissueMask:
    """A boolean tissue mask and its scale.

    ``mask[r, c]`` covers level-0 pixels x in [c * downsample_x, (c + 1) * downsample_x),
    y likewise with ``downsample_y``.
    """

    mask: np.ndarray
    downsample_x: float
    downsample_y: float

    @property
    def tissue_fraction(self) -> float:
        """Share of the slide area that is tissue, in [0, 1]."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def fraction_in_boxes(self, x: np.ndarray, y: np.ndarray, width, height) -> np.ndarray:
        """Return the tissue fraction in [0, 1] of each level-0 box (x, y, width, height).

        Uses a summed-area table over the mask, so the cost is O(1) per box. Boxes are
        snapped outward to whole mask pixels.
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        width = np.broadcast_to(np.asarray(width, dtype=np.float64), x.shape)
        height = np.broadcast_to(np.asarray(height, dtype=np.float64), x.shape)
        rows, cols = self.mask.shape
        # Frame change: level-0 pixels -> mask pixels.
        c0 = np.clip(np.floor(x / self.downsample_x), 0, cols).astype(np.int64)
        c1 = np.clip(np.ceil((x + width) / self.downsample_x), 0, cols).astype(np.int64)
        r0 = np.clip(np.floor(y / self.downsample_y), 0, rows).astype(np.int64)
        r1 = np.clip(np.ceil((y + height) / self.downsample_y), 0, rows).astype(np.int64)
        table = np.zeros((rows + 1, cols + 1), dtype=np.int64)
        table[1:, 1:] = self.mask.astype(np.int64).cumsum(0).cumsum(1)
        inside = table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]
        area = (r1 - r0) * (c1 - c0)
        return np.where(area > 0, inside / np.maximum(area, 1), 0.0)


def saturation(rgb: np.ndarray) -> np.ndarray:
    """Return the HSV saturation of an RGB uint8 image as float32 in [0, 1]."""
    rgb = rgb.astype(np.float32)
    high = rgb.max(axis=2)
    low = rgb.min(axis=2)
    return np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0).astype(np.float32)


def mask_from_rgb(rgb: np.ndarray, *, min_object_px: int = 16, max_hole_px: int = 16) -> np.ndarray:
    """Return a boolean tissue mask of an RGB image (Otsu on saturation, cleaned).

    Args:
        rgb: uint8 (height, width, 3).
        min_object_px: connected tissue specks smaller than this (in image pixels) are dropped.
        max_hole_px: holes smaller than this (in image pixels) are filled.
    """
    sat = saturation(rgb)
    if float(sat.max()) < MIN_SATURATION:
        return np.zeros(sat.shape, dtype=bool)
    try:
        threshold = max(float(threshold_otsu(sat)), MIN_SATURATION)
    except ValueError:  # a constant image has no threshold
        threshold = MIN_SATURATION
    mask = sat > threshold
    # Very dark pixels (pen marks, folds, slide edges) are not tissue to analyse.
    mask &= rgb.max(axis=2) > 40
    if min_object_px > 1:
        mask = remove_small_objects(mask, max_size=min_object_px - 1)
    if max_hole_px > 1:
        mask = remove_small_holes(mask, max_size=max_hole_px - 1)
    return mask


def mask_level(slide: Slide, max_size: int) -> int | None:
    """Return the finest level whose longer side is at most ``max_size`` px, or None."""
    for level in range(slide.level_count):
        if max(slide.level_dimensions[level]) <= max_size:
            return level
    return None


def tissue_mask(slide: Slide, *, max_size: int = 2048, min_object_area: float = 128 * 128) -> TissueMask:
    """Return the tissue mask of a slide computed on a low-resolution view.

    Args:
        max_size: longest side in pixels of the view the mask is computed on (the finest
            pyramid level that fits, else a thumbnail of that size).
        min_object_area: tissue specks and holes smaller than this many level-0 square
            pixels are removed / filled.

    Raises:
        SlideError: the slide cannot be decoded, or it has no level small enough to make the
            low-resolution view from (a single-level image of more than 2 Gpx; see
            :meth:`core.slide_io.Slide.thumbnail`, which reads large levels piece by piece).
    """
    level = mask_level(slide, max_size)
    width0, height0 = slide.dimensions
    if level is not None:
        rgb = slide.read_level(level)
    else:
        rgb = slide.thumbnail(max_size)
    rows, cols = rgb.shape[:2]
    downsample_x, downsample_y = width0 / cols, height0 / rows
    min_px = max(1, int(round(min_object_area / (downsample_x * downsample_y))))
    mask = mask_from_rgb(rgb, min_object_px=min_px, max_hole_px=min_px)
    return TissueMask(mask=mask, downsample_x=downsample_x, downsample_y=downsample_y)
