"""One verb for every explanation method: ``explain_patch(model, image, method, **params)``."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch
from torch import nn

from core.explain.base import (
    Explainer,
    ExplainError,
    Explanation,
    ModelOutput,
    check_image,
    image_to_tensor,
    model_device,
)
from core.explain.grad_cam import GradCamExplainer
from core.explain.integrated_gradients import IntegratedGradientsExplainer
from core.explain.lime_slic import LimeExplainer
from core.explain.occlusion import OcclusionExplainer
from core.explain.saliency import SaliencyExplainer
from core.explain.smoothgrad import SmoothGradExplainer

__all__ = ["METHODS", "explain_patch", "explanation_key", "method_defaults", "patch_probability"]

# name -> the method; order = the order the app lists them in.
METHODS: dict[str, Explainer] = {
    e.name: e
    for e in (
        SaliencyExplainer(),
        SmoothGradExplainer(),
        GradCamExplainer(),
        OcclusionExplainer(),
        LimeExplainer(),
        IntegratedGradientsExplainer(),
    )
}


def _method(method: str) -> Explainer:
    if method not in METHODS:
        raise ExplainError(f"unknown explanation method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method]


def method_defaults(method: str) -> dict[str, Any]:
    """Return a copy of a method's parameters with their defaults."""
    return dict(_method(method).defaults)


def explain_patch(model: nn.Module, image: np.ndarray, method: str, **params: Any) -> Explanation:
    """Return the explanation of ``model``'s output for one patch by one method.

    Args:
        model: a patch classifier: (N, 3, H, W) float RGB in [0, 1] -> one logit per patch.
            Shared models are safe: nothing on them is changed, and two explanations may run
            at once in two threads.
        image: H x W x 3 uint8 RGB.
        method: ``saliency``, ``smoothgrad``, ``gradcam``, ``occlusion``, ``lime`` or ``ig``.
        **params: the method's parameters (``method_defaults(method)`` lists them), among them
            ``target``: ``"cancer"`` (F(I), default), ``"not_cancer"`` (1 - F(I)) or ``"logit"``,
            and ``precision``: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"`` (pixel-gradient
            methods always run in fp32).

    Returns:
        an :class:`Explanation` whose ``map`` is H x W float32, aligned with the image.

    Raises:
        ExplainError: unknown method or parameter, bad value, bad image, or the model failed.
    """
    return _method(method).explain(model, image, **params)


def explanation_key(model_id: str, patch_key: str, method: str, params: dict | None = None) -> str:
    """Return a stable cache key for one explanation (hex sha256).

    Two calls get the same key iff they explain the same patch with the same model, method and
    effective parameters: ``params`` is completed with the method's defaults first, so
    ``{}`` and the explicit defaults give the same key.

    Args:
        model_id: the model's identity (``core.model.model_id_of``, checkpoint metadata).
        patch_key: anything that names the patch's pixels, e.g. ``f"{slide}:{x}:{y}:{level}:{size}"``.
    """
    explainer = _method(method)
    effective = explainer.resolve_params(dict(params or {}))
    blob = json.dumps(
        {"model": str(model_id), "patch": str(patch_key), "method": method, "params": effective},
        sort_keys=True,
        default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def patch_probability(model: nn.Module, image: np.ndarray) -> float:
    """Return F(I), the model's probability of cancer in [0, 1], for one H x W x 3 uint8 RGB patch (one fp32 forward).

    Raises:
        ExplainError: bad image, or the model does not return one logit.
    """
    image = check_image(image)
    device = model_device(model)
    with torch.inference_mode(), torch.autocast(device_type=device.type, enabled=False):
        return float(ModelOutput(model, "cancer")(image_to_tensor(image, device))[0])
