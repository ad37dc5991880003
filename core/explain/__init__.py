"""Explanations of the patch classifier and a look at its internals.

One verb for the attribution methods, as Captum has one for its own:

    >>> from core.explain import explain_patch
    >>> e = explain_patch(model, patch, "gradcam")          # patch: H x W x 3 uint8 RGB
    >>> e.map.shape == patch.shape[:2], e.probability, e.seconds
    >>> png = e.overlay(patch)

Methods (``METHODS``): saliency, smoothgrad, gradcam, occlusion, lime, ig; one module each over
the shared pipeline in ``base``. Internals: ``conv_filters``, ``feature_maps``,
``maximize_activation``; teaching: ``convolve``, ``pool``, ``KERNELS``. Hooks on a shared model
are thread-bound and always removed (``hooks``).
"""

from core.explain.activation_max import ActivationMaximization, maximize_activation
from core.explain.api import METHODS, explain_patch, explanation_key, method_defaults, patch_probability
from core.explain.base import TARGETS, ExplainError, Explanation
from core.explain.basics import KERNELS, convolve, pool
from core.explain.feature_maps import FeatureMaps, feature_maps
from core.explain.filters import ConvFilters, conv_filters, filter_kernel
from core.explain.hooks import conv_layer_names, hook_counts
from core.explain.overlay import montage, overlay

__all__ = [
    "METHODS",
    "TARGETS",
    "KERNELS",
    "ExplainError",
    "Explanation",
    "explain_patch",
    "explanation_key",
    "method_defaults",
    "patch_probability",
    "overlay",
    "montage",
    "conv_filters",
    "filter_kernel",
    "ConvFilters",
    "feature_maps",
    "FeatureMaps",
    "maximize_activation",
    "ActivationMaximization",
    "convolve",
    "pool",
    "conv_layer_names",
    "hook_counts",
]
