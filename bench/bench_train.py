"""Training throughput: optimizer steps on in-memory batches, fp32 baseline vs the configuration `train` uses.

    python bench/bench_train.py                          # tiny, 128 px, on this machine's device
    python bench/bench_train.py --arch vgg16 --patch-size 512 --batch-size 32   # the recipe's model (GPU)

Prints patches/s of (1) the baseline: fp32, default memory layout; (2) what ``core.training``
uses on the device: on CUDA bf16 autocast (fp16 + GradScaler without bf16) and channels_last,
on CPU fp32 (and bf16 autocast shown for comparison); and the ratio to the baseline.
Input batches are random tensors already on the device: this is the model's ceiling, patch
reading (threads) comes on top.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from core.device import autocast_for, device_label, resolve_device  # noqa: E402
from core.model import build_model  # noqa: E402
from core.training import train_precision  # noqa: E402


def measure(arch: str, size: int, batch: int, device: torch.device, precision: str, channels_last: bool, seconds: float) -> float:
    """Return training patches/s for ``seconds`` of steps after two warm-up steps."""
    torch.manual_seed(0)
    model = build_model(arch).to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=5e-5, alpha=0.9, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    x = torch.rand(batch, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, device=device) > 0.5).float()

    def step() -> None:
        with autocast_for(device, precision):
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(2):
        step()
    sync()
    steps, started = 0, time.perf_counter()
    while True:
        step()
        steps += 1
        if steps % 2 == 0:
            sync()
            if time.perf_counter() - started >= seconds:
                break
    sync()
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny", choices=["tiny", "vgg16"])
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per configuration")
    args = parser.parse_args()
    device = resolve_device(args.device)
    used = train_precision(device, "auto")
    configs = [("baseline fp32", "fp32", False)]
    if device.type == "cuda":
        configs.append((f"train: {used} + channels_last", used, True))
    else:
        configs.append(("train: fp32 (CPU default)", "fp32", False))
        configs.append(("bf16 autocast + channels_last (opt-in)", "bf16", True))
    print(f"{args.arch}, {args.patch_size} px, batch {args.batch_size}, {device_label(device)}")
    baseline = None
    for name, precision, channels_last in configs:
        rate = measure(args.arch, args.patch_size, args.batch_size, device, precision, channels_last, args.seconds)
        baseline = baseline or rate
        print(f"  {name:42s} {rate:9.1f} patches/s   x{rate / baseline:.2f}")


if __name__ == "__main__":
    main()
