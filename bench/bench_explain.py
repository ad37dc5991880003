"""Benchmark of core.explain: the figures of issue 6's Speed section, each printed with its target.

    python bench/bench_explain.py [--full] [--checkpoint CKPT] [--out bench/out]

VGG16 (random initialisation: the timing does not depend on the weights) at 224 px and the tiny
model at 128 px, on a demo tumor patch rendered by core.demo, with torch.set_num_threads(2).
Every figure is also given as a ratio to one plain forward of the same model measured in the
same run (a figure that holds however busy the machine is). Other work on the same CPU makes
the seconds noisy: the load average is printed at the start and the end.

Pictures of every method on the patch go to bench/out/ (gitignored); with --checkpoint (a
trained model, e.g. the demo model) they show what that model looks at.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.explain import (  # noqa: E402
    METHODS,
    conv_filters,
    explain_patch,
    feature_maps,
    maximize_activation,
    tile_grid,
)
from core.model import build_model, load_checkpoint  # noqa: E402


def demo_tumor_patch(size: int) -> np.ndarray:
    """Return a size x size patch across the edge of a demo tumor, at level 1 (downsample 2) like the demo model."""
    try:
        from core.demo import TILE, SlideRenderer, plan_slide
    except ImportError:  # core.demo absent: a synthetic pink/purple patch
        rng = np.random.default_rng(0)
        image = np.full((size, size, 3), (230, 160, 200), dtype=np.uint8)
        yy, xx = np.mgrid[:size, :size]
        for cy, cx in rng.integers(0, size, (size // 4, 2)):
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < 9] = (110, 60, 150)
        return image
    plan = plan_slide("bench", "tumor", "test", 4096, (0, 1))
    tumor = plan.tumors[0]
    minx, _, _, _ = tumor.bounds
    cy = int(tumor.centroid.y)
    side = 2 * size  # level-0 pixels of a level-1 patch
    row0 = max(0, (cy - size) // TILE * TILE)
    rows = -(-(cy + size - row0) // TILE) * TILE
    strip = SlideRenderer(plan).render_strip(row0, rows)
    x0 = int(minx) - size // 2  # half the patch outside the tumor, half inside
    y0 = cy - size - row0
    level0 = strip[y0 : y0 + side, x0 : x0 + side].astype(np.float32)
    level1 = level0.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))  # the pyramid's 2x2 mean
    return np.clip(level1 + 0.5, 0, 255).astype(np.uint8)


def timed(fn, repeat: int = 1):
    """Return (median seconds, last result) of ``repeat`` calls."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


class Report:
    def __init__(self, forward_s: float):
        self.forward_s = forward_s
        self.rows = []

    def line(self, name: str, seconds: float, target: float | None = None, note: str = "") -> None:
        verdict = ""
        if target is not None:
            verdict = f"target < {target:g} s: {'met' if seconds < target else 'MISSED'} ({seconds / target:.1f}x the target)"
        print(f"  {name:<44} {seconds:8.3f} s  = {seconds / self.forward_s:7.1f} forwards  {verdict} {note}".rstrip(), flush=True)
        self.rows.append((name, seconds, target))


def plain_forward_seconds(model, size: int) -> float:
    x = torch.rand(1, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        model(x)
        return timed(lambda: model(x), repeat=5)[0]


def bench_vgg16(patch: np.ndarray, full: bool) -> None:
    torch.manual_seed(0)
    model = build_model("vgg16")
    forward = plain_forward_seconds(model, 224)
    print(f"\nVGG16 (random init) at 224 px; baseline: one plain fp32 forward = {forward:.3f} s")
    r = Report(forward)
    explain_patch(model, patch, "saliency")  # warm-up (oneDNN kernels, allocator)
    explain_patch(model, patch, "gradcam", precision="auto")
    sal, _ = timed(lambda: explain_patch(model, patch, "saliency"), repeat=3)
    cam, _ = timed(lambda: explain_patch(model, patch, "gradcam"), repeat=3)
    cam16, e = timed(lambda: explain_patch(model, patch, "gradcam", precision="auto"), repeat=3)
    r.line("saliency (fp32, always)", sal)
    r.line("Grad-CAM fp32", cam)
    r.line(f"Grad-CAM {e.params['precision']}", cam16)
    r.line("Grad-CAM + saliency (fp32)", sal + cam, 0.5)
    r.line(f"Grad-CAM {e.params['precision']} + saliency", sal + cam16, 0.5)
    for precision in ("fp32", "auto"):
        s, e = timed(lambda: explain_patch(model, patch, "occlusion", window=32, stride=16, precision=precision))
        r.line(f"occlusion 32/16 ({e.extras['windows']} windows) {e.params['precision']}", s, 6.0)
    for precision in (["fp32", "auto"] if full else ["auto"]):
        s, e = timed(lambda: explain_patch(model, patch, "lime", num_samples=1000, precision=precision))
        r.line(f"LIME 1000 samples {e.params['precision']}", s, 30.0, f"(R^2 {e.extras['r2']:.2f})")
    for precision in ("fp32", "auto"):
        s, am = timed(lambda: maximize_activation(model, steps=100, size=224, precision=precision))
        r.line(f"activation max. 100 steps {am.params['precision']}", s, 20.0)
    s, _ = timed(lambda: explain_patch(model, patch, "smoothgrad"))
    r.line("SmoothGrad 25 samples (fp32)", s)
    s, _ = timed(lambda: explain_patch(model, patch, "ig"))
    r.line("Integrated Gradients 50 steps (fp32)", s)
    s, _ = timed(lambda: feature_maps(model, patch, "features.28"), repeat=3)
    r.line("feature maps features.28", s)


def bench_tiny(patch: np.ndarray) -> None:
    torch.manual_seed(0)
    model = build_model("tiny")
    forward = plain_forward_seconds(model, 128)
    print(f"\ntiny model at 128 px; baseline: one plain fp32 forward = {forward * 1000:.1f} ms")
    r = Report(forward)
    for method in METHODS:
        explain_patch(model, patch, method)  # warm-up
        s, e = timed(lambda: explain_patch(model, patch, method), repeat=3)
        r.line(f"{method} (defaults, {e.params['precision']})", s, 2.0)
    s, e = timed(lambda: explain_patch(model, patch, "lime", precision="auto"), repeat=3)
    r.line(f"lime (defaults, {e.params['precision']})", s, 2.0)
    s, _ = timed(lambda: maximize_activation(model, steps=100, size=128), repeat=1)
    r.line("activation max. 100 steps fp32", s, 2.0)
    s, _ = timed(lambda: feature_maps(model, patch, "features.0"), repeat=3)
    r.line("feature maps features.0", s, 2.0)


def save_pictures(model, patch: np.ndarray, out: Path, label: str) -> None:
    from PIL import Image, ImageDraw

    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(patch).save(out / "patch.png")
    tiles, names = [patch], ["patch"]
    print(f"\npictures ({label}) -> {out}/")
    for method in METHODS:
        e = explain_patch(model, patch, method)
        picture = e.overlay(patch)
        Image.fromarray(picture).save(out / f"{method}.png")
        np.save(out / f"{method}.npy", e.map)
        tiles.append(picture)
        names.append(method)
        extra = f", LIME R^2 {e.extras['r2']:.2f}, top + {e.extras['top_positive'][:3]}, top - {e.extras['top_negative'][:3]}" if method == "lime" else ""
        print(f"  {method:<11} F(I) = {e.probability:.3f}  map range [{e.map.min():.3g}, {e.map.max():.3g}]{extra}")
    scale = 2 if patch.shape[0] <= 128 else 1
    Image.fromarray(conv_filters(model).grid(scale=8)).save(out / "filters_first_layer.png")
    Image.fromarray(feature_maps(model, patch, model.conv_layer_names()[0]).grid(max_maps=16)).save(out / "feature_maps_first_layer.png")
    am = maximize_activation(model, steps=100, size=patch.shape[0], jitter=2, blur_every=10)
    Image.fromarray(am.image).save(out / "activation_max_logit.png")
    print(f"  activation maximization of the logit: {am.objective[0]:.3f} -> {am.objective[-1]:.3f}")
    montage = tile_grid(np.stack(tiles), cols=len(tiles), pad=4, scale=scale)
    canvas = Image.fromarray(montage)
    draw = ImageDraw.Draw(canvas)
    step = patch.shape[1] * scale + 4
    for i, name in enumerate(names):
        draw.text((4 + i * step + 3, 6), name, fill=(0, 0, 0))
    canvas.save(out / "montage.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also LIME 1000 samples in fp32 on VGG16 (minutes)")
    parser.add_argument("--skip-vgg16", action="store_true", help="only the tiny model and the pictures")
    parser.add_argument("--checkpoint", type=Path, help="trained model for the pictures (default: the random tiny model)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="folder for the pictures")
    args = parser.parse_args()

    torch.set_num_threads(2)
    from core.device import cpu_supports_bf16

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {cpu_supports_bf16()}, "
          f"load average at start {os.getloadavg()[0]:.2f} (other work on this CPU makes the seconds noisy; "
          "the 'forwards' ratio is the steadier figure)")
    patch224, patch128 = demo_tumor_patch(224), demo_tumor_patch(128)
    if not args.skip_vgg16:
        bench_vgg16(patch224, args.full)
    bench_tiny(patch128)
    if args.checkpoint is not None:
        model, meta = load_checkpoint(args.checkpoint)
        size = int(meta.get("patch_size", 128))
        save_pictures(model, demo_tumor_patch(size), args.out, f"{meta.get('label', args.checkpoint.name)}, {model.arch}")
    else:
        torch.manual_seed(0)
        save_pictures(build_model("tiny"), patch128, args.out, "random tiny model")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
