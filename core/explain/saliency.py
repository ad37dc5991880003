"""Gradient saliency: |d y_i / d x_k| for every input pixel k (Simonyan et al. 2014, arXiv:1312.6034).

The source material reads it as the weights of a local linear surrogate, the first-order Taylor
approximation y_i(x') ~ y_i(x) + (d y_i / d X)(x) (x' - x). One value per pixel: the max (the
paper's choice) or the mean of |gradient| over the three colour channels. Computed with Captum's
``Saliency``, always in float32 (pixel gradients degrade badly in bf16). Caveat: noisy; see
SmoothGrad.
"""

from __future__ import annotations

from captum.attr import Saliency as _CaptumSaliency

from core.explain.base import Explainer, reduce_channels

__all__ = ["SaliencyExplainer"]


class SaliencyExplainer(Explainer):
    """|d output / d pixel|, reduced over channels by ``reduce`` (``"max"`` or ``"mean"``)."""

    name = "saliency"
    pixel_gradient = True
    bytes_per_pixel = 3000  # one forward + backward to the pixels (measured ~2.6 kB, VGG16 fp32)
    defaults = {"target": "cancer", "reduce": "max", "precision": "fp32"}
    choices = {"reduce": ("max", "mean")}

    def _attribute(self, wrapper, model, image, x, p):
        grads = _CaptumSaliency(wrapper).attribute(x.requires_grad_(True), abs=True)
        return reduce_channels(grads, p["reduce"]), {}
