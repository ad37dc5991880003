"""Where the time of whole-slide prediction goes on this machine: the per-device figures of docs/scale.md.

For the tiny demo network and VGG16 (precision ``--precision``, default bf16), on a generated
demo slide, in one run:
  reading  patches/s of the threaded patch reader (region reads + JPEG/zlib decoding + resize),
           with ``--workers`` threads and with one;
  forward  patches/s of the model alone on tensors already in memory (batch ``--batch-size``);
  writing  rows/s of the SQLite store (``add_predictions``, 512-row commits, as predict does);
  total    patches/s of ``PredictionRunner.predict_slide`` (reading overlaps the forward);
and the share of each stage in the total if run one after the other. The baseline of the run is
the forward pass alone: ``total / forward`` says how close whole-slide prediction is to it.
The load average is printed before and after (the machine may be shared).

    python bench/bench_scale.py [--arch tiny|vgg16|vgg16-512|both|all] [--threads 2] [--precision bf16|fp32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
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
from core.tiling import TilingParams, read_patches, tile_grid  # noqa: E402

SETUPS = {
    # arch: (slide width px, tiling, most patches timed)
    "tiny": (6144, TilingParams(level=1, patch_size=128), 2000),
    "vgg16": (4096, TilingParams(level=0, patch_size=224), 96),
    # The source material's patches: 512 px (about 5.2x the pixels and FLOPs of 224 px).
    "vgg16-512": (4096, TilingParams(level=0, patch_size=512), 24),
}


def make_slide(folder: Path, width: int) -> Path:
    path = folder / f"bench_{width}.tiff"
    if not path.exists():
        write_slide(plan_slide("bench", "tumor", "test", width, (42, width)), path)
    return path


def read_rate(path: Path, grid, n: int, batch: int, workers: int) -> float:
    """Return patches/s of reading ``n`` grid patches in batches with ``workers`` threads."""
    slide = open_slide(path)
    starts = list(range(0, n, batch))
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(lambda s: read_patches(slide, grid.x[s : s + batch], grid.y[s : s + batch], grid.plan), starts):
            pass
    return n / (time.perf_counter() - started)


def bench(arch: str, folder: Path, args: argparse.Namespace) -> dict:
    width, tiling, most = SETUPS[arch]
    path = make_slide(folder, width)
    slide = open_slide(path)
    grid = tile_grid(slide, tiling)
    n = min(len(grid), most)
    sub = grid.subset(np.arange(len(grid)) < n)
    torch.manual_seed(0)
    runner = PredictionRunner(build_model(arch.split("-")[0]), device="auto", precision=args.precision, batch_size=args.batch_size, workers=args.workers)
    patches = read_patches(slide, sub.x, sub.y, sub.plan)
    tensors = [to_tensor(patches[i : i + args.batch_size], runner.device) for i in range(0, n, args.batch_size)]
    runner.forward_tensor(tensors[0][:2])  # warm-up
    started = time.perf_counter()
    for batch in tensors:
        runner.forward_tensor(batch)
    forward = n / (time.perf_counter() - started)
    reading = read_rate(path, sub, n, args.batch_size, args.workers)
    reading_one = read_rate(path, sub, n, args.batch_size, 1)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        with ResultStore(Path(tmp) / "w.sqlite") as store:
            record = store.register_slide(path, width=slide.dimensions[0], height=slide.dimensions[1], mpp=None)
            store.register_model("m", arch=arch, metadata={})
            run = store.get_or_create_run(record.id, "m", {"bench": 1})
            xs = np.arange(20000) * 7
            started = time.perf_counter()
            for s in range(0, xs.size, 512):
                store.add_predictions(run.id, xs[s : s + 512], np.zeros(min(512, xs.size - s)), 64, 64, rng.random(min(512, xs.size - s)))
            writing = xs.size / (time.perf_counter() - started)
        with ResultStore(Path(tmp) / "r.sqlite") as store:
            started = time.perf_counter()
            result = runner._predict_grid(slide, sub, store, _one_run(store, path, slide, arch), 0, n, None)
            total = result / (time.perf_counter() - started)
    serial = {"reading": 1 / reading, "forward": 1 / forward, "writing": 1 / writing}
    whole = sum(serial.values())
    return {
        "arch": arch,
        "patch": f"{tiling.patch_size} px at level {tiling.level}",
        "patches_timed": n,
        "precision": runner.precision,
        "threads": torch.get_num_threads(),
        "reading_per_s": round(reading, 1),
        "reading_1_thread_per_s": round(reading_one, 1),
        "forward_per_s": round(forward, 1),
        "writing_rows_per_s": round(writing),
        "total_per_s": round(total, 1),
        "total_over_forward": round(total / forward, 3),
        "serial_share": {k: round(v / whole, 3) for k, v in serial.items()},
    }


def _one_run(store: ResultStore, path: Path, slide, arch: str) -> int:
    record = store.register_slide(path, width=slide.dimensions[0], height=slide.dimensions[1], mpp=None)
    store.register_model("m", arch=arch, metadata={})
    return store.get_or_create_run(record.id, "m", {"bench": 2}).id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=[*SETUPS, "both", "all"], default="both", help="both: tiny and vgg16; all: and vgg16-512")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--workers", type=int, default=2, help="patch-reading threads")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "out", help="folder for the generated slides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {device_label(resolve_device('auto'))}, torch {torch.__version__}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for arch in {"both": ["tiny", "vgg16"], "all": list(SETUPS)}.get(args.arch, [args.arch]):
        figures = bench(arch, args.cache, args)
        print(json.dumps(figures))
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
