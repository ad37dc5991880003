"""Benchmark of core.explain: forward-only explanations against their floor, then every method's figures.

    python bench/bench_explain.py [--reps N] [--reps-tiny N] [--all] [--skip-vgg16] [--checkpoint CKPT] [--out bench/out]

First section (issue 18 item 3): occlusion (32/16, 169 windows) and LIME (1000 samples) with
VGG16 (random initialisation: the timing does not depend on the weights) at 224 px and the tiny
model at 128 px, in the precision the app uses (``auto``: bf16 autocast where the CPU has native
bf16) on a demo tumor patch, with torch.set_num_threads(2). Each is measured three ways,
interleaved in the same process, best of ``--reps`` (``--reps-tiny``):

    floor   the batched forward passes the method needs (same count, same batch size,
            channels_last, no_grad), nothing else;
    before  the method as it ran before this change (Captum's Occlusion on NCHW batches; LIME's
            samples built as uint8 numpy and converted per batch), rebuilt here;
    after   ``explain_patch`` as the app calls it.

Wall seconds and CPU seconds (``time.process_time``, all threads) are printed: on a shared machine
the wall figure grows with other people's work, the CPU figure much less; the load average is
printed on every line. For the tiny model LIME's fixed costs are split out (SLIC, building the
samples, LIME's distances and regressions).

``--all`` adds the other figures (gradient methods, Grad-CAM, activation maximization, feature
maps), each as a ratio to one plain forward measured just before it. Pictures of every method go
to bench/out/ (gitignored); with --checkpoint (a trained model, e.g. the demo model) they show
what that model looks at.
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


# ---------------------------------------------------------------------------------------------
# Forward-only explanations against their floor (issue 18 item 3)


def clocked(fn):
    """Return (wall seconds, CPU seconds of this process, result) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def floor_run(model, size: int, n: int, batch: int, precision: str):
    """Return a function running ``n`` forwards of size x size px in batches of ``batch`` (the last one the rest)."""
    from core.device import autocast_for

    sizes = [batch] * (n // batch) + ([n % batch] if n % batch else [])
    inputs = {b: torch.rand(b, 3, size, size).contiguous(memory_format=torch.channels_last) for b in set(sizes)}

    def run():
        with torch.no_grad(), autocast_for("cpu", precision):
            for b in sizes:
                model(inputs[b])

    return run


def occlusion_before(model, patch: np.ndarray, window: int, stride: int, batch: int, precision: str):
    """Occlusion as core.explain ran it before: Captum's Occlusion, its batches in Captum's NCHW layout."""
    from captum.attr import Occlusion

    from core.device import autocast_for
    from core.explain.base import image_to_tensor

    x = image_to_tensor(patch)
    with torch.no_grad(), autocast_for("cpu", precision):
        return Occlusion(lambda b: torch.sigmoid(model(b).float())).attribute(
            x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride), baselines=0.5,
            perturbations_per_eval=batch,
        )


def lime_before(model, patch: np.ndarray, n_samples: int, batch: int, precision: str):
    """LIME as core.explain ran it before: samples built as uint8 numpy batches, converted to tensors per batch."""
    from lime.lime_image import LimeImageExplainer

    from core.device import autocast_for
    from core.explain.base import batch_to_tensor
    from core.explain.lime_slic import slic_segments

    class Before(LimeImageExplainer):
        def data_labels(self, image, fudged_image, segments, classifier_fn, num_samples, batch_size=10):
            n_features = np.unique(segments).shape[0]
            data = self.random_state.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
            data[0, :] = 1
            labels = []
            for start in range(0, num_samples, batch_size):
                hidden = data[start : start + batch_size][:, segments] == 0
                labels.extend(classifier_fn(np.where(hidden[..., None], fudged_image[None], image[None])))
            return data, np.array(labels)

    def classifier_fn(images):
        with torch.no_grad():
            p = torch.sigmoid(model(batch_to_tensor(images)).float())
        return torch.stack([1 - p, p], dim=1).numpy()

    segments = slic_segments(patch, 50, 10.0, 1.0)
    with autocast_for("cpu", precision):
        return Before(kernel_width=0.25, feature_selection="auto", random_state=0).explain_instance(
            patch, classifier_fn, labels=(1,), hide_color=(128, 128, 128), top_labels=None, num_features=10,
            num_samples=n_samples, batch_size=batch, segmentation_fn=lambda _image: segments,
        )


def bench_floor(model, label: str, patch: np.ndarray, reps: int) -> dict:
    """Print floor / before / after for occlusion and LIME with ``model``; return the best figures by name."""
    from core.explain import method_defaults
    from core.explain.occlusion import window_count

    size = patch.shape[0]
    occ, lime = method_defaults("occlusion"), method_defaults("lime")
    windows = window_count(size, size, 32, 16)
    cases = {
        "occlusion": (windows + 1, occ["batch_size"],  # + 1: the unoccluded patch
                      lambda precision: occlusion_before(model, patch, 32, 16, occ["batch_size"], precision),
                      lambda precision: explain_patch(model, patch, "occlusion", window=32, stride=16, precision=precision)),
        "LIME": (1000, lime["batch_size"],
                 lambda precision: lime_before(model, patch, 1000, lime["batch_size"], precision),
                 lambda precision: explain_patch(model, patch, "lime", n_samples=1000, precision=precision)),
    }
    from core.device import resolve_precision

    precision = resolve_precision("cpu", "auto")
    print(f"\n{label}: forward-only explanations in {precision} (the app's 'auto'), best of {reps}; "
          "wall s / CPU s; ratio = after / floor")
    best = {}
    warm_ups = {  # small runs of each path: first-call costs (imports, oneDNN primitives of the batch shapes) out of the figures
        "occlusion": lambda: (occlusion_before(model, patch, size, size, occ["batch_size"], precision),
                              explain_patch(model, patch, "occlusion", window=size, stride=size, precision=precision)),
        "LIME": lambda: (lime_before(model, patch, 2 * lime["batch_size"], lime["batch_size"], precision),
                         explain_patch(model, patch, "lime", n_samples=2 * lime["batch_size"], precision=precision)),
    }
    for name, (n, batch, before, after) in cases.items():
        floor = floor_run(model, size, n, batch, precision)
        floor_run(model, size, batch + 1, batch, precision)()  # warm-up: a full batch and a last one of another size
        warm_ups[name]()
        figures = {"floor": [], "before": [], "after": []}
        for _ in range(reps):  # interleaved: the three see the same machine
            figures["floor"].append(clocked(floor)[:2])
            figures["before"].append(clocked(lambda before=before: before(precision))[:2])
            figures["after"].append(clocked(lambda after=after: after(precision))[:2])
        wall = {k: min(v[0] for v in vs) for k, vs in figures.items()}
        cpu = {k: min(v[1] for v in vs) for k, vs in figures.items()}
        print(f"  {name:<10} {n:5d} forwards of {batch:3d}/batch   floor {wall['floor']:7.2f} / {cpu['floor']:7.2f}   "
              f"before {wall['before']:7.2f} / {cpu['before']:7.2f} ({wall['before'] / wall['floor']:.2f}x wall, "
              f"{cpu['before'] / cpu['floor']:.2f}x CPU)   after {wall['after']:7.2f} / {cpu['after']:7.2f} "
              f"({wall['after'] / wall['floor']:.2f}x wall, {cpu['after'] / cpu['floor']:.2f}x CPU)   "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        best[name] = {"wall": wall, "cpu": cpu}
    return best


def lime_split(model, patch: np.ndarray, reps: int = 5) -> None:
    """Print where LIME's time goes besides the forwards: SLIC, building the samples, distances and regressions."""
    import sklearn.metrics
    from lime.lime_base import LimeBase

    from core.explain import method_defaults
    from core.explain.lime_slic import _QuietLimeImageExplainer, slic_segments

    p = method_defaults("lime")
    n = 1000

    def best(fn) -> float:
        """CPU seconds of ``fn``, best of ``reps``."""
        return min(clocked(fn)[1] for _ in range(reps))

    slic_s = best(lambda: slic_segments(patch, p["n_segments"], p["compactness"], p["sigma"]))
    segments = slic_segments(patch, p["n_segments"], p["compactness"], p["sigma"])
    explainer = _QuietLimeImageExplainer(kernel_width=p["kernel_width"], feature_selection=p["feature_selection"], random_state=0)
    fudged = np.full_like(patch, 128)
    build_s = best(lambda: explainer.data_labels(patch, fudged, segments, lambda b: np.zeros((b.shape[0], 2)), n, p["batch_size"]))
    data = np.random.default_rng(0).integers(0, 2, (n, int(segments.max()) + 1))
    labels = np.random.default_rng(1).random((n, 2))
    base = LimeBase(explainer.base.kernel_fn, random_state=0)

    def fit():
        distances = sklearn.metrics.pairwise_distances(data, data[0].reshape(1, -1), metric="cosine").ravel()
        return base.explain_instance_with_data(data, labels, distances, 1, p["num_features"], feature_selection=p["feature_selection"])

    fit_s = best(fit)
    print(f"  LIME's fixed costs (CPU s, best of {reps}): SLIC {slic_s * 1000:.0f} ms ({int(segments.max()) + 1} superpixels), "
          f"building {n} samples {build_s * 1000:.0f} ms, distances + feature selection + ridge {fit_s * 1000:.0f} ms; "
          f"together {(slic_s + build_s + fit_s) * 1000:.0f} ms", flush=True)


def bench_vgg16(patch: np.ndarray) -> None:
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
    parser.add_argument("--reps", type=int, default=1, help="repetitions of floor / before / after with VGG16 (best is kept)")
    parser.add_argument("--reps-tiny", type=int, default=3, help="the same with the tiny model")
    parser.add_argument("--all", action="store_true", help="also every other method's figures")
    parser.add_argument("--skip-vgg16", action="store_true", help="only the tiny model")
    parser.add_argument("--checkpoint", type=Path, help="trained model for the pictures (default: the random tiny model)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="folder for the pictures")
    args = parser.parse_args()

    torch.set_num_threads(2)
    from core.device import cpu_supports_bf16

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, native bf16: "
          f"{cpu_supports_bf16()}, load average at start {os.getloadavg()[0]:.2f} (other work on this CPU makes the "
          "wall seconds noisy; the CPU seconds and the ratios are the steadier figures)", flush=True)
    patch224, patch128 = demo_tumor_patch(224), demo_tumor_patch(128)
    torch.manual_seed(0)
    tiny = build_model("tiny").eval()
    if not args.skip_vgg16:
        torch.manual_seed(0)
        bench_floor(build_model("vgg16").eval(), "VGG16 (random init) at 224 px", patch224, args.reps)
    bench_floor(tiny, "tiny model at 128 px", patch128, args.reps_tiny)
    lime_split(tiny, patch128)
    if args.all:
        if not args.skip_vgg16:
            bench_vgg16(patch224)
        bench_tiny(patch128)
        if args.checkpoint is not None:
            model, meta = load_checkpoint(args.checkpoint)
            size = int(meta.get("patch_size", 128))
            save_pictures(model, demo_tumor_patch(size), args.out, f"{meta.get('label', args.checkpoint.name)}, {model.arch}")
        else:
            save_pictures(tiny, patch128, args.out, "random tiny model")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
