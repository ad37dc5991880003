"""Command-line subcommands that run the model: ``predict`` (and ``train`` when present).

``predict`` under ``torchrun --nproc-per-node N -m core predict ...`` shards the slides
across the processes (rank r takes slides r, r + N, ...), each on its own device, all
writing the same SQLite store; rank 0 writes the CSV once every rank has finished.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core import cli
from core.errors import PathologyError


def distributed_context() -> tuple[int, int, int]:
    """Return (rank, world_size, local_rank) from torchrun's environment (0, 1, 0 when absent)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


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


def _add_predict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("slides", nargs="+", type=Path, help="slide files or folders of slides")
    parser.add_argument("--model", required=True, type=Path, help="checkpoint file (.pt) written by `train`")
    parser.add_argument("--db", type=Path, default=Path("results.sqlite"), help="SQLite results store (default results.sqlite)")
    parser.add_argument("--csv", type=Path, help="also write patch predictions: slide,x,y,width,height,prob (level-0 px)")
    parser.add_argument("--level", type=int, help="pyramid level of the patches (default: the model's)")
    parser.add_argument("--patch-size", type=int, help="patch side in pixels of that level (default: the model's)")
    parser.add_argument("--stride", type=int, help="grid step in level pixels (default: the patch size)")
    parser.add_argument("--tissue-threshold", type=float, default=0.25, help="minimum tissue fraction of a patch (default 0.25)")
    parser.add_argument("--batch-size", type=int, default=32, help="patches per forward pass (default 32)")
    parser.add_argument("--workers", type=int, default=2, help="patch-reading threads (default 2)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16 (default auto: bf16 where the hardware has it)")
    parser.add_argument("--recompute", action="store_true", help="discard stored predictions of these runs and compute again")


def _run_predict(args: argparse.Namespace) -> int:
    from core.inference import PredictionRunner, run_params, slide_paths
    from core.model import load_checkpoint
    from core.store import ResultStore
    from core.tiling import TilingParams

    rank, world, local_rank = distributed_context()
    device = args.device
    dist = _init_process_group(world, device)
    if world > 1 and device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{local_rank % torch.cuda.device_count()}"
    model, metadata = load_checkpoint(args.model)
    tiling = TilingParams(
        level=args.level if args.level is not None else int(metadata.get("level", 0) or 0),
        patch_size=args.patch_size or int(metadata["patch_size"]),
        stride=args.stride,
        tissue_threshold=args.tissue_threshold,
    )
    runner = PredictionRunner(
        model, model_id=metadata["model_id"], metadata=metadata, device=device, precision=args.precision,
        batch_size=args.batch_size, workers=args.workers,
    )
    paths = slide_paths(args.slides)
    if not paths:
        raise cli.CommandError("no slide files given")
    mine = paths[rank::world]
    failures = 0
    with ResultStore(args.db) as store:
        for path in mine:
            bar, update = cli._progress_bar(None, f"{path.stem}" + (f" [rank {rank}]" if world > 1 else ""), "patch")
            try:
                result = runner.predict_slide(path, store, tiling, progress=update, recompute=args.recompute)
            except PathologyError as exc:
                failures += 1
                print(f"error: {path}: {exc}", file=sys.stderr)
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
                    from core.store import slide_fingerprint

                    fingerprint = slide_fingerprint(path)
                except OSError:
                    continue
                record = next((s for s in store.slides() if s.fingerprint == fingerprint), None)
                run = record and store.find_run(record.id, metadata["model_id"], run_params(tiling))
                if run is not None and run.status == "complete":
                    runs.append(run.id)
            rows = store.write_csv(args.csv, runs)
            print(f"wrote {rows} patch predictions of {len(runs)} slides to {args.csv}", file=sys.stderr)
    if dist is not None:
        dist.barrier()
        dist.destroy_process_group()
    if failures:
        print(f"error: {failures} of {len(paths)} slides failed", file=sys.stderr)
        return cli.EXIT_ERROR
    return 0


cli.register("predict", "run a model over slides into the SQLite store (and a CSV)", _add_predict, _run_predict)
