"""Draw the overlay candidates side by side on real tissue and on a demo slide.

    python docs/make_overlay_candidates.py [--demo-slide demo/slides/demo_005.tiff] [--out docs/screenshots/overlay-candidates.jpg]

Rows: scikit-image's immunohistochemistry sample (real tissue, haematoxylin + DAB; the
probabilities are made up: a smooth field that follows the DAB stain, so every F(I) from 0 to 1
appears) and, when given, a demo slide with its real demo-model predictions (synthetic H&E).
Columns: the old default (inferno, opacity 0.45, "fade": alpha 0.15 + 0.85 F(I)), then the
candidates with low F(I) transparent (core.heatmap.fade_weight). Every column outlines F(I) >= 0.5.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

from core.heatmap import composite, probability_grid, render_overlay

T = 0.5
CANDIDATES = [  # (title, colour map, opacity, transparent low F(I))
    ("old: inferno 0.45, faded", "inferno", 0.45, "old"),
    ("A: viridis 0.45", "viridis", 0.45, True),
    ("B: viridis 0.60 (default)", "viridis", 0.60, True),
    ("C: viridis 0.80", "viridis", 0.80, True),
    ("D: turbo 0.60", "turbo", 0.60, True),
]


def old_overlay(grid, size, scale, colormap, opacity):
    """The overlay as drawn before: every predicted cell coloured, alpha opacity x (0.15 + 0.85 F(I))."""
    rgba = render_overlay(grid, size, scale=scale, colormap=colormap, opacity=1.0)
    gray = render_overlay(grid, size, scale=scale, colormap="gray", opacity=1.0)  # R channel = F(I) x 255
    known = gray[..., 3] > 0
    rgba[..., 3] = np.where(known, np.round(255 * opacity * (0.15 + 0.85 * gray[..., 0] / 255.0)), 0).astype(np.uint8)
    lines = render_overlay(grid, size, scale=scale, opacity=0.0, outline=T)  # only the outline is opaque
    on = lines[..., 3] == 255
    rgba[on] = lines[on]
    return rgba


def panel(image: np.ndarray, grid, scale: float, colormap: str, opacity: float, mode) -> np.ndarray:
    size = (image.shape[1], image.shape[0])
    if mode == "old":
        rgba = old_overlay(grid, size, scale, colormap, opacity)
    else:
        rgba = render_overlay(grid, size, scale=scale, colormap=colormap, opacity=opacity, outline=T, fade=bool(mode))
    return composite(image, rgba)


def ihc_row(cell: int = 24):
    """The IHC sample and a probability field following its DAB stain (cells of ``cell`` px)."""
    from scipy.ndimage import gaussian_filter
    from skimage import data
    from skimage.color import rgb2hed

    image = data.immunohistochemistry()  # 512 x 512 RGB
    dab = gaussian_filter(rgb2hed(image)[..., 2], 12)
    dab = (dab - dab.min()) / (dab.max() - dab.min())
    rows, cols = image.shape[0] // cell, image.shape[1] // cell
    ys, xs = np.mgrid[0:rows, 0:cols]
    prob = dab[ys * cell + cell // 2, xs * cell + cell // 2].ravel() ** 1.5
    return image, probability_grid(xs.ravel() * cell, ys.ravel() * cell, prob, cell), 1.0


def demo_row(slide_path: Path, db: Path, width: int = 512):
    """A region of a demo slide around its most suspicious patch, with its stored predictions."""
    from core.slide_io import open_slide
    from core.store import ResultStore

    slide = open_slide(slide_path)
    with ResultStore(db) as store:
        [record] = [r for r in store.slides() if r.name == slide_path.stem]
        run = store.runs(slide_id=record.id, status="complete")[-1]
        preds = store.read_predictions(run.id)
    size0 = float(preds.width[0])
    best = int(np.argmax(preds.prob))
    side = int(min(min(slide.dimensions) * 0.9, size0 * 6))
    x0 = int(np.clip(preds.x[best] + size0 / 2 - side / 2, 0, slide.dimensions[0] - side))
    y0 = int(np.clip(preds.y[best] + size0 / 2 - side / 2, 0, slide.dimensions[1] - side))
    region = slide.read_region((x0, y0), 0, (side, side))
    image = np.asarray(Image.fromarray(region).resize((width, width), Image.LANCZOS))
    grid = probability_grid(preds.x - x0, preds.y - y0, preds.prob, size0)
    return image, grid, side / width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-slide", type=Path, help="a predicted demo slide (its store: results.sqlite two folders up)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots" / "overlay-candidates.jpg")
    args = parser.parse_args()
    rows = [("real tissue (skimage IHC), made-up F(I)", *ihc_row())]
    if args.demo_slide:
        rows.append((f"demo slide {args.demo_slide.stem} (synthetic), demo model", *demo_row(args.demo_slide, args.demo_slide.parents[1] / "results.sqlite")))
    side, pad, head = 512, 8, 26
    out = Image.new("RGB", (len(CANDIDATES) * (side + pad) + pad, len(rows) * (side + head + pad) + pad + 30), "white")
    draw = ImageDraw.Draw(out)
    for r, (label, image, grid, scale) in enumerate(rows):
        top = pad + r * (side + head + pad)
        draw.text((pad, top), label, fill="black")
        for c, (title, cmap, opacity, mode) in enumerate(CANDIDATES):
            picture = panel(image, grid, scale, cmap, opacity, mode)
            left = pad + c * (side + pad)
            draw.text((left, top + 12), title, fill="black")
            out.paste(Image.fromarray(picture), (left, top + head))
    # A colour key per map (the overlay's alpha aside: old, every value drawn; the others transparent up to FADE_FROM).
    bottom = out.height - 26
    for c, (title, cmap, _opacity, _mode) in enumerate(CANDIDATES):
        lut = (colormaps[cmap](np.linspace(0, 1, side))[:, :3] * 255).astype(np.uint8)
        out.paste(Image.fromarray(np.repeat(lut[None], 12, axis=0)), (pad + c * (side + pad), bottom))
        draw.text((pad + c * (side + pad), bottom + 13), "F(I) 0" + " " * 110 + "1", fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out.save(args.out, quality=88)
    print(f"wrote {args.out} ({out.width} x {out.height})")


if __name__ == "__main__":
    main()
