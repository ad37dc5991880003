"""On-the-fly augmentation of a training batch: random flips and colour perturbation, in torch.

Source material: "random vertical and horizontal flips, random color perturbations". The whole
batch is transformed at once on its device (cheap next to the forward pass); every patch gets
its own flips and its own colour factors, drawn from a ``torch.Generator`` so a seeded run is
reproducible. Input and output: float (N, 3, H, W) RGB in [0, 1].

Colour perturbation follows torchvision's ``ColorJitter`` meaning of the ranges (brightness,
contrast and saturation factors uniform in [1 - v, 1 + v], hue shift uniform in [-h, h] of a
full turn) applied in that fixed order, each step clamped to [0, 1]. Unlike
``ColorJitter`` on a batch tensor, which draws one set of factors for the whole batch, the
factors here are drawn per patch. The hue shift is a rotation of the chroma plane in YIQ space
(a linear, per-patch 3x3 matrix): the usual cheap stand-in for HSV hue rotation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ColorJitterRanges", "random_flips", "color_jitter", "augment_batch"]

# ITU-R 601 luma, as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


@dataclass(frozen=True)
class ColorJitterRanges:
    """Ranges of the colour perturbation (0 turns a component off)."""

    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    hue: float = 0.04

    @property
    def active(self) -> bool:
        return any(v > 0 for v in (self.brightness, self.contrast, self.saturation, self.hue))


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None, device) -> Tensor:
    # Drawn on the CPU generator, then moved: the same numbers whatever the device.
    return (torch.rand(n, generator=generator) * (high - low) + low).to(device)


def random_flips(x: Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> tuple[Tensor, Tensor, Tensor]:
    """Flip each patch vertically and/or horizontally, each with probability ``p``.

    Returns:
        (flipped batch, vertical flags (N,) bool, horizontal flags (N,) bool); flags on the CPU.
    """
    n = x.shape[0]
    vertical = torch.rand(n, generator=generator) < p
    horizontal = torch.rand(n, generator=generator) < p
    v = vertical.to(x.device).view(n, 1, 1, 1)
    h = horizontal.to(x.device).view(n, 1, 1, 1)
    x = torch.where(v, x.flip(2), x)  # dim 2 = rows: vertical flip
    x = torch.where(h, x.flip(3), x)  # dim 3 = columns: horizontal flip
    return x, vertical, horizontal


def _gray(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def color_jitter(x: Tensor, ranges: ColorJitterRanges, generator: torch.Generator | None = None) -> Tensor:
    """Return the batch with per-patch brightness, contrast, saturation and hue perturbed, in [0, 1]."""
    n, device = x.shape[0], x.device
    if ranges.brightness > 0:
        b = _uniform(n, 1 - ranges.brightness, 1 + ranges.brightness, generator, device).view(n, 1, 1, 1)
        x = (x * b).clamp_(0, 1)
    if ranges.contrast > 0:
        c = _uniform(n, 1 - ranges.contrast, 1 + ranges.contrast, generator, device).view(n, 1, 1, 1)
        mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        x = (c * x + (1 - c) * mean).clamp_(0, 1)
    if ranges.saturation > 0:
        s = _uniform(n, 1 - ranges.saturation, 1 + ranges.saturation, generator, device).view(n, 1, 1, 1)
        x = (s * x + (1 - s) * _gray(x)).clamp_(0, 1)
    if ranges.hue > 0:
        angle = _uniform(n, -ranges.hue, ranges.hue, generator, "cpu") * (2 * math.pi)
        cos, sin = torch.cos(angle), torch.sin(angle)
        rotation = torch.zeros(n, 3, 3)
        rotation[:, 0, 0] = 1
        rotation[:, 1, 1], rotation[:, 1, 2] = cos, -sin
        rotation[:, 2, 1], rotation[:, 2, 2] = sin, cos
        # Per patch: RGB -> YIQ, rotate (I, Q) by the angle, back to RGB; one 3x3 matrix.
        matrix = (_YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ).to(device=device, dtype=x.dtype)
        x = torch.einsum("nij,njhw->nihw", matrix, x).clamp_(0, 1)
    return x


def augment_batch(
    x: Tensor,
    generator: torch.Generator | None = None,
    *,
    flips: bool = True,
    color: ColorJitterRanges | None = ColorJitterRanges(),
) -> Tensor:
    """Return an augmented copy of a float (N, 3, H, W) batch in [0, 1]: flips, then colour.

    Shape, dtype and device are kept; values stay in [0, 1].
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a batch (N, 3, H, W); got shape {tuple(x.shape)}")
    if flips:
        x, _, _ = random_flips(x, generator)
    if color is not None and color.active:
        x = color_jitter(x, color, generator)
    return x
