"""Occlusion: slide a window over the patch, fill it with a baseline value, record the drop of the output
(Zeiler & Fergus 2014, arXiv:1311.2901).

The source material: "systematically cover parts of the input image, observe the effect on the
output value, find regions with the largest effect". Captum's ``Occlusion``: the window covers
all three channels; each pixel's value is the drop y(I) - y(I with the window filled), averaged
over the windows that cover it (windows at the right and bottom borders are cut to the patch).
Positive = the region supports the output. ``batch_size`` occluded copies per forward; may run
in bf16 (``precision``). Cost: one forward per window position (:func:`window_count`), plus one
of the patch. Captum builds its occluded batches in the default NCHW layout, which oneDNN runs
VGG16 about 2x slower on in bf16 (convolutions and max-pools); ``ModelOutput`` hands the model
channels_last copies instead, which brought occlusion with VGG16 from 1.3-1.4x to 1.0x the CPU
time of its batched forwards (bench/bench_explain.py). Captum's own mask and accumulation
work is the rest (~20 ms on a 128 px patch).
"""

from __future__ import annotations

import torch
from captum.attr import Occlusion

from core.explain.base import Explainer, check_number, check_positive_int, reduce_channels

__all__ = ["OcclusionExplainer", "window_count"]


def window_count(height: int, width: int, window: int, stride: int) -> int:
    """Return the number of window positions Captum's Occlusion takes on a height x width px image (one forward each)."""
    wh, ww = min(window, height), min(window, width)
    return (-(-max(height - wh, 0) // stride) + 1) * (-(-max(width - ww, 0) // stride) + 1)


class OcclusionExplainer(Explainer):
    """Drop of the output when a ``window`` x ``window`` square (step ``stride``) is set to ``baseline``."""

    name = "occlusion"
    signed = True
    bytes_per_pixel = 1000  # per occluded copy in a batch, forward only (measured ~1.0 kB, VGG16 fp32)
    batch_params = ("batch_size",)
    defaults = {"target": "cancer", "window": 32, "stride": 16, "baseline": 0.5, "batch_size": 16, "precision": "fp32"}

    def validate(self, p):
        check_positive_int(p, "window", "stride", "batch_size")
        check_number(p, "baseline", 0.0, 1.0)

    def _attribute(self, wrapper, model, image, x, p):
        h, w = x.shape[-2:]
        wh, ww = min(p["window"], h), min(p["window"], w)
        with torch.no_grad():
            attribution = Occlusion(wrapper).attribute(
                x,
                sliding_window_shapes=(3, wh, ww),
                strides=(3, p["stride"], p["stride"]),
                baselines=float(p["baseline"]),
                perturbations_per_eval=p["batch_size"],
            )
        # Every channel holds the same value (the window spans all three): take one.
        return reduce_channels(attribution[:, :1], "sum"), {"windows": window_count(h, w, p["window"], p["stride"])}
