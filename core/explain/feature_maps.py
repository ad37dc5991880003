"""The activations of one layer for a patch: every feature map, with its max and mean.

A forward hook records the layer's output (in this thread only, removed afterwards) and stops
the forward there. A conv layer's maps are its neurons' values after the activation by default
(``after_activation``): y_j = ReLU(xi_j), as the source material's feature maps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.explain.base import ExplainError, check_image, image_to_tensor, model_device, precision_context
from core.explain.hooks import capture_layer, resolve_layer, run_until_capture
from core.explain.overlay import montage, rescale_uint8

__all__ = ["FeatureMaps", "feature_maps"]


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields, not objects
class FeatureMaps:
    """Feature maps of one layer for one patch.

    Attributes:
        layer: the name asked for; ``tapped_layer`` the module whose output this is.
        maps: float32 (C, h, w).
        max, mean: float32 (C,), per map.
        seconds: time of the forward.
    """

    layer: str
    tapped_layer: str
    maps: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    seconds: float

    def grid(self, cols: int | None = None, pad: int = 1, scale: int = 1, normalize: str = "each", max_maps: int | None = None) -> np.ndarray:
        """Return the maps as one grayscale uint8 picture.

        Args:
            normalize: ``"each"`` rescales every map to 0..255 on its own (shape is visible);
                ``"global"`` uses one scale for all (strength is comparable).
        """
        maps = self.maps if max_maps is None else self.maps[:max_maps]
        if normalize == "each":
            tiles = np.stack([rescale_uint8(m) for m in maps])
        elif normalize == "global":
            tiles = rescale_uint8(maps)
        else:
            raise ExplainError(f"normalize must be 'each' or 'global', got {normalize!r}")
        return montage(tiles, cols=cols, pad=pad, scale=scale)


def feature_maps(model: nn.Module, image: np.ndarray, layer: str, after_activation: bool = True, precision: str = "fp32") -> FeatureMaps:
    """Return the feature maps of ``layer`` for an H x W x 3 uint8 patch.

    Raises:
        ExplainError: bad image, no such layer, or the layer's output is not a (1, C, h, w) tensor.
    """
    image = check_image(image)
    name, module = resolve_layer(model, layer, after_activation=after_activation)
    device = model_device(model)
    started = time.perf_counter()
    with torch.no_grad(), precision_context(device, precision), capture_layer(module, stop=True) as capture:
        out = run_until_capture(model, image_to_tensor(image, device), capture)
    if out.ndim != 4:
        raise ExplainError(f"layer {name!r} gives a tensor of shape {tuple(out.shape)}, not feature maps (N, C, h, w)")
    maps = out[0].float().cpu().numpy().astype(np.float32)
    return FeatureMaps(
        layer=layer,
        tapped_layer=name,
        maps=maps,
        max=maps.reshape(maps.shape[0], -1).max(axis=1),
        mean=maps.reshape(maps.shape[0], -1).mean(axis=1),
        seconds=time.perf_counter() - started,
    )
