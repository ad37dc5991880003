"""Pictures to share: a slide overview with its heatmap, and a patch beside its explanations.

Drawn with matplotlib's object API on the Agg canvas (``matplotlib.figure.Figure``, never
``pyplot``: no global state, safe in the app's threads) and Pillow.

* :func:`render_overview` -- the whole slide at a chosen width with the probability
  heatmap blended over it (:func:`core.heatmap.heatmap_over_thumbnail`: the app's colours,
  patches with ``F(I) >= t`` outlined), a title line above (slide, model, t, "synthetic demo"
  where it is) and a colour bar below with t marked. The picture is pixel-exact: the
  heatmap is placed with ``figimage``, not resampled by an axes.
* :func:`render_explanations` -- a patch and the overlays of its explanations side by side,
  one panel each, with the method's name above.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.errors import PathologyError
from core.export.common import ExportError, SlideExport, check_threshold, median_patch_side, patch_arrays, write_bytes
from core.heatmap import COLORMAPS, fade_weight, heatmap_over_thumbnail, png_bytes, probability_grid

__all__ = [
    "MAX_WIDTH",
    "MIN_WIDTH",
    "overview_title",
    "read_thumbnail",
    "render_colorbar",
    "render_explanations",
    "render_explanations_png",
    "render_overview",
    "render_overview_png",
    "render_slide_overview_png",
    "write_slide_overview_png",
]

log = logging.getLogger(__name__)

MIN_WIDTH = 128
MAX_WIDTH = 8192
_DPI = 100
_OUTLINE_RGB = (0, 255, 255)  # render_overlay's default outline colour, also the t marker


def _check_width(width: int) -> int:
    w = int(width)
    if not MIN_WIDTH <= w <= MAX_WIDTH:
        raise ExportError(f"the picture width must be {MIN_WIDTH} to {MAX_WIDTH} px, got {width}")
    return w


def _picture_height(width: int, dimensions: tuple[int, int]) -> int:
    """Return the height of a whole-slide picture ``width`` px wide (the slide's aspect)."""
    w0, h0 = dimensions
    return max(1, int(round(width * h0 / w0)))


def read_thumbnail(path: str | os.PathLike | None, width: int, dimensions: tuple[int, int]) -> np.ndarray | None:
    """Return the whole slide as RGB uint8, exactly ``width`` px wide, or None if it cannot be read.

    The slide's thumbnail (longer side just large enough) resized to ``width`` x the height
    of the slide's aspect. A missing or unreadable file gives None and a logged warning:
    the heatmap is then drawn on white.
    """
    width = _check_width(width)
    height = _picture_height(width, dimensions)
    if path is None or not Path(path).is_file():
        log.warning("slide file %s not found; the heatmap is drawn on white", path)
        return None
    try:
        from core.slide_io import open_slide

        thumb = open_slide(path).thumbnail(max(width, height))
    except PathologyError as exc:
        log.warning("cannot read a thumbnail of %s (%s); the heatmap is drawn on white", path, exc)
        return None
    if thumb.shape[:2] != (height, width):
        thumb = np.asarray(Image.fromarray(thumb).resize((width, height), Image.Resampling.LANCZOS))
    return thumb


def _figure(width_px: int, height_px: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / _DPI, height_px / _DPI), dpi=_DPI, facecolor="white")
    return fig, FigureCanvasAgg(fig)


def _to_rgb(canvas: Any, width_px: int, height_px: int) -> np.ndarray:
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    if rgb.shape[:2] != (height_px, width_px):  # float rounding of the figure size: never resample, pad/crop
        out = np.full((height_px, width_px, 3), 255, dtype=np.uint8)
        h, w = min(height_px, rgb.shape[0]), min(width_px, rgb.shape[1])
        out[:h, :w] = rgb[:h, :w]
        rgb = out
    return rgb


def render_overview(
    thumbnail: np.ndarray | None,
    dimensions: tuple[int, int],
    predictions: Any,
    threshold: float = 0.5,
    *,
    width: int = 1024,
    title: str = "",
    note: str | None = None,
    colormap: str = "inferno",
    opacity: float = 0.5,
    cut: bool = False,
    outline: bool = True,
    fade: bool = False,
) -> np.ndarray:
    """Return the slide overview picture: title, slide with heatmap, colour bar with t.

    Args:
        thumbnail: RGB picture of the whole slide (any size: resized to ``width``), or
            None to draw the heatmap on white.
        dimensions: level-0 (width, height) of the slide in pixels.
        predictions: arrays ``x, y, width, height`` (level-0 px) and ``prob``.
        threshold: t, marked on the colour bar; patches with ``F(I) >= t`` are outlined.
        width: width of the picture in pixels (the whole PNG is this wide).
        title: the title line (e.g. slide, model, t).
        note: a second line in red under the title (e.g. "synthetic demo ..."), or None.
        colormap: one of :data:`core.heatmap.COLORMAPS`.
        opacity: heatmap alpha in [0, 1].
        cut: hide patches with ``F(I) < t``.
        outline: outline the patches with ``F(I) >= t``.
        fade: "transparent low F(I)", as the app's viewer draws it (:func:`core.heatmap.fade_weight`):
            no colour up to ``FADE_FROM``, full opacity from ``FADE_FULL``; the colour bar shows
            the same ramp over white.

    Returns:
        RGB uint8 array, ``width`` px wide.

    Raises:
        ExportError: bad width, threshold, colour map or predictions.
    """
    width = _check_width(width)
    t = check_threshold(threshold)
    if colormap not in COLORMAPS:
        raise ExportError(f"unknown colour map {colormap!r}; choose one of {', '.join(COLORMAPS)}")
    w0, h0 = int(dimensions[0]), int(dimensions[1])
    if w0 <= 0 or h0 <= 0:
        raise ExportError(f"slide dimensions must be positive, got {dimensions}")
    x, y, pw, ph, prob = patch_arrays(predictions)
    pic_h = _picture_height(width, (w0, h0))
    if thumbnail is None:
        base = np.full((pic_h, width, 3), 255, dtype=np.uint8)
    else:
        base = np.asarray(thumbnail, dtype=np.uint8)[..., :3]
        if base.shape[:2] != (pic_h, width):
            base = np.asarray(Image.fromarray(base).resize((width, pic_h), Image.Resampling.LANCZOS))
    grid = probability_grid(x, y, prob, median_patch_side(pw, ph) or 1.0)
    picture = heatmap_over_thumbnail(
        base, (w0, h0), grid, colormap=colormap, opacity=opacity, cut=t if cut else None, outline=t if outline else None, fade=fade,
    )

    # Layout in pixels: title strip, picture, colour-bar strip. Font sizes follow the width.
    title_px = float(np.clip(width / 48, 9, 36))  # text height in px
    lines = 1 + (note is not None)
    top = int(math.ceil(title_px * 1.5 * lines + title_px * 0.6))
    bottom = int(math.ceil(max(56.0, title_px * 4.6)))
    total = top + pic_h + bottom
    fig, canvas = _figure(width, total)
    pt = title_px * 72 / _DPI  # px -> points
    fig.figimage(picture, xo=0, yo=bottom, origin="upper", zorder=1)
    y_text = 1 - (title_px * 0.4) / total
    fig.text(0.01, y_text, title, ha="left", va="top", fontsize=pt, fontweight="bold")
    if note is not None:
        fig.text(0.01, y_text - title_px * 1.5 / total, note, ha="left", va="top", fontsize=pt * 0.85, color="#b00020")

    bar_h = title_px * 1.1
    _draw_colorbar(fig, (0.05, (bottom - title_px * 1.6 - bar_h) / total, 0.9, bar_h / total), colormap, t, title_px, fade=fade)
    return _to_rgb(canvas, width, total)


def _draw_colorbar(
    fig: Any, rect: tuple[float, float, float, float], colormap: str, t: float, text_px: float, *, fade: bool = False,
) -> None:
    """Draw a horizontal colour bar of F(I) in [0, 1] in figure coordinates ``rect``, t marked.

    ``fade``: each colour blended over white with the alpha of "transparent low F(I)".
    """
    from matplotlib import colormaps

    pt = text_px * 72 / _DPI  # px -> points
    ax = fig.add_axes(rect)
    stops = np.linspace(0, 1, 256)
    rgb = colormaps[colormap](stops)[:, :3]
    if fade:
        alpha = fade_weight(stops)[:, None]
        rgb = rgb * alpha + (1 - alpha)
    ax.imshow(rgb[None, :, :], aspect="auto", extent=(0, 1, 0, 1))
    # t: the outline colour of the heatmap, with a thin black core visible on light colours.
    ax.axvline(t, color=np.array(_OUTLINE_RGB) / 255, linewidth=max(2.0, text_px / 6))
    ax.axvline(t, color="black", linewidth=max(0.6, text_px / 24))
    ax.set_yticks([])
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.tick_params(labelsize=pt * 0.75, length=text_px / 4)
    ax.set_xlim(0, 1)
    ax.set_title(f"F(I), probability of cancer; t = {t:.2f}" + ("; low F(I) transparent" if fade else ""), fontsize=pt * 0.8, pad=text_px / 4)


def render_colorbar(width: int, threshold: float = 0.5, *, colormap: str = "inferno") -> np.ndarray:
    """Return the heatmap's colour bar alone (F(I) in [0, 1], t marked) as RGB, ``width`` px wide."""
    width = _check_width(width)
    t = check_threshold(threshold)
    if colormap not in COLORMAPS:
        raise ExportError(f"unknown colour map {colormap!r}; choose one of {', '.join(COLORMAPS)}")
    text_px = float(np.clip(width / 48, 9, 36))
    height = int(math.ceil(max(56.0, text_px * 4.6)))
    fig, canvas = _figure(width, height)
    bar_h = text_px * 1.1
    _draw_colorbar(fig, (0.05, (height - text_px * 1.6 - bar_h) / height, 0.9, bar_h / height), colormap, t, text_px)
    return _to_rgb(canvas, width, height)


def render_overview_png(*args: Any, **kwargs: Any) -> bytes:
    """Return :func:`render_overview` as PNG bytes (same arguments)."""
    return png_bytes(render_overview(*args, **kwargs))


def overview_title(export: SlideExport, threshold: float) -> str:
    """Return the title line of a slide overview: slide, model id, t, max F(I)."""
    prob = np.asarray(export.predictions.prob)
    top = f"max F(I) {prob.max():.3f}" if prob.size else "no patches"
    return f"{export.slide.name}  |  model {export.model_id}  |  t = {float(threshold):.2f}  |  {len(prob):,} patches, {top}"


def render_slide_overview_png(export: SlideExport, threshold: float = 0.5, *, width: int = 1024, **style: Any) -> bytes:
    """Return the overview PNG of a slide read from the store (see :func:`render_overview`).

    The thumbnail comes from the slide file the store knows; when it cannot be read the
    heatmap is drawn on white and the picture says so. The title names the slide, the model
    and t; the note says "synthetic demo" where the model or the slide is the demo's.
    ``style``: ``colormap``, ``opacity``, ``cut``, ``outline``.
    """
    width = _check_width(width)
    thumb = read_thumbnail(export.slide.path, width, export.dimensions)
    notes = [n for n in (export.demo, None if thumb is not None else "slide image unavailable: heatmap on white") if n]
    return render_overview_png(
        thumb, export.dimensions, export.predictions, threshold, width=width, title=overview_title(export, threshold),
        note="; ".join(notes) or None, **style,
    )


def write_slide_overview_png(path: str | os.PathLike, export: SlideExport, threshold: float = 0.5, **options: Any) -> Path:
    """Write :func:`render_slide_overview_png` to ``path``; return the path."""
    return write_bytes(path, render_slide_overview_png(export, threshold, **options))


def render_explanations(
    image: np.ndarray,
    explanations: Sequence[Any] | Mapping[str, Any],
    *,
    panel: int = 256,
    title: str | None = None,
    probability: float | None = None,
) -> np.ndarray:
    """Return a patch and its explanation overlays side by side as one RGB picture.

    Args:
        image: the patch, H x W x 3 uint8 RGB.
        explanations: :class:`core.explain.Explanation` objects (their ``overlay(image)`` is
            drawn, titled with the method and the explained output), or a mapping
            ``title -> Explanation or H x W x 3 uint8 overlay``.
        panel: side in pixels of each panel (the patch is scaled, nearest neighbour).
        title: a line above the panels (e.g. slide, patch location, model), or None.
        probability: F(I) of the patch for the first panel's caption; None: taken from the
            first explanation when it has one.

    Returns:
        RGB uint8, ``(1 + len(explanations)) * panel`` px wide.

    Raises:
        ExportError: a bad image, no explanations, or an overlay of another size.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ExportError(f"the patch must be an H x W x 3 uint8 RGB image, got {image.dtype} {image.shape}")
    items = list(explanations.items()) if isinstance(explanations, Mapping) else [(None, e) for e in explanations]
    if not items:
        raise ExportError("no explanations to draw beside the patch")
    panels: list[tuple[str, np.ndarray]] = []
    for name, item in items:
        if isinstance(item, np.ndarray):
            overlay, caption = item, name or "explanation"
        else:
            overlay = item.overlay(image)
            caption = name or f"{item.method} ({item.target})"
            if probability is None:
                probability = getattr(item, "probability", None)
        if overlay.shape != image.shape:
            raise ExportError(f"overlay {caption!r} is {overlay.shape}, the patch {image.shape}")
        panels.append((caption, np.asarray(overlay, dtype=np.uint8)))
    first = "patch" + (f" (F(I) = {probability:.3f})" if probability is not None else "")
    panels.insert(0, (first, image))

    panel = int(np.clip(panel, 64, 1024))
    n = len(panels)
    text_px = float(np.clip(panel / 16, 9, 24))
    pt = text_px * 72 / _DPI
    head = int(math.ceil(text_px * 2.0 + (text_px * 1.6 if title else 0)))
    width, height = n * panel, panel + head
    fig, canvas = _figure(width, height)
    for i, (caption, picture) in enumerate(panels):
        scaled = np.asarray(Image.fromarray(picture).resize((panel, panel), Image.Resampling.NEAREST))
        fig.figimage(scaled, xo=i * panel, yo=0, origin="upper")
        fig.text((i + 0.5) * panel / width, (panel + text_px * 0.5) / height, caption, ha="center", va="bottom", fontsize=pt)
    if title:
        fig.text(0.5, 1 - text_px * 0.3 / height, title, ha="center", va="top", fontsize=pt, fontweight="bold")
    return _to_rgb(canvas, width, height)


def render_explanations_png(*args: Any, **kwargs: Any) -> bytes:
    """Return :func:`render_explanations` as PNG bytes (same arguments)."""
    return png_bytes(render_explanations(*args, **kwargs))
