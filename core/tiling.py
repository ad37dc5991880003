"""The patch grid over tissue, how its patches are read, and inner-square labels.

A patch is a square of ``patch_size`` pixels given to the model; it is stored by its
level-0 top-left corner (x, y) and its level-0 side ``size0``. Its scale is set one of two ways:

* **By physical resolution** (``TilingParams.mpp``, microns per patch pixel, what a
  checkpoint records): each slide is read at the best level at or finer than that resolution,
  then resized (as OpenSlide users do with ``get_best_level_for_downsample``), so a 40x
  scan, a 20x scan, a single-level TIFF and a PNG with a given mpp all give the model the
  same physical patch. The slide's own mpp comes from its metadata or from the user.
* **By pyramid level** (``TilingParams.level``, ``mpp`` None): a fallback for cohorts without
  resolution metadata; the patch is ``patch_size`` pixels of that level, no resize.

:func:`read_plan` turns either into a :class:`ReadPlan` for one slide. Grid corners are
multiples of the read level's (rounded) downsample: OpenSlide reads at level > 0 cost ~4x
more when they are not. A patch is *positive* iff its inner square (centred, side
``inner_fraction`` x the patch side) intersects a tumor; touching the outline counts.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import shapely
from PIL import Image
from shapely.geometry.base import BaseGeometry

from core.errors import SlideError
from core.slide_io import Slide
from core.tissue import TissueMask, tissue_mask

DEFAULT_PATCH_SIZE = 512
DEFAULT_TISSUE_THRESHOLD = 0.25
DEFAULT_INNER_FRACTION = 0.5
#: Relative tolerance when comparing resolutions: a level whose mpp is within it of the
#: target is read as is (no resize); metadata rounding (0.2527 vs 0.25275) stays below it.
MPP_TOLERANCE = 2e-3

#: Resolutions a microscope scan can have, in um per level-0 pixel; metadata outside (e.g. a
#: TIFF's default 72 dpi, 352.8 um/px) is not a scan's resolution and counts as missing.
PLAUSIBLE_MPP = (0.01, 50.0)

log = logging.getLogger(__name__)


def slide_resolution(slide: Slide, slide_mpp: float | None = None) -> float | None:
    """Return the slide's microns per level-0 pixel: ``slide_mpp`` if given, else its metadata when plausible, else None."""
    if slide_mpp is not None:
        return float(slide_mpp)
    value = slide.mpp
    if value is not None and PLAUSIBLE_MPP[0] <= value <= PLAUSIBLE_MPP[1]:
        return float(value)
    return None


@dataclass(frozen=True)
class TilingParams:
    """How a slide is cut into patches; part of a prediction run's identity.

    Attributes:
        level: pyramid level of the patches (used only when ``mpp`` is None).
        patch_size: side in pixels of the patch given to the model.
        stride: grid step in patch pixels (default: the patch size).
        tissue_threshold: minimum tissue fraction of a kept patch.
        mpp: microns per patch pixel; when given, each slide is read at this resolution
            whatever its pyramid and ``level`` is ignored.
    """

    level: int = 0
    patch_size: int = DEFAULT_PATCH_SIZE
    stride: int | None = None
    tissue_threshold: float = DEFAULT_TISSUE_THRESHOLD
    mpp: float | None = None

    def __post_init__(self) -> None:
        if self.mpp is not None and not (math.isfinite(self.mpp) and self.mpp > 0):
            raise SlideError(f"the patch resolution must be a positive number of microns per pixel, got {self.mpp}")

    @property
    def step(self) -> int:
        """Grid step in patch pixels (the stride, default the patch size)."""
        return int(self.stride or self.patch_size)

    @property
    def by_resolution(self) -> bool:
        """True when patches are defined by physical resolution (``mpp``), not by level."""
        return self.mpp is not None

    def to_dict(self) -> dict:
        """Return the parameters as plain data, with the stride made explicit.

        Level-based params keep their historical form (no ``mpp`` key), so stored runs keep
        their identity; resolution-based params have ``mpp`` and no ``level``.
        """
        data = asdict(self)
        data["stride"] = self.step
        if self.mpp is None:
            del data["mpp"]
        else:
            del data["level"]
            data["mpp"] = float(self.mpp)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TilingParams:
        """Return the params of :meth:`to_dict`'s output."""
        return cls(
            level=int(data.get("level", 0) or 0), patch_size=int(data["patch_size"]), stride=data.get("stride"),
            tissue_threshold=float(data.get("tissue_threshold", DEFAULT_TISSUE_THRESHOLD)),
            mpp=None if data.get("mpp") is None else float(data["mpp"]),
        )


@dataclass(frozen=True)
class ReadPlan:
    """How one slide is read for the patches of one tiling (all sides in pixels).

    Attributes:
        level: the pyramid level read.
        downsample: that level's downsample.
        read_size: side of the region read at ``level`` for one patch (level pixels).
        patch_size: side of the patch given to the model (``read_size`` resized to it).
        size0: side of a patch in level-0 pixels.
        step0: grid step in level-0 pixels.
        unit: level-0 alignment of grid corners (the read level's rounded downsample).
        slide_mpp: microns per level-0 pixel of the slide used, or None when unknown.
        mpp: microns per patch pixel, or None when unknown (level-based, no slide mpp).
    """

    level: int
    downsample: float
    read_size: int
    patch_size: int
    size0: int
    step0: int
    unit: int
    slide_mpp: float | None
    mpp: float | None

    @property
    def resized(self) -> bool:
        """True when patches are resized after reading."""
        return self.read_size != self.patch_size


def missing_mpp_message(name: str, found: float | None = None) -> str:
    """Return the message for a slide without (usable) resolution metadata: what is missing and how to give it."""
    what = (
        f"{name} has no resolution metadata (microns per pixel)" if found is None
        else f"{name} says {found:.4g} microns per pixel, which is not a microscope scan's resolution (a TIFF's default 72 dpi?)"
    )
    return (
        f"{what}, which the model needs to cut patches at its "
        "resolution; give it with --mpp on the command line, the mpp column of cohort.csv, or the "
        "'Microns per pixel' field on the app's Review page (or cut by pyramid level with --level)"
    )


def read_plan(slide: Slide, params: TilingParams, slide_mpp: float | None = None) -> ReadPlan:
    """Return how ``slide`` is read for the patches of ``params``.

    Args:
        slide_mpp: microns per level-0 pixel given by the user; None: the slide's metadata.

    By resolution: the level read is the coarsest whose mpp is at or finer than the
    target (within :data:`MPP_TOLERANCE`); the region read there is resized to
    ``patch_size``. A slide coarser than the target is read at level 0 and enlarged (with a
    warning in the log).

    Raises:
        SlideError: no resolution for a resolution-based tiling (the message says how to
            give it), an unknown level, a bad size or mpp.
    """
    if params.patch_size < 1 or params.step < 1:
        raise SlideError(f"patch size and stride must be positive (got {params.patch_size}, {params.step})")
    if slide_mpp is not None and not (math.isfinite(slide_mpp) and slide_mpp > 0):
        raise SlideError(f"{slide.name}: microns per pixel must be a positive number, got {slide_mpp}")
    mpp0 = slide_resolution(slide, slide_mpp)
    if not params.by_resolution:
        slide.check_level(params.level)
        downsample = slide.level_downsamples[params.level]
        unit = alignment(downsample)
        return ReadPlan(
            params.level, downsample, params.patch_size, params.patch_size, int(round(params.patch_size * downsample)),
            params.step * unit, unit, mpp0, None if mpp0 is None else mpp0 * downsample,
        )
    if mpp0 is None:
        raise SlideError(missing_mpp_message(slide.name, slide.mpp))
    factor = params.mpp / mpp0  # level-0 pixels per patch pixel
    level = 0
    for index, downsample in enumerate(slide.level_downsamples):
        if downsample <= factor * (1 + MPP_TOLERANCE):
            level = index
    downsample = slide.level_downsamples[level]
    ratio = factor / downsample  # level pixels per patch pixel (>= 1 but for a coarse slide)
    read_size = params.patch_size if abs(ratio - 1) <= MPP_TOLERANCE else max(1, int(round(params.patch_size * ratio)))
    if ratio < 1 - MPP_TOLERANCE:
        log.warning("%s (%.4g um/px) is coarser than the patches (%.4g um/px): patches are enlarged %.2fx",
                    slide.name, mpp0, params.mpp, 1 / ratio)
    unit = alignment(downsample)
    size0 = int(round(params.patch_size * factor)) if read_size != params.patch_size else int(round(params.patch_size * downsample))
    step0 = max(unit, int(round(params.step * factor / unit)) * unit)
    return ReadPlan(level, downsample, read_size, params.patch_size, max(1, size0), step0, unit, mpp0, params.mpp)


def read_patches(slide: Slide, x: np.ndarray, y: np.ndarray, plan: ReadPlan) -> np.ndarray:
    """Return the patches at level-0 corners (x, y) as uint8 (N, patch_size, patch_size, 3) RGB.

    Each patch is the region of ``plan.read_size`` pixels at ``plan.level`` from its corner,
    resized to ``plan.patch_size`` with Pillow's bilinear filter (antialiased when reducing)
    when the sizes differ. Runs of patches that touch side by side on one row are read as a
    single region and cut, so shared JPEG tiles are decoded once.
    """
    count = len(x)
    side, size = plan.read_size, plan.patch_size
    out = np.empty((count, size, size, 3), dtype=np.uint8)
    # Side-by-side reads are exact only when a patch spans a whole number of level pixels.
    joinable = plan.size0 == side * plan.unit and float(plan.unit) == float(plan.downsample)
    start = 0
    while start < count:
        end = start + 1
        while joinable and end < count and y[end] == y[start] and x[end] - x[end - 1] == plan.size0:
            end += 1
        run = end - start
        region = slide.read_region((int(x[start]), int(y[start])), plan.level, (side * run, side))
        # Frame change: the region is in level pixels; patch k starts at column k * side.
        cut = region.reshape(side, run, side, 3).transpose(1, 0, 2, 3)
        if side == size:
            out[start:end] = cut
        else:
            for k in range(run):
                out[start + k] = np.asarray(Image.fromarray(cut[k]).resize((size, size), Image.Resampling.BILINEAR))
        start = end
    return out


@dataclass(frozen=True)
class PatchGrid:
    """Patches of one slide: level-0 top-left corners, a common level-0 side, tissue fractions."""

    slide: str
    params: TilingParams
    plan: ReadPlan
    x: np.ndarray
    y: np.ndarray
    tissue: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return int(self.x.size)

    @property
    def size0(self) -> int:
        """Side of every patch in level-0 pixels."""
        return self.plan.size0

    @property
    def downsample(self) -> float:
        """Downsample of the level the patches are read at."""
        return self.plan.downsample

    @property
    def width(self) -> np.ndarray:
        """Level-0 width of each patch in pixels."""
        return np.full(self.x.shape, self.size0, dtype=np.int64)

    @property
    def height(self) -> np.ndarray:
        """Level-0 height of each patch in pixels."""
        return np.full(self.x.shape, self.size0, dtype=np.int64)

    def boxes(self) -> np.ndarray:
        """Return (N, 4) int64 level-0 boxes (x0, y0, x1, y1), x1/y1 exclusive."""
        return np.stack([self.x, self.y, self.x + self.size0, self.y + self.size0], axis=1)

    def subset(self, keep: np.ndarray) -> PatchGrid:
        """Return the grid restricted to a boolean mask or index array."""
        return PatchGrid(self.slide, self.params, self.plan, self.x[keep], self.y[keep], self.tissue[keep])


def alignment(downsample: float) -> int:
    """Return the level-0 alignment unit for a level: its downsample rounded to an integer >= 1."""
    return max(1, int(round(downsample)))


def grid_corners(dimensions: tuple[int, int], downsample: float, patch_size: int, step: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Return level-0 corners (x, y) of every whole patch of a regular grid, and the level-0 side.

    Corners are ``col * step * round(downsample)`` (so multiples of the rounded downsample);
    only patches that lie wholly inside the slide are kept.
    """
    unit = alignment(downsample)
    x, y = plan_corners(dimensions, int(round(patch_size * downsample)), step * unit)
    return x, y, int(round(patch_size * downsample))


def plan_corners(dimensions: tuple[int, int], size0: int, step0: int) -> tuple[np.ndarray, np.ndarray]:
    """Return level-0 corners (x, y), row by row, of every patch of side ``size0`` wholly inside the slide.

    An image narrower (or lower) than one patch gets one patch at 0 in that direction, padded
    with white beyond the image (OpenSlide reads outside a slide as transparent), so a small
    image still has a patch.
    """
    width0, height0 = dimensions
    xs = np.arange(0, max(width0 - size0, 0) + 1, step0, dtype=np.int64)
    ys = np.arange(0, max(height0 - size0, 0) + 1, step0, dtype=np.int64)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")  # row-major: y then x
    return gx.ravel(), gy.ravel()


def tile_grid(
    slide: Slide,
    params: TilingParams | None = None,
    *,
    mask: TissueMask | None = None,
    slide_mpp: float | None = None,
) -> PatchGrid:
    """Return the patches of ``slide`` whose tissue fraction exceeds ``params.tissue_threshold``.

    Corners are in level-0 pixels, ordered row by row. ``tissue_threshold`` 0 keeps every
    patch of the grid (a plain image without background, for instance). ``slide_mpp``:
    microns per level-0 pixel given by the user (None: the slide's metadata); see
    :func:`read_plan`.

    Raises:
        SlideError: see :func:`read_plan`.
    """
    params = params or TilingParams()
    plan = read_plan(slide, params, slide_mpp)
    x, y = plan_corners(slide.dimensions, plan.size0, plan.step0)
    if params.tissue_threshold > 0:
        if mask is None:
            # ~16 mask pixels per patch side are plenty for a tissue fraction; a coarser
            # view is faster to read and clean (0.1 s instead of 0.35 s on a demo slide).
            max_size = int(np.clip(16 * max(slide.dimensions) / max(plan.size0, 1), 512, 2048))
            mask = tissue_mask(slide, max_size=max_size)
        tissue = mask.fraction_in_boxes(x, y, plan.size0, plan.size0)
        keep = tissue > params.tissue_threshold
    else:
        tissue = np.ones(x.shape, dtype=np.float64)
        keep = np.ones(x.shape, dtype=bool)
    return PatchGrid(slide.name, params, plan, x[keep], y[keep], tissue[keep])


def inner_squares(x, y, width, height, inner_fraction: float = DEFAULT_INNER_FRACTION) -> np.ndarray:
    """Return (N, 4) float level-0 boxes (x0, y0, x1, y1) of the centred inner squares.

    The inner box has side ``inner_fraction`` x the patch side and the same centre.
    """
    if not 0 < inner_fraction <= 1:
        raise ValueError(f"inner_fraction must be in (0, 1], got {inner_fraction}")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    width = np.broadcast_to(np.asarray(width, dtype=np.float64), x.shape)
    height = np.broadcast_to(np.asarray(height, dtype=np.float64), x.shape)
    margin_x = width * (1 - inner_fraction) / 2
    margin_y = height * (1 - inner_fraction) / 2
    return np.stack([x + margin_x, y + margin_y, x + width - margin_x, y + height - margin_y], axis=1)


def inner_square_hits(
    x, y, width, height, tumors: list[BaseGeometry], inner_fraction: float = DEFAULT_INNER_FRACTION
) -> tuple[np.ndarray, np.ndarray]:
    """Return which patches touch which tumors, as index pairs (patch_index, tumor_index).

    A patch hits a tumor iff its inner square intersects the tumor polygon (closed sets:
    touching counts). Uses a shapely STRtree, so a 100k-patch slide takes milliseconds.
    """
    boxes = inner_squares(x, y, width, height, inner_fraction)
    if len(tumors) == 0 or boxes.shape[0] == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    squares = shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])
    tree = shapely.STRtree(list(tumors))
    patch_index, tumor_index = tree.query(squares, predicate="intersects")
    return patch_index.astype(np.int64), tumor_index.astype(np.int64)


def label_patches(x, y, width, height, tumors: list[BaseGeometry], inner_fraction: float = DEFAULT_INNER_FRACTION) -> np.ndarray:
    """Return a boolean array: True where the patch's inner square intersects some tumor."""
    labels = np.zeros(np.asarray(x).shape, dtype=bool)
    patch_index, _ = inner_square_hits(x, y, width, height, tumors, inner_fraction)
    labels[patch_index] = True
    return labels


def label_grid(grid: PatchGrid, tumors: list[BaseGeometry], inner_fraction: float = DEFAULT_INNER_FRACTION) -> np.ndarray:
    """Return the inner-square labels (bool) of a patch grid's patches."""
    return label_patches(grid.x, grid.y, grid.size0, grid.size0, tumors, inner_fraction)
