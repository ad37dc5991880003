"""Activation maximization: the input a unit responds to most (Erhan et al. 2009; Simonyan et al. 2014).

The source material: denote by y_i(x) the value of the output neuron i on the input x, and
maximize y_i(x) - lambda * ||x||_2^2 over the inputs x, by gradient ascent. Here x is an RGB
image in [0, 1] (the model normalises inside), started from a neutral grey image (0.5), kept in
[0, 1] by clamping after each step. The unit is either the output (``target``: the logit, the
probability of cancer or of not cancer) or the mean of one channel of a conv layer. A channel's
objective uses the conv's inner potential xi (before the ReLU, ``after_activation=False``): a
ReLU map of a flat grey image is often all zero, with no gradient to climb, and maximising xi
maximises ReLU(xi) wherever it is positive. The default output is the logit: the probability
saturates at 1, where its gradient vanishes.

Steps use Adam on x (gradient ascent with a per-pixel step size ~``lr``; plain ascent crawls on
gradients of 1e-4 per pixel). Optional regularisers known to give more natural pictures:
``jitter`` (a random shift of up to that many pixels before each forward) and ``blur_every``
(a Gaussian blur of x, ``blur_sigma`` px, every that many steps).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from core.explain.base import (
    TARGETS,
    ExplainError,
    ModelOutput,
    check_bool,
    check_number,
    check_positive_int,
    model_device,
    precision_context,
)
from core.explain.hooks import capture_layer, resolve_layer, run_until_capture

__all__ = ["ActivationMaximization", "maximize_activation"]


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields, not objects
class ActivationMaximization:
    """The result of activation maximization.

    Attributes:
        image: H x W x 3 uint8, the final x.
        objective: float32 (steps,), y_i(x) - lambda * ||x||^2 at the start of each step.
        activation: float32 (steps,), y_i(x) alone.
        unit: what was maximised, e.g. ``"output logit"`` or ``"features.28 channel 5 (mean)"``.
        params: the parameters used, defaults filled in.
        seconds: wall time.
    """

    image: np.ndarray
    objective: np.ndarray
    activation: np.ndarray
    unit: str
    params: dict
    seconds: float


def maximize_activation(
    model: nn.Module,
    *,
    target: str = "logit",
    layer: str | None = None,
    channel: int = 0,
    after_activation: bool = False,
    size: int = 224,
    steps: int = 100,
    lr: float = 0.05,
    lam: float = 1e-5,
    jitter: int = 0,
    blur_every: int = 0,
    blur_sigma: float = 0.5,
    seed: int = 0,
    precision: str = "fp32",
    progress: Callable[[int, int, float, float], None] | None = None,
) -> ActivationMaximization:
    """Return the image that maximises y_i(x) - lam * ||x||^2, found by gradient ascent from grey.

    Args:
        target: the output unit when ``layer`` is None: ``"logit"``, ``"cancer"`` (F(I)) or
            ``"not_cancer"``.
        layer, channel: maximise the mean of this channel of this layer instead.
        size: side of the square image, px.
        steps, lr: number and size of the ascent steps (Adam).
        lam: lambda, the weight of ||x||^2 (x in [0, 1], summed over all pixels and channels).
        jitter: max random shift (px) before each forward; 0 = off.
        blur_every, blur_sigma: blur x every that many steps; 0 = off.
        seed: seeds the jitter (the run is deterministic).
        precision: ``"fp32"`` (default) or ``"bf16"``/``"auto"`` for speed.
        progress: called after each step with (steps done, steps, objective, activation) of
            that step, e.g. to draw a progress bar; it must not touch the model.

    Raises:
        ExplainError: bad parameters or layer/channel.
    """
    p = {
        "target": target, "layer": layer, "channel": channel, "after_activation": after_activation, "size": size,
        "steps": steps, "lr": lr, "lam": lam, "jitter": jitter, "blur_every": blur_every, "blur_sigma": blur_sigma,
        "seed": seed, "precision": precision,
    }
    if target not in TARGETS:
        raise ExplainError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    check_positive_int(p, "size", minimum=8)
    check_positive_int(p, "steps")
    check_positive_int(p, "channel", "jitter", "blur_every", "seed", minimum=0)
    check_number(p, "lr", 0.0, 10.0)
    check_number(p, "lam", 0.0, None)
    check_number(p, "blur_sigma", 0.01, 100.0)
    check_bool(p, "after_activation")

    device = model_device(model)
    generator = torch.Generator().manual_seed(p["seed"])
    module = None
    if layer is not None:
        name, module = resolve_layer(model, layer, after_activation=p["after_activation"])
        unit = f"{name} channel {p['channel']} (mean)"
    else:
        unit = f"output {target}"
    wrapper = ModelOutput(model, target)

    x = torch.full((1, 3, p["size"], p["size"]), 0.5, device=device).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=p["lr"], maximize=True)
    objective, activation = [], []
    started = time.perf_counter()

    def unit_value(inp: torch.Tensor, capture) -> torch.Tensor:
        if capture is None:
            return wrapper(inp)[0]
        out = run_until_capture(model, inp, capture)
        if out.ndim != 4:
            raise ExplainError(f"layer {layer!r} gives shape {tuple(out.shape)}, not feature maps (N, C, h, w)")
        if p["channel"] >= out.shape[1]:
            raise ExplainError(f"layer {layer!r} has {out.shape[1]} channels; channel {p['channel']} is out of range")
        return out[0, p["channel"]].float().mean()

    # Gradients flow to x only: the model's parameters are never touched (shared model).
    with torch.inference_mode(False), torch.enable_grad(), precision_context(device, precision) as effective:
        capture_cm = capture_layer(module, stop=True, detach=False) if module is not None else contextlib.nullcontext()
        with capture_cm as capture:
            for step in range(p["steps"]):
                inp = x
                if p["jitter"]:
                    dy, dx = (int(v) for v in torch.randint(-p["jitter"], p["jitter"] + 1, (2,), generator=generator))
                    inp = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
                y = unit_value(inp, capture)
                penalty = p["lam"] * (x.float() ** 2).sum()
                total = y.float() - penalty
                optimizer.zero_grad(set_to_none=True)
                (grad,) = torch.autograd.grad(total, x)
                x.grad = grad
                optimizer.step()
                with torch.no_grad():
                    if p["blur_every"] and (step + 1) % p["blur_every"] == 0:
                        radius = max(1, int(round(3 * p["blur_sigma"])))
                        x.copy_(gaussian_blur(x, kernel_size=2 * radius + 1, sigma=p["blur_sigma"]))
                    x.clamp_(0.0, 1.0)
                objective.append(float(total.detach()))
                activation.append(float(y.detach()))
                if progress is not None:
                    progress(step + 1, p["steps"], objective[-1], activation[-1])
    image = (x.detach()[0].permute(1, 2, 0).float().cpu().numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    p["precision"] = effective
    return ActivationMaximization(
        image=np.ascontiguousarray(image),
        objective=np.asarray(objective, dtype=np.float32),
        activation=np.asarray(activation, dtype=np.float32),
        unit=unit,
        params=p,
        seconds=time.perf_counter() - started,
    )

