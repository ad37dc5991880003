"""Scale-out under ``torchrun``: process group, device per rank, and the few collectives training needs.

``torchrun --nproc-per-node N -m core train ...`` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK in their environment; each joins one process group (NCCL on GPUs, gloo on CPU),
trains a DistributedDataParallel replica on its own share of the three-step samples, and only
rank 0 writes logs and checkpoints. Without torchrun everything here is a no-op (world size 1).

Several machines (``torchrun --nnodes M --rdzv-backend c10d ...``) need no shared folder: the
global rank, not the machine, decides the samples; only global rank 0 writes the run folder
(on its own machine), and a resumed run's state travels from the machine that holds it to every
rank over the process group (:func:`all_gather_objects`, :func:`broadcast_object`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from core.device import resolve_device

__all__ = [
    "DistContext",
    "all_gather_arrays",
    "all_gather_objects",
    "all_mean",
    "broadcast_flag",
    "broadcast_object",
    "init_distributed",
    "rank_device",
]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, local rank, and whether it started the group."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def shutdown(self) -> None:
        """Leave the process group if this context started it."""
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def rank_device(device_name: str, ctx: DistContext) -> torch.device:
    """Return this rank's device: under torchrun with CUDA, ``cuda:<local rank>`` for auto/cuda."""
    if ctx.distributed and str(device_name).lower() in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device(f"cuda:{ctx.local_rank % torch.cuda.device_count()}")
    return resolve_device(device_name)


def init_distributed(device_name: str = "auto") -> tuple[DistContext, torch.device]:
    """Join torchrun's process group when launched by it; return the context and this rank's device."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    ctx = DistContext(rank, world, local_rank)
    device = rank_device(device_name, ctx)
    if world <= 1:
        return ctx, device
    backend = "nccl" if device.type == "cuda" else "gloo"
    owns = False
    if not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend=backend)
        owns = True
    return DistContext(rank, world, local_rank, torch.distributed.get_backend(), owns), device


def _collective_device(ctx: DistContext, device: torch.device) -> torch.device:
    # NCCL only moves CUDA tensors; gloo only CPU ones.
    return device if ctx.backend == "nccl" else torch.device("cpu")


def all_mean(ctx: DistContext, device: torch.device, total: float, count: float) -> float:
    """Return sum(total) / sum(count) over all ranks."""
    if not ctx.distributed:
        return total / max(count, 1e-12)
    t = torch.tensor([total, count], dtype=torch.float64, device=_collective_device(ctx, device))
    torch.distributed.all_reduce(t)
    return float(t[0] / t[1].clamp_min(1e-12))


def all_gather_arrays(ctx: DistContext, *arrays: np.ndarray) -> list[np.ndarray]:
    """Return each array concatenated over all ranks, in rank order (through pickled objects)."""
    if not ctx.distributed:
        return [np.asarray(a) for a in arrays]
    gathered: list = [None] * ctx.world
    torch.distributed.all_gather_object(gathered, [np.asarray(a) for a in arrays])
    return [np.concatenate([part[i] for part in gathered]) for i in range(len(arrays))]


def broadcast_flag(ctx: DistContext, device: torch.device, flag: bool) -> bool:
    """Return rank 0's value of ``flag`` on every rank."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=_collective_device(ctx, device))
    torch.distributed.broadcast(t, src=0)
    return bool(t.item())


def all_gather_objects(ctx: DistContext, value: object) -> list:
    """Return every rank's ``value`` (picklable), in rank order; ``[value]`` without torchrun."""
    if not ctx.distributed:
        return [value]
    gathered: list = [None] * ctx.world
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def broadcast_object(ctx: DistContext, value: object, src: int = 0) -> object:
    """Return rank ``src``'s ``value`` (picklable; pass plain data, e.g. bytes) on every rank."""
    if not ctx.distributed:
        return value
    box = [value if ctx.rank == src else None]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]
