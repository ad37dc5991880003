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

__all__ = [
    "colorize",
    "colour_scale_bar",
    "explanation_scale",
    "label_superpixels",
    "map_scale",
    "montage",
    "normalize_map",
    "overlay",
    "overlay_explanation",
    "rescale_uint8",
    "upscale_nearest",
    "with_colour_scale",
]

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


def map_scale(heatmap: np.ndarray, signed: bool = False, percentile: float = 100.0) -> float:
    """Return the map value drawn at full colour: the ``percentile``-th percentile of |map| (signed) or of max(map, 0).

    0 for an empty or all-zero map. :func:`normalize_map` and the colour scale use this value.
    """
    h = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    h = np.abs(h) if signed else np.clip(h, 0.0, None)
    return float(np.percentile(h, percentile)) if h.size else 0.0


def normalize_map(heatmap: np.ndarray, signed: bool = False, percentile: float = 100.0) -> np.ndarray:
    """Return the map rescaled to [0, 1] (float32).

    Unsigned: 0 -> 0, the ``percentile``-th percentile (default the max) -> 1, negative values
    clipped. Signed: 0 -> 0.5, +-the ``percentile``-th percentile of |map| -> 1 / 0.
    A constant-zero map gives all 0 (unsigned) or all 0.5 (signed).
    """
    h = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    scale = map_scale(h, signed, percentile)
    if signed:
        if scale <= 0:
            return np.full(h.shape, 0.5, dtype=np.float32)
        return (0.5 + 0.5 * np.clip(h / scale, -1.0, 1.0)).astype(np.float32)
    if scale <= 0:
        return np.zeros(h.shape, dtype=np.float32)
    return np.clip(np.clip(h, 0.0, None) / scale, 0.0, 1.0).astype(np.float32)


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


def _drawing(explanation: Drawable, image_shape: tuple[int, ...]) -> dict:
    """Return how a method's map is drawn: colormap, smoothing and the percentile drawn at full colour."""
    method = explanation.method
    return {
        "cmap": DEFAULT_CMAPS.get(method) or (SIGNED_CMAP if explanation.signed else "jet"),
        # Grad-CAM per the source material: rescaled and smoothed; gradient maps clip outliers.
        "smooth_sigma": max(1.0, min(image_shape[:2]) / 64.0) if method == "gradcam" else 0.0,
        "percentile": 99.0 if method in ("saliency", "smoothgrad", "ig") else 100.0,
    }


def overlay_explanation(explanation: Drawable, image: np.ndarray, alpha: float = 0.5, cmap: str | None = None) -> np.ndarray:
    """Return the overlay of an Explanation with its method's colours (LIME: superpixel boundaries too)."""
    how = _drawing(explanation, image.shape)
    return overlay(
        image,
        explanation.map,
        signed=explanation.signed,
        alpha=alpha,
        cmap=cmap or how["cmap"],
        smooth_sigma=how["smooth_sigma"],
        percentile=how["percentile"],
        segments=explanation.extras.get("segments") if explanation.method == "lime" else None,
    )


def explanation_scale(explanation: Drawable) -> tuple[str, float, float]:
    """Return (colormap, low, high): the map values drawn at the two ends of the overlay's colours.

    Signed maps: (-s, +s), 0 in the middle; unsigned: (0, s), where s is the value
    :func:`overlay_explanation` draws at full colour (after Grad-CAM's smoothing; the 99th
    percentile for the pixel-gradient maps, whose outliers are clipped).
    """
    how = _drawing(explanation, explanation.map.shape)
    h = np.asarray(explanation.map, dtype=np.float32)
    if how["smooth_sigma"] > 0:
        h = ndimage.gaussian_filter(h, sigma=how["smooth_sigma"], mode="nearest")
    s = map_scale(h, explanation.signed, how["percentile"])
    return how["cmap"], (-s if explanation.signed else 0.0), s


def _font(size: int):
    """Return a PIL font of about ``size`` px (DejaVu Sans when installed, else PIL's built-in font)."""
    from PIL import ImageFont

    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size)


def colour_scale_bar(cmap: str, low: float, high: float, width: int = 256, height: int | None = None) -> np.ndarray:
    """Return a horizontal colour scale, H x W x 3 uint8: the colormap from ``low`` (left) to ``high`` (right).

    The bar is ``height`` px tall (default width / 24, at least 10) and ``width`` px wide (column
    c shows the value low + (high - low) * c / (width - 1)); below it, in black on white, the
    values at both ends and 0 where the scale spans it, in a font of about width / 22 px, so the
    numbers stay legible when the picture is shrunk to a page column.
    """
    if width < 16 or (height is not None and height < 2):
        raise ExplainError(f"a colour scale needs at least 16 x 2 px, got {width} x {height}")
    from PIL import Image, ImageDraw

    height = height or max(10, width // 24)
    font_px = max(11, width // 22)
    bar = colorize(np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1)), cmap)
    canvas = Image.new("RGB", (width, height + font_px + 6), (255, 255, 255))
    canvas.paste(Image.fromarray(bar), (0, 0))
    draw = ImageDraw.Draw(canvas)
    font = _font(font_px)
    y = height + 2
    draw.text((0, y), f"{low:.3g}", fill=(0, 0, 0), font=font)
    draw.text((width, y), f"{high:.3g}", fill=(0, 0, 0), font=font, anchor="ra")
    if low < 0 < high:
        draw.text((round((width - 1) * -low / (high - low)), y), "0", fill=(0, 0, 0), font=font, anchor="ma")
    return np.asarray(canvas)


def with_colour_scale(picture: np.ndarray, cmap: str, low: float, high: float, gap: int = 4) -> np.ndarray:
    """Return ``picture`` (H x W x 3 uint8) with its colour scale below it: ``gap`` white rows, then
    :func:`colour_scale_bar` as wide as the picture. One image, so the scale travels with the map."""
    picture = np.asarray(picture)
    bar = colour_scale_bar(cmap, low, high, width=picture.shape[1])
    white = np.full((gap, picture.shape[1], 3), 255, dtype=np.uint8)
    return np.concatenate([picture, white, bar], axis=0)


def label_superpixels(picture: np.ndarray, segments: np.ndarray, numbers: list[int], scale: int = 1) -> tuple[np.ndarray, dict[int, tuple[int, int]]]:
    """Return the picture (upscaled ``scale`` x, nearest neighbour) with each listed superpixel's number written inside it.

    Each number sits at the superpixel's most interior pixel (the maximum of its distance to the
    superpixel's border), in a white box with a black border, so it stays readable on any colour.

    Args:
        picture: H x W x 3 uint8 (e.g. LIME's overlay).
        segments: H x W superpixel labels 0..l-1, aligned with the picture.
        numbers: the labels to write (e.g. LIME's most supporting and most opposing superpixels).
        scale: integer upscaling before writing, so the digits are legible on a small patch.

    Returns:
        (H*scale x W*scale x 3 uint8, {label: (x, y) centre of its box in the returned picture's pixels}).
    """
    from PIL import Image, ImageDraw

    picture = np.asarray(picture)
    if picture.ndim != 3 or picture.shape[:2] != np.asarray(segments).shape:
        raise ExplainError(f"superpixel labels {np.asarray(segments).shape} are not aligned with the picture {picture.shape[:2]}")
    big = Image.fromarray(upscale_nearest(picture, scale))
    draw = ImageDraw.Draw(big)
    font = _font(max(9, 5 * scale + 3))
    where: dict[int, tuple[int, int]] = {}
    for number in dict.fromkeys(int(n) for n in numbers):
        inside = np.pad(segments == number, 1)  # padded: the patch's edge counts as a border
        if not inside.any():
            continue
        depth = ndimage.distance_transform_edt(inside)[1:-1, 1:-1]
        row, col = np.unravel_index(int(np.argmax(depth)), depth.shape)
        x, y = int((col + 0.5) * scale), int((row + 0.5) * scale)  # image px -> upscaled px
        box = draw.textbbox((x, y), str(number), font=font, anchor="mm")
        draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(255, 255, 255), outline=(0, 0, 0))
        draw.text((x, y), str(number), fill=(0, 0, 0), font=font, anchor="mm")
        where[number] = (x, y)
    return np.asarray(big), where


def upscale_nearest(array: np.ndarray, factor: int) -> np.ndarray:
    """Return ``array`` enlarged ``factor`` times along rows and columns by repeating each pixel (no smoothing).

    Each input pixel becomes a factor x factor block: a pooled map keeps one visible block per
    pooling window, where a browser's or PIL's bilinear scaling would blur them together.
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ExplainError(f"factor must be a positive integer, got {factor!r}")
    a = np.asarray(array)
    return a if factor == 1 else a.repeat(factor, axis=0).repeat(factor, axis=1)


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
