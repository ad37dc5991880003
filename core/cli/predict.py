"""``python -m core predict``: run a model over slides into the SQLite store (and a CSV).

    python -m core predict data/demo/slides --model models/demo-tiny.pt --db results.sqlite
    python -m core predict a.svs b.svs --model runs/vgg16/best.pt --csv patches.csv --device cuda
    torchrun --nproc-per-node 4 -m core predict data/slides --model best.pt --db results.sqlite
    torchrun --nnodes 8 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
        -m core predict --cohort cohort.csv --data-root /local/slides --model best.pt --db results.sqlite --csv patches.csv

Under torchrun (one or several machines) the slides are sharded across the processes by their
order in the cohort table (``--cohort``), else by name: rank r takes slides r, r + N, ... Every
rank checks that all ranks see the same list. No two processes write one file: each rank
writes its own store on its own machine, ``<db>.shards/local-<L>.sqlite`` (L = its local rank,
which stays with the machine when torchrun hands out global ranks in another order), and
resumes from it on the next run. When every rank has finished, the ranks send their stores
over torch.distributed to rank 0, one at a time, which merges them into ``--db`` (idempotent:
see ``python -m core store merge``) and writes ``--csv`` from the merged store. A slide that fails
is reported and skipped; the exit status is then 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from core.cli import common
from core.errors import CommandError, PathologyError

#: How long a finished rank waits for the others (its store is sent when they are done).
GATHER_TIMEOUT = timedelta(days=2)

HELP = "run a model over slides into the SQLite store (and a CSV); torchrun for several GPUs or machines"


@dataclass(frozen=True)
class _Slide:
    """One slide to predict: its name (file stem), this node's file (None: not found here) and given mpp."""

    name: str
    path: Path | None
    mpp: float | None


def _init_process_group(world: int, device_name: str):
    """Start torch.distributed (NCCL on GPUs, gloo on CPU) when launched by torchrun; return it and a gloo group, or (None, None)."""
    if world <= 1:
        return None, None
    import torch
    import torch.distributed as dist

    backend = "nccl" if device_name != "cpu" and torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    # Python objects (names, whole stores) travel over gloo, whatever moves the tensors. Its
    # timeout is long: rank 0 waits there for the slowest rank's whole share of slides
    # (hours on a large cohort), past the default 30 minutes.
    objects = dist.new_group(backend="gloo", timeout=GATHER_TIMEOUT)
    return dist, objects


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``predict`` (defaults: :class:`~core.tiling.TilingParams` and :mod:`core.inference`)."""
    from core.inference import DEFAULT_BATCH_SIZE, DEFAULT_WORKERS
    from core.tiling import TilingParams

    parser.add_argument("slides", nargs="*", type=Path, help="slide files or folders of slides (or --cohort)")
    parser.add_argument("--model", required=True, type=Path, help="checkpoint file (.pt) written by `train`")
    common.add_db(parser, help="SQLite results store (under torchrun: the merged store, on rank 0's machine)")
    parser.add_argument("--csv", type=Path, help="also write patch predictions: slide,x,y,width,height,prob (level-0 px)")
    common.add_cohort_table(parser, required=False, help="predict its slides, in its order (its mpp column is used)")
    common.add_data_root(parser)
    parser.add_argument(
        "--shards", type=Path, metavar="DIR",
        help="under torchrun: this machine's folder of per-rank stores (default <db>.shards beside --db)",
    )
    common.add_patch_grid(parser, shown_level="none: the model's resolution, else its level", shown_patch_size="the model's")
    common.add_slide_mpp(parser)
    parser.add_argument("--stride", type=int, help="grid step in patch pixels (default: the patch size)")
    common.add_tissue_threshold(parser, default=TilingParams.tissue_threshold, shown=TilingParams.tissue_threshold)
    common.add_batch_size(parser, default=DEFAULT_BATCH_SIZE, shown=DEFAULT_BATCH_SIZE)
    common.add_workers(parser, default=DEFAULT_WORKERS, shown=DEFAULT_WORKERS)
    common.add_device(parser)
    common.add_precision(parser, note="default auto: bf16 where the hardware has it")
    parser.add_argument("--recompute", action="store_true", help="discard stored predictions of these runs and compute again")


def _slides(args: argparse.Namespace) -> list[_Slide]:
    """Return the slides to predict, in the order that shards them: the cohort table's, else by name."""
    from core.cohort import data_root, list_slides, read_cohort_rows, resolve_under_root

    root = data_root(args.data_root)
    if args.cohort is not None:
        if args.slides:
            raise CommandError("give slides or --cohort, not both")
        return [_Slide(r.slide, r.path, r.mpp if r.mpp is not None else args.mpp) for r in read_cohort_rows(args.cohort, root)]
    if not args.slides:
        raise CommandError("no slide files given (slides or --cohort)")
    paths = list_slides(resolve_under_root(p, root) for p in args.slides)
    # Sorted by name (list_slides sorts within a folder): the order must not depend on the
    # order a machine lists its files or the order the arguments came in.
    return sorted((_Slide(p.stem, p, args.mpp) for p in paths), key=lambda s: (s.name, str(s.path)))


def _check_same_slides(dist, group, slides: list[_Slide], world: int) -> None:
    """Raise CommandError on every rank unless all ranks list the same slide names in the same order."""
    names: list = [None] * world
    with _peers("comparing the slide lists"):
        dist.all_gather_object(names, [s.name for s in slides], group=group)
    for other, theirs in enumerate(names):
        if theirs != names[0]:
            extra = sorted(set(theirs) ^ set(names[0]))[:3]
            raise CommandError(
                f"rank {other} lists other slides than rank 0 ({len(theirs)} vs {len(names[0])}; e.g. {', '.join(extra) or 'another order'}): "
                "every machine needs the same slides (use --cohort to fix the list)"
            )


@contextlib.contextmanager
def _peers(doing: str) -> Iterator[None]:
    """Turn a collective's failure (a rank's machine died or was stopped) into one CommandError line."""
    try:
        yield
    except RuntimeError as exc:  # torch.distributed.DistBackendError and gloo's transport errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CommandError(
            f"another rank stopped while {doing} ({first}); run the job again: the slides each rank committed are kept"
        ) from None


def _shard_path(args: argparse.Namespace, local_rank: int) -> Path:
    folder = args.shards or args.db.with_name(args.db.name + ".shards")
    return Path(folder) / f"local-{local_rank}.sqlite"


def run(args: argparse.Namespace) -> int:
    """Predict every slide (this rank's share under torchrun) into the store, then write the CSV.

    Returns:
        0, or :data:`~core.cli.common.EXIT_ERROR` when any slide failed (all ranks counted).
    """
    from core.inference import PredictionRunner, model_tiling
    from core.model import load_checkpoint

    rank, world, local_rank = common.distributed_context()
    device = args.device
    dist, group = _init_process_group(world, device)
    if world > 1 and device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{local_rank % torch.cuda.device_count()}"
    try:
        model, metadata = load_checkpoint(args.model)
        if args.mpp is not None and not args.mpp > 0:
            raise CommandError(f"--mpp must be a positive number of microns per pixel, got {args.mpp}")
        tiling = model_tiling(
            metadata, level=args.level, patch_size=args.patch_size, stride=args.stride, tissue_threshold=args.tissue_threshold,
        )
        slides = _slides(args)
        if not slides:
            raise CommandError("no slide files given")
        if dist is not None:
            _check_same_slides(dist, group, slides, world)
        runner = PredictionRunner(
            model, model_id=metadata["model_id"], metadata=metadata, device=device, precision=args.precision,
            batch_size=args.batch_size, workers=args.workers,
        )
        own = _shard_path(args, local_rank) if dist is not None else args.db
        failures, done = _predict_share(runner, tiling, slides, rank, world, own, args.recompute)
        if dist is not None:
            failures = _gather_into_db(dist, group, args, rank, world, local_rank, own, failures, done)
        if args.csv and rank == 0:
            _write_csv(args, slides, done, metadata["model_id"], tiling)
    finally:
        if dist is not None and dist.is_initialized():
            dist.destroy_process_group()
    if failures:
        common.print_error(f"{failures} of {len(slides)} slides failed")
        return common.EXIT_ERROR
    return 0


def _predict_share(runner, tiling, slides: list[_Slide], rank: int, world: int, db: Path, recompute: bool) -> tuple[int, dict[int, str]]:
    """Predict slides rank, rank + world, ... into ``db``; return (failures, {slide index: fingerprint} of those done)."""
    from core.store import ResultStore

    failures = 0
    done: dict[int, str] = {}
    with ResultStore(db) as store:
        for i in range(rank, len(slides), world):
            slide = slides[i]
            if slide.path is None:
                failures += 1
                common.print_error(f"{slide.name}: slide file not found on this machine")
                continue
            bar, update = common.progress_bar(None, slide.name + (f" [rank {rank}]" if world > 1 else ""), "patch")
            try:
                result = runner.predict_slide(slide.path, store, tiling, progress=update, recompute=recompute, slide_mpp=slide.mpp)
            except PathologyError as exc:
                failures += 1
                common.print_error(f"{slide.path}: {exc}")
                continue
            finally:
                bar.close()
            done[i] = store.slide(result.run.slide_id).fingerprint
            status = "stored run reused" if result.reused else f"{result.computed} patches computed"
            print(
                f"{result.slide}: {len(result.predictions)} patches, max prob {result.predictions.prob.max(initial=0):.3f} "
                f"({status}, {result.seconds:.1f} s)",
                file=sys.stderr,
            )
    return failures, done


def _gather_into_db(dist, group, args, rank: int, world: int, local_rank: int, own: Path, failures: int, done: dict[int, str]) -> int:
    """Send this rank's store (and any strays of its machine) to rank 0, which merges them into ``--db``; return all failures.

    One rank at a time (point to point over gloo), each store merged as it arrives: rank 0
    holds one rank's stores in memory at once, not the whole cohort's. ``done`` is updated
    in place with every rank's {slide index: fingerprint}.
    """
    from core.store import ResultStore

    files = [own]
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local_rank == 0:
        # Stores of local ranks this machine no longer runs (an earlier run had more processes
        # per machine): their committed work is merged too, never lost.
        for stray in sorted(own.parent.glob("local-*.sqlite")):
            index = stray.stem.partition("-")[2]
            if index.isdigit() and int(index) >= local_world:
                files.append(stray)

    def payload() -> dict:
        return {"failures": failures, "done": done, "stores": [(str(f), f.read_bytes()) for f in files if f.is_file()]}

    if rank != 0:
        with _peers("sending this rank's store to rank 0"):
            dist.send_object_list([payload()], dst=0, group=group)
            dist.barrier(group=group)
        return failures
    total = 0
    error: PathologyError | None = None
    with ResultStore(args.db) as store, tempfile.TemporaryDirectory(prefix="shards-", dir=Path(args.db).absolute().parent) as tmp:
        for source_rank in range(world):
            if source_rank == 0:
                part = payload()
            else:
                # Every rank's store is received even after a failed merge: a rank left
                # waiting in send would hang the job.
                box: list = [None]
                with _peers(f"receiving rank {source_rank}'s store"):
                    dist.recv_object_list(box, src=source_rank, group=group)
                part = box[0]
            total += part["failures"]
            done.update(part["done"])
            for k, (name, data) in enumerate(part["stores"]):
                if error is not None:
                    break
                copy = Path(tmp) / f"rank-{source_rank}-{k}.sqlite"
                copy.write_bytes(data)
                try:
                    report = store.merge(copy)
                except PathologyError as exc:
                    error = exc
                    break
                finally:
                    copy.unlink()
                print(
                    f"merged rank {source_rank}'s {Path(name).name}: {report.runs_added} runs added, {report.runs_completed} completed, "
                    f"{report.rows_added} patch predictions ({report.seconds:.2f} s)",
                    file=sys.stderr,
                )
    with _peers("waiting for the other ranks"):
        dist.barrier(group=group)
    if error is not None:
        raise error
    return total


def _write_csv(args, slides: list[_Slide], done: dict[int, str], model_id: str, tiling) -> None:
    """Write ``--csv`` from ``--db`` (the merged store under torchrun): the complete runs of the slides done, in slide order."""
    from core.inference import run_params
    from core.store import ResultStore

    runs = []
    with ResultStore(args.db) as store:
        by_fingerprint = {s.fingerprint: s.id for s in store.slides()}
        for i in sorted(done):
            slide_id = by_fingerprint.get(done[i])
            found = None if slide_id is None else store.find_run(slide_id, model_id, run_params(tiling, slides[i].mpp))
            if found is not None and found.status == "complete":
                runs.append(found.id)
        rows = store.write_csv(args.csv, runs)
    print(f"wrote {rows} patch predictions of {len(runs)} slides to {args.csv}", file=sys.stderr)
