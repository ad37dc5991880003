"""Benchmark of whole-slide prediction against the compute limit and a naive loop.

For the same patches of a generated demo slide, in one run, it prints:
  (a) model only: forward passes on tensors already in memory, at the best batch size;
  (b) predict_slide: tissue grid, threaded reading, batched forward, SQLite writes;
  (c) naive: read each patch, forward it alone, in plain fp32 (and, as c', in our precision);
and the ratios b/a (target >= 0.9) and b/c (target >= 3); then the peak RSS of
predict_slide on a slide and on one with 4x the area (target: < 1.2x), each in a fresh process.

    python bench/bench_predict.py [--arch tiny|vgg16|both] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.demo import plan_slide, write_slide  # noqa: E402
from core.device import device_label, resolve_device  # noqa: E402
from core.inference import PredictionRunner, to_tensor  # noqa: E402
from core.model import build_model  # noqa: E402
from core.slide_io import open_slide  # noqa: E402
from core.store import ResultStore  # noqa: E402
from core.tiling import TilingParams, tile_grid  # noqa: E402

SETUPS = {
    # arch: (slide width px, tiling)
    "tiny": (6144, TilingParams(level=1, patch_size=128)),
    "vgg16": (4096, TilingParams(level=0, patch_size=224)),
}


def make_slide(folder: Path, width: int, name: str = "bench") -> Path:
    path = folder / f"{name}_{width}.tiff"
    if not path.exists():
        write_slide(plan_slide(name, "tumor", "test", width, (42, width)), path)
    return path


def model_only(runner: PredictionRunner, patches: np.ndarray) -> tuple[float, int]:
    """Return (patches/s, batch size) of the best batch size on in-memory tensors."""
    best = (0.0, 0)
    for batch_size in (8, 16, 32, 64):
        tensors = [to_tensor(patches[i : i + batch_size], runner.device) for i in range(0, len(patches), batch_size)]
        runner.forward_tensor(tensors[0][:2])  # warm-up
        started = time.perf_counter()
        for batch in tensors:
            runner.forward_tensor(batch)
        rate = len(patches) / (time.perf_counter() - started)
        best = max(best, (rate, batch_size))
    return best


def naive(runner: PredictionRunner, path: Path, xs, ys, tiling: TilingParams) -> float:
    """Return patches/s of reading each patch and forwarding it alone."""
    slide = open_slide(path)
    started = time.perf_counter()
    for x, y in zip(xs, ys):
        patch = slide.read_region((int(x), int(y)), tiling.level, (tiling.patch_size, tiling.patch_size))
        runner.forward(patch[None])
    return len(xs) / (time.perf_counter() - started)


def peak_rss_mb(path: Path, arch: str, tiling: TilingParams, threads: int) -> float:
    """Return the peak RSS (MB) of a fresh process running predict_slide on ``path``."""
    code = f"""
import resource, sys, tempfile, torch
sys.path.insert(0, {str(ROOT)!r})
torch.set_num_threads({threads})
from core.inference import predict_slide
from core.model import build_model
from core.store import ResultStore
from core.tiling import TilingParams
torch.manual_seed(0)
with tempfile.TemporaryDirectory() as tmp:
    predict_slide({str(path)!r}, build_model({arch!r}), ResultStore(tmp + '/r.sqlite'), TilingParams(**{tiling.to_dict()!r}), device='cpu')
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def bench(arch: str, folder: Path, threads: int) -> dict:
    width, tiling = SETUPS[arch]
    path = make_slide(folder, width)
    torch.manual_seed(0)
    runner = PredictionRunner(build_model(arch), device="auto", precision="auto")
    slide = open_slide(path)
    grid = tile_grid(slide, tiling)
    patches = np.stack([slide.read_region((int(x), int(y)), tiling.level, (tiling.patch_size,) * 2) for x, y in zip(grid.x, grid.y)])

    rate_a, best_batch = model_only(runner, patches)
    runner.batch_size = best_batch
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultStore(Path(tmp) / "r.sqlite")
        started = time.perf_counter()
        result = runner.predict_slide(path, store, tiling)
        rate_b = len(result.predictions) / (time.perf_counter() - started)
        store.close()
    subset = slice(0, min(len(grid), 48 if arch == "vgg16" else 400))
    # (c) the plain PyTorch loop: fp32, default memory layout, one patch per forward.
    torch.manual_seed(0)
    plain = PredictionRunner(build_model(arch), device="auto", precision="fp32")
    rate_c = naive(plain, path, grid.x[subset], grid.y[subset], tiling)
    # (c') the same loop with our precision: what batching and parallel reading alone bring.
    rate_c_same = naive(runner, path, grid.x[subset], grid.y[subset], tiling)

    big = make_slide(folder, width * 2)
    rss_small = peak_rss_mb(path, arch, tiling, threads)
    rss_big = peak_rss_mb(big, arch, tiling, threads)
    return {
        "arch": arch,
        "slide_px": list(slide.dimensions),
        "patches": len(grid),
        "patch": f"{tiling.patch_size} px at level {tiling.level}",
        "precision": runner.precision,
        "a_model_only_per_s": round(rate_a, 1),
        "a_best_batch": best_batch,
        "b_predict_slide_per_s": round(rate_b, 1),
        "c_naive_fp32_per_s": round(rate_c, 1),
        "c_naive_same_precision_per_s": round(rate_c_same, 1),
        "b_over_c_same_precision": round(rate_b / rate_c_same, 2),
        "b_over_a": round(rate_b / rate_a, 3),
        "b_over_c": round(rate_b / rate_c, 2),
        "peak_rss_mb": round(rss_small),
        "peak_rss_4x_area_mb": round(rss_big),
        "rss_ratio": round(rss_big / rss_small, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["tiny", "vgg16", "both"], default="both")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "out", help="folder for the generated slides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {device_label(resolve_device('auto'))}, torch {torch.__version__}")
    for arch in (["tiny", "vgg16"] if args.arch == "both" else [args.arch]):
        figures = bench(arch, args.cache, args.threads)
        print(json.dumps(figures))
        print(
            f"{arch}: (a) {figures['a_model_only_per_s']} patches/s  (b) {figures['b_predict_slide_per_s']}  "
            f"(c) {figures['c_naive_fp32_per_s']} (naive fp32; {figures['c_naive_same_precision_per_s']} naive {figures['precision']})  "
            f"b/a {figures['b_over_a']} (target >= 0.9)  b/c {figures['b_over_c']} (target >= 3; "
            f"{figures['b_over_c_same_precision']} at equal precision)  RSS {figures['peak_rss_mb']} -> {figures['peak_rss_4x_area_mb']} MB "
            f"x{figures['rss_ratio']} (target < 1.2)"
        )


if __name__ == "__main__":
    main()
