"""``python -m core predict``: run a model over slides into the SQLite store (and a CSV).

    python -m core predict data/demo/slides --model models/demo-tiny.pt --db results.sqlite
    python -m core predict a.svs b.svs --model runs/vgg16/best.pt --csv patches.csv --device cuda
    torchrun --nproc-per-node 4 -m core predict data/slides --model best.pt --db results.sqlite

Under torchrun the slides are sharded across the processes (rank r takes slides r, r + N, ...),
each on its own device, all writing the same SQLite store; rank 0 writes the CSV once every
rank has finished. A slide that fails is reported and skipped; the exit status is then 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.cli import common
from core.errors import CommandError, PathologyError

HELP = "run a model over slides into the SQLite store (and a CSV)"


def _init_process_group(world: int, device_name: str):
    """Start torch.distributed (NCCL on GPUs, gloo on CPU) when launched by torchrun; return it or None."""
    if world <= 1:
        return None
    import torch
    import torch.distributed as dist

    backend = "nccl" if device_name != "cpu" and torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return dist


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``predict`` (defaults: :class:`~core.tiling.TilingParams` and :mod:`core.inference`)."""
    from core.inference import DEFAULT_BATCH_SIZE, DEFAULT_WORKERS
    from core.tiling import TilingParams

    parser.add_argument("slides", nargs="+", type=Path, help="slide files or folders of slides")
    parser.add_argument("--model", required=True, type=Path, help="checkpoint file (.pt) written by `train`")
    common.add_db(parser, help="SQLite results store")
    parser.add_argument("--csv", type=Path, help="also write patch predictions: slide,x,y,width,height,prob (level-0 px)")
    common.add_patch_grid(parser, shown_level="none: the model's resolution, else its level", shown_patch_size="the model's")
    common.add_slide_mpp(parser)
    parser.add_argument("--stride", type=int, help="grid step in patch pixels (default: the patch size)")
    common.add_tissue_threshold(parser, default=TilingParams.tissue_threshold, shown=TilingParams.tissue_threshold)
    common.add_batch_size(parser, default=DEFAULT_BATCH_SIZE, shown=DEFAULT_BATCH_SIZE)
    common.add_workers(parser, default=DEFAULT_WORKERS, shown=DEFAULT_WORKERS)
    common.add_device(parser)
    common.add_precision(parser, note="default auto: bf16 where the hardware has it")
    parser.add_argument("--recompute", action="store_true", help="discard stored predictions of these runs and compute again")


def run(args: argparse.Namespace) -> int:
    """Predict every slide (this rank's share under torchrun) into the store, then write the CSV.

    Returns:
        0, or :data:`~core.cli.common.EXIT_ERROR` when any slide failed (all ranks counted).
    """
    from core.cohort import list_slides
    from core.inference import PredictionRunner, model_tiling, run_params
    from core.model import load_checkpoint
    from core.store import ResultStore, slide_fingerprint

    rank, world, local_rank = common.distributed_context()
    device = args.device
    dist = _init_process_group(world, device)
    if world > 1 and device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{local_rank % torch.cuda.device_count()}"
    model, metadata = load_checkpoint(args.model)
    if args.mpp is not None and not args.mpp > 0:
        raise CommandError(f"--mpp must be a positive number of microns per pixel, got {args.mpp}")
    tiling = model_tiling(
        metadata, level=args.level, patch_size=args.patch_size, stride=args.stride, tissue_threshold=args.tissue_threshold,
    )
    runner = PredictionRunner(
        model, model_id=metadata["model_id"], metadata=metadata, device=device, precision=args.precision,
        batch_size=args.batch_size, workers=args.workers,
    )
    paths = list_slides(args.slides)
    if not paths:
        raise CommandError("no slide files given")
    mine = paths[rank::world]
    failures = 0
    with ResultStore(args.db) as store:
        for path in mine:
            bar, update = common.progress_bar(None, f"{path.stem}" + (f" [rank {rank}]" if world > 1 else ""), "patch")
            try:
                result = runner.predict_slide(path, store, tiling, progress=update, recompute=args.recompute, slide_mpp=args.mpp)
            except PathologyError as exc:
                failures += 1
                common.print_error(f"{path}: {exc}")
                continue
            finally:
                bar.close()
            status = "stored run reused" if result.reused else f"{result.computed} patches computed"
            print(
                f"{result.slide}: {len(result.predictions)} patches, max prob {result.predictions.prob.max(initial=0):.3f} "
                f"({status}, {result.seconds:.1f} s)",
                file=sys.stderr,
            )
        if dist is not None:
            import torch

            count = torch.tensor([failures])
            dist.all_reduce(count)
            failures = int(count.item())
        if args.csv and rank == 0:
            runs = []
            for path in paths:
                try:
                    fingerprint = slide_fingerprint(path)
                except OSError:
                    continue
                record = next((s for s in store.slides() if s.fingerprint == fingerprint), None)
                found = record and store.find_run(record.id, metadata["model_id"], run_params(tiling, args.mpp))
                if found is not None and found.status == "complete":
                    runs.append(found.id)
            rows = store.write_csv(args.csv, runs)
            print(f"wrote {rows} patch predictions of {len(runs)} slides to {args.csv}", file=sys.stderr)
    if dist is not None:
        dist.barrier()
        dist.destroy_process_group()
    if failures:
        common.print_error(f"{failures} of {len(paths)} slides failed")
        return common.EXIT_ERROR
    return 0
