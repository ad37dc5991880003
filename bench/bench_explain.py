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
    montage,
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
    """Return (best seconds, last result) of ``repeat`` calls: the best is the least disturbed by other work."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


class Report:
    """Prints each figure with its target and its ratio to a plain forward timed just before it."""

    def __init__(self, model, size: int):
        self.x = torch.rand(1, 3, size, size).contiguous(memory_format=torch.channels_last)
        self.model = model
        self.forward_s = self.baseline()

    def baseline(self) -> float:
        """Time one plain fp32 forward now (best of 3): the yardstick for the next figure."""
        with torch.no_grad():
            self.model(self.x)
            return timed(lambda: self.model(self.x), repeat=3)[0]

    def measure(self, name: str, fn, target: float | None = None, repeat: int = 1, note=None):
        """Time ``fn`` (best of ``repeat``) right after a fresh baseline; print and return (seconds, result)."""
        forward = self.baseline()
        seconds, result = timed(fn, repeat=repeat)
        self.line(name, seconds, target, note(result) if note else "", forward)
        return seconds, result

    def line(self, name: str, seconds: float, target: float | None = None, note: str = "", forward: float | None = None) -> None:
        forward = forward or self.forward_s
        verdict = ""
        if target is not None:
            verdict = f"target < {target:g} s: {'met' if seconds < target else 'MISSED'} ({seconds / target:.1f}x)"
        print(f"  {name:<46} {seconds:8.3f} s = {seconds / forward:6.1f} forwards of {forward * 1000:5.1f} ms  {verdict} {note}".rstrip(), flush=True)


def batched_forward_seconds(model, size: int, precision: str, batch: int = 8) -> float:
    """Return the seconds per patch of a batched no-grad forward (the cost floor of perturbation methods)."""
    from core.device import autocast_for

    x = torch.rand(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), autocast_for("cpu", precision):
        model(x)
        return timed(lambda: model(x), repeat=2)[0] / batch


def bench_vgg16(patch: np.ndarray, full: bool) -> None:
    torch.manual_seed(0)
    model = build_model("vgg16")
    r = Report(model, 224)
    per32, per16 = batched_forward_seconds(model, 224, "fp32"), batched_forward_seconds(model, 224, "auto")
    print(f"\nVGG16 (random init) at 224 px. One plain fp32 forward: {r.forward_s:.3f} s; batched forward per patch: "
          f"fp32 {per32:.3f} s, fast precision {per16:.3f} s")
    explain_patch(model, patch, "saliency")  # warm-up (oneDNN kernels, allocator)
    explain_patch(model, patch, "gradcam", precision="auto")
    sal, _ = r.measure("saliency (fp32, always)", lambda: explain_patch(model, patch, "saliency"), repeat=3)
    cam, _ = r.measure("Grad-CAM fp32", lambda: explain_patch(model, patch, "gradcam"), repeat=3)
    cam16, e = r.measure("Grad-CAM fast precision", lambda: explain_patch(model, patch, "gradcam", precision="auto"), repeat=3)
    fast = e.params["precision"]
    r.line("Grad-CAM fp32 + saliency", sal + cam, 0.5)
    r.line(f"Grad-CAM {fast} + saliency", sal + cam16, 0.5)
    for precision in ("fp32", "auto"):
        r.measure(f"occlusion 32/16 (169 windows) {'fp32' if precision == 'fp32' else fast}",
                  lambda: explain_patch(model, patch, "occlusion", window=32, stride=16, precision=precision), 6.0)
    print(f"    (floor: 170 batched forwards = {170 * per32:.1f} s fp32, {170 * per16:.1f} s {fast})")
    for precision in (["fp32", "auto"] if full else ["auto"]):
        r.measure(f"LIME 1000 samples {'fp32' if precision == 'fp32' else fast}",
                  lambda: explain_patch(model, patch, "lime", n_samples=1000, precision=precision), 30.0,
                  note=lambda e: f"(R^2 {e.extras['r2']:.2f}, {e.extras['n_superpixels']} superpixels)")
    print(f"    (floor: 1000 batched forwards = {1000 * per32:.1f} s fp32, {1000 * per16:.1f} s {fast})")
    for precision in ("fp32", "auto"):
        r.measure(f"activation max. 100 steps {'fp32' if precision == 'fp32' else fast}",
                  lambda: maximize_activation(model, steps=100, size=224, precision=precision), 20.0)
    r.measure("SmoothGrad 25 samples (fp32)", lambda: explain_patch(model, patch, "smoothgrad"))
    r.measure("Integrated Gradients 50 steps (fp32)", lambda: explain_patch(model, patch, "ig"))
    r.measure("feature maps features.28", lambda: feature_maps(model, patch, "features.28"), repeat=3)


def bench_tiny(patch: np.ndarray) -> None:
    torch.manual_seed(0)
    model = build_model("tiny")
    r = Report(model, 128)
    print(f"\ntiny model at 128 px. One plain fp32 forward: {r.forward_s * 1000:.1f} ms")
    for method in METHODS:
        explain_patch(model, patch, method)  # warm-up
        r.measure(f"{method} (defaults, fp32)", lambda: explain_patch(model, patch, method), 2.0, repeat=3)
    for method in ("gradcam", "occlusion", "lime"):
        r.measure(f"{method} (defaults, fast precision)", lambda: explain_patch(model, patch, method, precision="auto"), 2.0, repeat=3)
    for precision in ("fp32", "auto"):
        r.measure(f"activation max. 100 steps {precision}", lambda: maximize_activation(model, steps=100, size=128, precision=precision), 2.0)
    r.measure("feature maps features.0", lambda: feature_maps(model, patch, "features.0"), 2.0, repeat=3)


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
    picture = montage(np.stack(tiles), cols=len(tiles), pad=4, scale=scale)
    canvas = Image.fromarray(picture)
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
