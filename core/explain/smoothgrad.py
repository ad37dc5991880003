"""SmoothGrad: the average of saliency maps over noisy copies of the patch (Smilkov et al. 2017, arXiv:1706.03825).

The source material: "do the following several times: add noise to the input image, compute a
saliency map; average the resulting saliency maps". Captum's ``NoiseTunnel`` over ``Saliency``
(|gradient|), ``nt_samples_batch_size`` copies per forward. The noise is Gaussian with standard
deviation ``noise`` in image units (the image is in [0, 1], so ``noise`` is also the paper's
sigma / (x_max - x_min)), drawn from a private generator seeded by ``seed``: the same call gives
the same map, also when another explanation runs at the same time. Always float32.
"""

from __future__ import annotations

import torch
from captum.attr import NoiseTunnel, Saliency
from torch import Tensor

from core.explain.base import Explainer, check_number, check_positive_int, reduce_channels

__all__ = ["SmoothGradExplainer"]


class _SeededNoiseTunnel(NoiseTunnel):
    """Captum's NoiseTunnel drawing its noise from a private ``torch.Generator`` (not the global RNG)."""

    def __init__(self, attribution_method, generator: torch.Generator) -> None:
        super().__init__(attribution_method)
        self._generator = generator

    def _add_noise_to_input(self, input: Tensor, stdev: float, nt_samples_partition: int) -> Tensor:  # noqa: A002
        # Same contract as Captum's staticmethod: repeat each sample, add N(0, stdev^2) noise.
        expanded = input.repeat_interleave(nt_samples_partition, dim=0)
        noise = torch.randn(expanded.shape, generator=self._generator, dtype=expanded.dtype, device="cpu")
        return expanded + noise.to(expanded.device) * stdev


class SmoothGradExplainer(Explainer):
    """Mean of |d output / d pixel| over ``n_samples`` noisy copies (noise std ``noise``), batched."""

    name = "smoothgrad"
    pixel_gradient = True
    bytes_per_pixel = 2000  # per noisy copy in a batch (measured ~1.8 kB, VGG16 fp32)
    batch_params = ("batch_size", "n_samples")
    defaults = {"target": "cancer", "n_samples": 25, "noise": 0.15, "batch_size": 8, "reduce": "max", "seed": 0, "precision": "fp32"}
    choices = {"reduce": ("max", "mean")}

    def validate(self, p):
        check_positive_int(p, "n_samples", "batch_size")
        check_positive_int(p, "seed", minimum=0)
        check_number(p, "noise", 0.0, 1.0)

    def _attribute(self, wrapper, model, image, x, p):
        generator = torch.Generator().manual_seed(p["seed"])
        tunnel = _SeededNoiseTunnel(Saliency(wrapper), generator)
        grads = tunnel.attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=p["n_samples"],
            nt_samples_batch_size=min(p["batch_size"], p["n_samples"]),
            stdevs=float(p["noise"]),
            abs=True,
        )
        wrapper.first_logit = None  # every forward saw a noisy copy: the base runs the clean patch once
        return reduce_channels(grads, p["reduce"]), {}
