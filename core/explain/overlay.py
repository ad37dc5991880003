"""Pictures of maps: a heat map over the patch, and grids of small images (filters, feature maps).

Plain numpy + a matplotlib colormap (no pyplot, no streamlit). The Grad-CAM overlay follows the
source material: the heat map rescaled (to 0..1) and smoothed, coloured, laid over the image.
Signed maps (occlusion, LIME, IG) use a diverging colormap centred on 0 (red: supports the
output, blue: against it).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from scipy import ndimage

from core.errors import ExplainError

__all__ = ["normalize_map", "colorize", "overlay", "overlay_explanation", "montage", "rescale_uint8"]

# The colormap each method is drawn with by default.
DEFAULT_CMAPS = {"gradcam": "jet", "saliency": "inferno", "smoothgrad": "inferno"}
SIGNED_CMAP = "RdBu_r"


class Drawable(Protocol):
    """What ``overlay_explanation`` reads of an explanation (``core.explain.base.Explanation``).

    A protocol, not an import: ``base`` imports this module, never the other way round.
    """

    method: str
    map: np.ndarray
    signed: bool
    extras: dict


def normalize_map(heatmap: np.ndarray, signed: bool = False, percentile: float = 100.0) -> np.ndarray:
    """Return the map rescaled to [0, 1] (float32).

    Unsigned: 0 -> 0, the ``percentile``-th percentile (default the max) -> 1, negative values
    clipped. Signed: 0 -> 0.5, +-the ``percentile``-th percentile of |map| -> 1 / 0.
    A constant-zero map gives all 0 (unsigned) or all 0.5 (signed).
    """
    h = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if signed:
        scale = float(np.percentile(np.abs(h), percentile)) if h.size else 0.0
        if scale <= 0:
            return np.full(h.shape, 0.5, dtype=np.float32)
        return (0.5 + 0.5 * np.clip(h / scale, -1.0, 1.0)).astype(np.float32)
    h = np.clip(h, 0.0, None)
    scale = float(np.percentile(h, percentile)) if h.size else 0.0
    if scale <= 0:
        return np.zeros(h.shape, dtype=np.float32)
    return np.clip(h / scale, 0.0, 1.0).astype(np.float32)


def colorize(values01: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """Return H x W x 3 uint8 colours of a [0, 1] map through a matplotlib colormap."""
    from matplotlib import colormaps

    try:
        colormap = colormaps[cmap]
    except KeyError:
        raise ExplainError(f"unknown colormap {cmap!r}") from None
    rgba = colormap(np.clip(values01, 0.0, 1.0))
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    *,
    signed: bool = False,
    alpha: float = 0.5,
    cmap: str | None = None,
    smooth_sigma: float = 0.0,
    percentile: float = 100.0,
    segments: np.ndarray | None = None,
) -> np.ndarray:
    """Return the coloured map blended over the image, H x W x 3 uint8.

    Args:
        image: H x W x 3 uint8 RGB patch.
        heatmap: H x W map aligned with it.
        signed: diverging colours centred on 0 (else 0 = no colour weight, max = full).
        alpha: opacity of the colours at the map's extremes, 0..1; the opacity falls with
            sqrt(|value|), so the tissue stays visible where the map is 0.
        smooth_sigma: Gaussian smoothing of the map before colouring, px.
        percentile: the value drawn at full colour (clips outliers, e.g. 99 for saliency).
        segments: superpixel labels: their boundaries are drawn (LIME).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ExplainError(f"overlay needs an H x W x 3 uint8 image, got {image.shape} {image.dtype}")
    h = np.asarray(heatmap, dtype=np.float32)
    if h.shape != image.shape[:2]:
        raise ExplainError(f"the map ({h.shape}) is not aligned with the image ({image.shape[:2]})")
    if smooth_sigma > 0:
        h = ndimage.gaussian_filter(h, sigma=smooth_sigma, mode="nearest")
    values = normalize_map(h, signed=signed, percentile=percentile)
    colours = colorize(values, cmap or (SIGNED_CMAP if signed else "jet")).astype(np.float32)
    # Where the map is 0 the patch shows through: the colour's weight grows with |value|.
    strength = np.abs(2.0 * values - 1.0) if signed else values
    weight = (float(alpha) * np.sqrt(strength))[..., None]
    out = image.astype(np.float32) * (1.0 - weight) + colours * weight
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if segments is not None:
        from skimage.segmentation import find_boundaries

        out[find_boundaries(segments, mode="inner")] = (255, 255, 0)
    return out


def overlay_explanation(explanation: Drawable, image: np.ndarray, alpha: float = 0.5, cmap: str | None = None) -> np.ndarray:
    """Return the overlay of an Explanation with its method's colours (LIME: superpixel boundaries too)."""
    method = explanation.method
    return overlay(
        image,
        explanation.map,
        signed=explanation.signed,
        alpha=alpha,
        cmap=cmap or DEFAULT_CMAPS.get(method),
        # Grad-CAM per the source material: rescaled and smoothed; gradient maps clip outliers.
        smooth_sigma=max(1.0, min(image.shape[:2]) / 64.0) if method == "gradcam" else 0.0,
        percentile=99.0 if method in ("saliency", "smoothgrad", "ig") else 100.0,
        segments=explanation.extras.get("segments") if method == "lime" else None,
    )


def rescale_uint8(array: np.ndarray) -> np.ndarray:
    """Return ``array`` min-max rescaled to 0..255 uint8 (a constant array gives 128)."""
    a = np.asarray(array, dtype=np.float64)
    low, high = float(a.min()), float(a.max())
    if high <= low:
        return np.full(a.shape, 128, dtype=np.uint8)
    return np.round((a - low) / (high - low) * 255.0).astype(np.uint8)


def montage(tiles: np.ndarray, cols: int | None = None, pad: int = 1, pad_value: int = 255, scale: int = 1) -> np.ndarray:
    """Return N small images (N x h x w or N x h x w x 3, uint8) laid out in a grid, row-major.

    Args:
        cols: tiles per row (default: about sqrt(N)).
        pad: pixels between tiles, filled with ``pad_value``.
        scale: integer upscaling of each tile (nearest neighbour: filters are 3 x 3 px).
    """
    tiles = np.asarray(tiles)
    if tiles.ndim not in (3, 4) or tiles.shape[0] == 0:
        raise ExplainError(f"montage needs N x h x w (x 3) tiles, got shape {tiles.shape}")
    if tiles.dtype != np.uint8:
        raise ExplainError(f"montage needs uint8 tiles, got {tiles.dtype}")
    n = tiles.shape[0]
    if scale > 1:
        tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    th, tw = tiles.shape[1:3]
    shape = (rows * th + (rows + 1) * pad, cols * tw + (cols + 1) * pad) + tiles.shape[3:]
    grid = np.full(shape, pad_value, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (th + pad), pad + c * (tw + pad)
        grid[y : y + th, x : x + tw] = tiles[i]
    return grid
