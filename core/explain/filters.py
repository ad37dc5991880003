"""The weights of a conv layer, as pictures (source material: AlexNet's first-layer filters shown as RGB).

A first-layer filter has depth 3 (R, G, B): its three k x k slices are combined into one small
k x k RGB image, min-max rescaled to 0..255 per filter (all three channels together, so the
colour balance is kept). A deeper layer's filter has one k x k slice per input channel: shown
per channel, rescaled per filter likewise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.errors import ExplainError
from core.explain.hooks import conv_layer_names, resolve_layer
from core.explain.overlay import montage, rescale_uint8

__all__ = ["ConvFilters", "conv_filters", "filter_kernel"]


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields, not objects
class ConvFilters:
    """A conv layer's filters.

    Attributes:
        layer: the layer's name.
        weights: float32 (C_out, C_in, k, k), as stored (they act on the normalised input
            for the first layer: the model normalises inside).
        bias: float32 (C_out,) or None.
        rgb: True for a first layer (C_in == 3): ``tiles`` is (C_out, k, k, 3) RGB.
        tiles: uint8, each filter min-max rescaled to 0..255: (C_out, k, k, 3) when ``rgb``,
            else (C_out, C_in, k, k).
    """

    layer: str
    weights: np.ndarray
    bias: np.ndarray | None
    rgb: bool
    tiles: np.ndarray

    def grid(self, cols: int | None = None, scale: int = 8, max_filters: int | None = None, pad: int = 1) -> np.ndarray:
        """Return the filters as one uint8 picture: RGB tiles (first layer) or one row per filter (C_in slices)."""
        tiles = self.tiles if max_filters is None else self.tiles[:max_filters]
        if self.rgb:
            return montage(tiles, cols=cols, pad=pad, scale=scale)
        # Deeper layer: filter f is row f, its input-channel slices side by side.
        n_out, n_in = tiles.shape[:2]
        flat = tiles.reshape(n_out * n_in, *tiles.shape[2:])
        return montage(flat, cols=cols or n_in, pad=pad, scale=scale)


def conv_filters(model: nn.Module, layer: str | None = None) -> ConvFilters:
    """Return the filters of a conv layer (default: the first one).

    Raises:
        ExplainError: no such layer, or it is not a Conv2d.
    """
    if layer is None:
        names = conv_layer_names(model)
        if not names:
            raise ExplainError("the model has no Conv2d layer")
        layer = names[0]
    name, module = resolve_layer(model, layer)
    if not isinstance(module, nn.Conv2d):
        raise ExplainError(f"layer {name!r} is a {type(module).__name__}, not a conv layer; conv layers: {', '.join(conv_layer_names(model))}")
    with torch.no_grad():
        weights = module.weight.detach().float().cpu().numpy().copy()
        bias = None if module.bias is None else module.bias.detach().float().cpu().numpy().copy()
    rgb = weights.shape[1] == 3
    if rgb:
        tiles = np.stack([rescale_uint8(w) for w in weights]).transpose(0, 2, 3, 1)  # (C_out, k, k, 3)
    else:
        tiles = np.stack([rescale_uint8(w) for w in weights])  # (C_out, C_in, k, k)
    return ConvFilters(layer=name, weights=weights, bias=bias, rgb=rgb, tiles=np.ascontiguousarray(tiles))


def filter_kernel(model: nn.Module, layer: str | None = None, index: int = 0) -> np.ndarray:
    """Return filter ``index`` of a conv layer as a (k, k, C_in) float32 kernel for :func:`convolve`."""
    filters = conv_filters(model, layer)
    if not 0 <= index < filters.weights.shape[0]:
        raise ExplainError(f"layer {filters.layer!r} has {filters.weights.shape[0]} filters; index {index} is out of range")
    return np.ascontiguousarray(filters.weights[index].transpose(1, 2, 0))
