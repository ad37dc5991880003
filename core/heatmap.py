"""Probability heatmaps: patch predictions on a regular grid, rendered over a slide picture.

The predictions of a run sit on the tiling grid, so they become a 2-D array with one cell per
grid step (NaN where no patch was predicted, e.g. background). Rendering maps each pixel of
a picture of the slide (a thumbnail, a viewer tile) back to a grid cell through level-0
coordinates; colours come from a matplotlib colour map. Nothing here imports streamlit.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from PIL import Image

#: The default colour map first: viridis's upper half (green to yellow) stands apart from H&E's
#: pinks and purples, and its dark low end is transparent under "transparent low F(I)".
COLORMAPS = ("viridis", "inferno", "magma", "plasma", "turbo", "RdYlBu_r", "jet")
DEFAULT_COLORMAP = COLORMAPS[0]
#: "Transparent low F(I)": alpha 0 up to FADE_FROM, full from FADE_FULL (linear in between).
FADE_FROM, FADE_FULL = 0.2, 0.7
#: Outline of the regions with F(I) >= t: cyan (no H&E stain and no colour map's top end is cyan)
#: over a dark halo, OUTLINE_WIDTH picture pixels wide at every zoom.
OUTLINE_RGB = (0, 255, 255)
OUTLINE_HALO_RGB = (0, 40, 60)
OUTLINE_WIDTH = 2


@dataclass(frozen=True)
class ProbabilityGrid:
    """Probabilities on the tiling grid.

    ``values[r, c]`` is F(I) in [0, 1] (NaN: no patch) of the patch whose display cell covers
    level-0 x in [x0 + c * step0, x0 + (c + 1) * step0), y likewise. For overlapping patches
    (stride < size) the cell is the central ``step0`` square of the patch.
    """

    values: np.ndarray
    x0: float
    y0: float
    step0: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape


def probability_grid(x: np.ndarray, y: np.ndarray, prob: np.ndarray, size0: float, step0: float | None = None) -> ProbabilityGrid:
    """Return the grid of probabilities of patches with level-0 corners (x, y) and side ``size0``.

    ``step0`` (level-0 grid step) defaults to the smallest positive spacing of the corners,
    or ``size0`` when there is a single patch.
    """
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float32)
    if x.size == 0:
        return ProbabilityGrid(np.full((0, 0), np.nan, np.float32), 0.0, 0.0, float(size0))
    if step0 is None:
        spacings = np.concatenate([np.diff(np.unique(x)), np.diff(np.unique(y))])
        step0 = float(spacings.min()) if spacings.size else float(size0)
    xmin, ymin = x.min(), y.min()
    cols = np.rint((x - xmin) / step0).astype(np.int64)
    rows = np.rint((y - ymin) / step0).astype(np.int64)
    values = np.full((rows.max() + 1, cols.max() + 1), np.nan, dtype=np.float32)
    values[rows, cols] = prob
    margin = (size0 - step0) / 2
    return ProbabilityGrid(values, float(xmin + margin), float(ymin + margin), float(step0))


def _cells(grid: ProbabilityGrid, width: int, height: int, origin: tuple[float, float], scale: float):
    """Return per-output-pixel (rows, cols, inside) index arrays into ``grid.values``."""
    # Frame change: output pixel centre -> level-0 -> grid cell.
    px = origin[0] + (np.arange(width) + 0.5) * scale
    py = origin[1] + (np.arange(height) + 0.5) * scale
    cols = np.floor((px - grid.x0) / grid.step0).astype(np.int64)
    rows = np.floor((py - grid.y0) / grid.step0).astype(np.int64)
    n_rows, n_cols = grid.shape
    col_ok = (cols >= 0) & (cols < n_cols)
    row_ok = (rows >= 0) & (rows < n_rows)
    return np.clip(rows, 0, max(n_rows - 1, 0)), np.clip(cols, 0, max(n_cols - 1, 0)), row_ok[:, None] & col_ok[None, :]


def fade_weight(values: np.ndarray) -> np.ndarray:
    """Return the alpha weight in [0, 1] of probabilities under "transparent low F(I)".

    0 up to ``FADE_FROM`` (low probabilities leave the tissue untouched: no grey veil over glass
    or normal tissue), rising linearly to 1 at ``FADE_FULL`` and above.
    """
    values = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0)
    return np.clip((values - FADE_FROM) / (FADE_FULL - FADE_FROM), 0.0, 1.0)


def _dilate(mask: np.ndarray) -> np.ndarray:
    """Return ``mask`` dilated by one pixel (4-neighbourhood)."""
    out = mask.copy()
    out[1:, :] |= mask[:-1, :]
    out[:-1, :] |= mask[1:, :]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def render_overlay(
    grid: ProbabilityGrid,
    size: tuple[int, int],
    *,
    origin: tuple[float, float] = (0.0, 0.0),
    scale: float = 1.0,
    colormap: str = DEFAULT_COLORMAP,
    opacity: float = 0.5,
    cut: float | None = None,
    outline: float | None = None,
    outline_color: tuple[int, int, int] = OUTLINE_RGB,
    outline_width: int = OUTLINE_WIDTH,
    fade: bool = False,
) -> np.ndarray:
    """Return an RGBA uint8 (height, width, 4) picture of the probabilities.

    Args:
        size: (width, height) of the picture in pixels.
        origin: level-0 (x, y) of the picture's top-left corner.
        scale: level-0 pixels per picture pixel.
        opacity: alpha in [0, 1] of cells with a prediction.
        cut: if set, cells with F(I) < cut are transparent.
        outline: if set, the border of the regions of cells with F(I) >= outline is drawn opaque,
            ``outline_width`` picture pixels of ``outline_color`` inside the region and one dark
            pixel outside it, so it reads over tissue, glass and every colour map. Borders on the
            picture's edge are found as well (the picture is rendered with a margin), so tiles
            side by side draw one continuous line.
        fade: "transparent low F(I)": scale each cell's alpha by :func:`fade_weight` (0 below
            ``FADE_FROM``, full from ``FADE_FULL``), so tissue the model finds normal is left
            as it is and the suspicious cells stand out.
    """
    width, height = size
    if grid.values.size == 0:
        return np.zeros((height, width, 4), dtype=np.uint8)
    margin = outline_width + 1 if outline is not None else 0
    # Frame change: a picture with ``margin`` extra pixels on every side (cropped at the end).
    full_w, full_h = width + 2 * margin, height + 2 * margin
    rows, cols, inside = _cells(grid, full_w, full_h, (origin[0] - margin * scale, origin[1] - margin * scale), scale)
    values = grid.values[rows[:, None], cols[None, :]]
    values = np.where(inside, values, np.nan)
    known = np.isfinite(values)
    rgba = np.zeros((full_h, full_w, 4), dtype=np.uint8)
    lut = (colormaps[colormap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    index = np.clip(np.nan_to_num(values, nan=0.0) * 255 + 0.5, 0, 255).astype(np.uint8)
    rgba[..., :3] = lut[index]
    shown = known if cut is None else known & (values >= cut)
    alpha = 255 * float(np.clip(opacity, 0, 1))
    if fade:
        rgba[..., 3] = np.where(shown, np.round(alpha * fade_weight(values)), 0).astype(np.uint8)
    else:
        rgba[..., 3] = np.where(shown, np.uint8(round(alpha)), 0)
    if outline is not None:
        above = known & (values >= outline)
        # The (margin-padded) picture's own edge is not a region border: erode with edge replication.
        band = above & ~_erode_keep_border(above, max(1, outline_width))
        outer = _dilate(above) & ~above
        rgba[outer, :3] = OUTLINE_HALO_RGB
        rgba[outer, 3] = 255
        rgba[band, :3] = outline_color
        rgba[band, 3] = 255
    if margin:
        rgba = rgba[margin : margin + height, margin : margin + width]
    return np.ascontiguousarray(rgba)


def outline_runs(grid: ProbabilityGrid, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the border of the regions of cells with F(I) >= ``threshold`` as runs of cell edges.

    The browser's viewer draws the t outlines from these runs (``app/viewer/viewer.js`` computes
    the same ones from the grid's values), so a t move needs no new overlay tile. The comparison
    is made in float32, the grid's precision.

    Returns:
        ``(horizontal, vertical)`` int64 arrays of shape (n, 3). A horizontal run ``(r, c0, c1)``
        is the edge between cell rows r - 1 and r (r in 0..rows) from column c0 to c1 (exclusive),
        i.e. level-0 y = ``y0 + r * step0``, x from ``x0 + c0 * step0`` to ``x0 + c1 * step0``;
        a vertical run ``(c, r0, r1)`` likewise along x = ``x0 + c * step0``. Runs are ordered
        by their first index, then the second. Cells outside the grid count as below t.
    """
    values = np.asarray(grid.values, dtype=np.float32)
    above = np.pad(values >= np.float32(threshold), 1)  # NaN (no patch) compares False
    horizontal = above[:-1, 1:-1] != above[1:, 1:-1]  # (rows + 1, cols): edge above cell row r
    vertical = above[1:-1, :-1] != above[1:-1, 1:]  # (rows, cols + 1): edge left of cell column c
    return _runs(horizontal), _runs(vertical.T)


def _runs(mask: np.ndarray) -> np.ndarray:
    """Return (row, start, end) of the runs of True along each row of ``mask`` (end exclusive)."""
    if mask.size == 0:
        return np.zeros((0, 3), dtype=np.int64)
    step = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)  # row-major order: the n-th end closes the n-th start
    return np.stack([rows, starts, ends], axis=1).astype(np.int64)


def _erode_keep_border(mask: np.ndarray, times: int) -> np.ndarray:
    """Return ``mask`` eroded ``times`` pixels, the picture's edge continuing the mask outward (not a border)."""
    padded = np.pad(mask, times, mode="edge")
    for _ in range(times):
        eroded = padded.copy()
        eroded[1:, :] &= padded[:-1, :]
        eroded[:-1, :] &= padded[1:, :]
        eroded[:, 1:] &= padded[:, :-1]
        eroded[:, :-1] &= padded[:, 1:]
        padded = eroded
    return padded[times:-times, times:-times]


def composite(base: np.ndarray, overlay: np.ndarray) -> np.ndarray:
    """Return RGB uint8: the RGBA ``overlay`` alpha-blended over the RGB ``base`` (same size)."""
    alpha = overlay[..., 3:4].astype(np.float32) / 255.0
    out = base.astype(np.float32) * (1 - alpha) + overlay[..., :3].astype(np.float32) * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def heatmap_over_thumbnail(
    thumbnail: np.ndarray,
    slide_dimensions: tuple[int, int],
    grid: ProbabilityGrid,
    **render: object,
) -> np.ndarray:
    """Return the thumbnail (RGB) with the probability overlay blended over it.

    The thumbnail covers the whole slide; its scale is level-0 width / thumbnail width.
    ``render`` takes the keyword arguments of ``render_overlay``.
    """
    height, width = thumbnail.shape[:2]
    scale = slide_dimensions[0] / width
    overlay = render_overlay(grid, (width, height), scale=scale, **render)
    return composite(thumbnail, overlay)


def png_bytes(image: np.ndarray) -> bytes:
    """Return ``image`` (RGB or RGBA uint8) encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
