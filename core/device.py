"""Compute device and numeric precision: pick CUDA or CPU, label it, and run a model in mixed precision.

Precision names used everywhere: ``"fp32"`` (no autocast), ``"bf16"``, ``"fp16"`` and ``"auto"``
(the fastest precision that is safe on the device, see :func:`resolve_precision`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator

import torch
from torch import nn

__all__ = [
    "PRECISIONS",
    "resolve_device",
    "device_label",
    "cpu_supports_bf16",
    "resolve_precision",
    "autocast_for",
    "prepare_model",
]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16", "auto")

# CPU flags (Linux /proc/cpuinfo names) that mean bf16 arithmetic runs in hardware.
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Return the torch device for a user-facing name.

    Args:
        name: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``,
            or a ``torch.device``.

    Raises:
        ValueError: unknown name, or CUDA asked for but not available / index out of range.
    """
    if isinstance(name, torch.device):
        text = str(name)
    else:
        text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {text!r} requested but CUDA is not available on this machine "
                "(no GPU or a CPU-only PyTorch build); use --device cpu or auto"
            )
        device = torch.device(text)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {text!r} requested but only {count} CUDA device(s) exist")
        return device
    raise ValueError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N")


def device_label(device: str | torch.device) -> str:
    """Return a short human label: ``"CUDA: <gpu name>"`` or ``"CPU (<n> threads)"``."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    return f"CPU ({torch.get_num_threads()} threads)"


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Return True if this CPU computes bf16 natively.

    Rule: on Linux, True iff ``/proc/cpuinfo`` lists ``avx512_bf16`` or ``amx_bf16``
    (Intel Cooper Lake / Sapphire Rapids and later, AMD Zen 4 and later). Where
    ``/proc/cpuinfo`` cannot be read, True iff PyTorch reports an AMX CPU capability.
    Plain AVX-512 is not enough: without those flags bf16 is emulated and usually
    slower than fp32.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return any(flag in flags for flag in _BF16_CPU_FLAGS)
    except OSError:
        pass
    capability = ""
    with contextlib.suppress(Exception):  # older PyTorch builds lack the call: treat as unknown
        capability = str(torch.backends.cpu.get_cpu_capability())
    return "AMX" in capability.upper()


def resolve_precision(device: str | torch.device, precision: str) -> str:
    """Return the precision actually used on ``device``: ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    ``"auto"`` means bf16 on a CPU with native bf16 (else fp32), and bf16 on a CUDA GPU that
    supports it (else fp16).

    Raises:
        ValueError: unknown precision, or bf16 asked for on a GPU without bf16.
    """
    precision = str(precision).strip().lower()
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if precision == "auto":
            return "bf16" if bf16_ok else "fp16"
        if precision == "bf16" and not bf16_ok:
            raise ValueError(f"this GPU ({torch.cuda.get_device_name(device)}) does not support bf16; use fp16")
        return precision
    if precision == "auto":
        return "bf16" if cpu_supports_bf16() else "fp32"
    return precision


@contextlib.contextmanager
def autocast_for(device: str | torch.device, precision: str) -> Iterator[str]:
    """Run the enclosed block under ``torch.autocast`` for ``precision`` on ``device``.

    Yields:
        the precision in effect (``"fp32"``, ``"bf16"`` or ``"fp16"``).
    """
    device = torch.device(device)
    effective = resolve_precision(device, precision)
    if effective == "fp32":
        yield effective
        return
    dtype = torch.bfloat16 if effective == "bf16" else torch.float16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield effective


def prepare_model(model: nn.Module, device: str | torch.device, precision: str = "fp32") -> nn.Module:
    """Put a model in eval mode on ``device``; channels_last memory when precision is not fp32.

    channels_last is what oneDNN (CPU bf16) and cuDNN tensor cores run fastest; in fp32 on CPU
    it brings nothing, so the default layout is kept. Returns the same model object.
    """
    device = torch.device(device)
    effective = resolve_precision(device, precision)
    model.eval()
    model.to(device)
    if effective != "fp32":
        model.to(memory_format=torch.channels_last)
    return model
