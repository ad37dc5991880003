"""Grad-CAM on any conv layer (Selvaraju et al. 2017, arXiv:1610.02391), as the source material defines it.

For the layer's feature maps F^1..F^k computed on the patch I and the output y_i:

    alpha_i^l = 1/|F^l| * sum_{j in F^l} d y_i / d y_j (I)      (mean gradient over each map)
    M_i^L     = ReLU( sum_l alpha_i^l F^l(I) )

then upsampled to the patch (bilinear) and optionally smoothed (Gaussian, ``smooth_sigma`` px).
Captum's ``LayerGradCam`` + ``LayerAttribution.interpolate``. A conv layer's feature maps are
its neurons' values after the activation (``after_activation``, default on: VGG's conv -> ReLU);
the default layer is the last conv. Captum hooks a private tap, never the shared model (see
``core.explain.hooks``). May run in bf16 (``precision``): only the layer gradient is needed.
Caveat: the map has the layer's resolution (16 x smaller than the patch at VGG16's last conv).
"""

from __future__ import annotations

import numpy as np
from captum.attr import LayerAttribution, LayerGradCam
from scipy import ndimage

from core.explain.base import ExplainError, Explainer, check_bool, check_number
from core.explain.hooks import default_gradcam_layer, resolve_layer, tap_layer

__all__ = ["GradCamExplainer"]


class GradCamExplainer(Explainer):
    """ReLU of the mean-gradient-weighted sum of a conv layer's feature maps, upsampled to the patch."""

    name = "gradcam"
    bytes_per_pixel = 2500  # one forward + backward to the layer (measured ~2.1 kB, VGG16 fp32)
    defaults = {"target": "cancer", "layer": None, "after_activation": True, "smooth_sigma": 0.0, "precision": "fp32"}

    def validate(self, p):
        check_number(p, "smooth_sigma", 0.0, 1000.0)
        check_bool(p, "after_activation")
        if p["layer"] is not None and not isinstance(p["layer"], str):
            raise ExplainError(f"layer must be a layer name such as 'features.28', got {p['layer']!r}")

    def _attribute(self, wrapper, model, image, x, p):
        name = p["layer"] if p["layer"] is not None else default_gradcam_layer(model)
        tapped_name, module = resolve_layer(model, name, after_activation=p["after_activation"])
        with tap_layer(module) as tap:
            cam = LayerGradCam(wrapper, tap).attribute(x, relu_attributions=True)
        low_res = tuple(cam.shape[-2:])
        cam = LayerAttribution.interpolate(cam.float(), tuple(x.shape[-2:]), "bilinear")
        heatmap = cam.detach()[0, 0].cpu().numpy().astype(np.float32)
        if p["smooth_sigma"] > 0:
            heatmap = ndimage.gaussian_filter(heatmap, sigma=p["smooth_sigma"], mode="nearest")
        return heatmap, {"layer": name, "tapped_layer": tapped_name, "layer_map_size": list(low_res)}

