"""CNN basics for teaching: a convolution and the three poolings, exactly as the source material defines them.

Convolution. A conv neuron j computes the inner potential xi_j = sum_{i in j<-} w_ji y_i over its
receptive field, with the same weights for every neuron of a feature map. Written for a k x k
kernel w and stride s:

    out[r, c] = sum_{u, v} w[u, v] * x[r*s + u, c*s + v]        (+ bias)

This is *cross-correlation*: the kernel is not flipped, which is what CNN layers (and
``torch.nn.Conv2d``) compute; a textbook convolution flips the kernel first. ``padding="same"``
pads with zeros (k // 2 on each side, VGG's padding 1 for 3 x 3) so the output keeps the size;
``"valid"`` does not pad. No activation is applied: the result is xi, not y = sigma(xi).

Pooling of each feature map separately, over windows of ``window`` x ``window`` neurons moved by
``stride`` (typically disjoint: stride = window); windows that do not fit are dropped:

    max:  y_j = max_{i in j<-} y_i
    avg:  y_j = sum_{i in j<-} y_i / |j<-|
    L2:   y_j = sqrt( sum_{i in j<-} y_i^2 )        (square root of the SUM of squares, not the mean)
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from core.errors import ExplainError

__all__ = ["KERNELS", "convolve", "pool", "as_float_image"]

KERNELS: dict[str, np.ndarray] = {
    "identity": np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float32),
    "edge": np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype=np.float32),
    # Cross-correlation: positive where intensity grows to the right / downwards.
    "sobel_x": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32),
    "sobel_y": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float32),
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float32),
    "blur": np.full((3, 3), 1.0 / 9.0, dtype=np.float32),
    "gaussian": np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32) / 16.0,
    "emboss": np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32),
}


def as_float_image(image_or_map: np.ndarray) -> np.ndarray:
    """Return a float64 copy: uint8 images are scaled to [0, 1], other arrays kept as they are."""
    a = np.asarray(image_or_map)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    if not np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_:
        raise ExplainError(f"expected a numeric image or feature map, got dtype {a.dtype}")
    return a.astype(np.float64)


def convolve(
    image_or_map: np.ndarray,
    kernel: np.ndarray | str,
    *,
    stride: int = 1,
    padding: str = "same",
    bias: float = 0.0,
) -> np.ndarray:
    """Return the cross-correlation of an image or feature map with a kernel (see the module docstring).

    Args:
        image_or_map: H x W (one map) or H x W x C (an image or a stack of maps); uint8 is
            scaled to [0, 1].
        kernel: a name in ``KERNELS``, a k x k array, or a k x k x C array (a CNN filter, e.g.
            ``filter_kernel(model)`` for a learned first-layer filter).
        stride: step of the receptive field, px.
        padding: ``"same"`` (zero padding k // 2) or ``"valid"``.
        bias: added to every output (a filter's bias).

    Returns:
        float32: a k x k kernel on H x W gives H' x W'; on H x W x C it filters each channel
        (H' x W' x C); a k x k x C kernel sums over the channels like a conv neuron (H' x W').

    Raises:
        ExplainError: unknown kernel name, shapes that do not fit, bad stride or padding.
    """
    if isinstance(kernel, str):
        if kernel not in KERNELS:
            raise ExplainError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
        kernel = KERNELS[kernel]
    x = as_float_image(image_or_map)
    w = np.asarray(kernel, dtype=np.float64)
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ExplainError(f"stride must be a positive integer, got {stride!r}")
    if padding not in ("same", "valid"):
        raise ExplainError(f"padding must be 'same' or 'valid', got {padding!r}")
    if x.ndim not in (2, 3):
        raise ExplainError(f"expected an H x W map or an H x W x C image, got shape {x.shape}")
    if w.ndim not in (2, 3) or w.shape[0] != w.shape[1]:
        raise ExplainError(f"expected a square k x k or k x k x C kernel, got shape {w.shape}")
    if w.ndim == 3 and (x.ndim != 3 or w.shape[2] != x.shape[2]):
        raise ExplainError(f"a k x k x C kernel {w.shape} needs an H x W x C input with the same C, got {x.shape}")
    k = w.shape[0]
    if padding == "same":
        pad = ((k // 2, (k - 1) // 2), (k // 2, (k - 1) // 2)) + (((0, 0),) if x.ndim == 3 else ())
        x = np.pad(x, pad, mode="constant")
    if x.shape[0] < k or x.shape[1] < k:
        raise ExplainError(f"the input ({x.shape[1]} x {x.shape[0]}) is smaller than the kernel ({k} x {k})")
    windows = sliding_window_view(x, (k, k), axis=(0, 1))[::stride, ::stride]  # (H', W', [C,] k, k)
    if w.ndim == 2:
        out = np.einsum("...uv,uv->...", windows, w)  # per channel when the input has C
    else:
        out = np.einsum("ijcuv,uvc->ij", windows, w)  # a conv neuron: sum over u, v and the channels
    return (out + bias).astype(np.float32)


def pool(feature_map: np.ndarray, kind: str = "max", window: int = 2, stride: int | None = None) -> np.ndarray:
    """Return the pooling map of a feature map (see the module docstring for the three formulas).

    Args:
        feature_map: H x W, or H x W x C (each map pooled separately).
        kind: ``"max"``, ``"avg"`` or ``"l2"``.
        window: side of the pooling window.
        stride: step between windows (default ``window``: disjoint windows).

    Returns:
        float32 of shape (floor((H - window) / stride) + 1, same for W[, C]).
    """
    if kind not in ("max", "avg", "l2"):
        raise ExplainError(f"kind must be 'max', 'avg' or 'l2', got {kind!r}")
    stride = window if stride is None else stride
    for name, value in (("window", window), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ExplainError(f"{name} must be a positive integer, got {value!r}")
    y = as_float_image(feature_map)
    if y.ndim not in (2, 3):
        raise ExplainError(f"expected an H x W map or H x W x C maps, got shape {y.shape}")
    if y.shape[0] < window or y.shape[1] < window:
        raise ExplainError(f"the map ({y.shape[1]} x {y.shape[0]}) is smaller than the window ({window} x {window})")
    windows = sliding_window_view(y, (window, window), axis=(0, 1))[::stride, ::stride]  # (H', W', [C,] w, w)
    if kind == "max":
        out = windows.max(axis=(-2, -1))
    elif kind == "avg":
        out = windows.sum(axis=(-2, -1)) / (window * window)
    else:
        out = np.sqrt((windows**2).sum(axis=(-2, -1)))
    return out.astype(np.float32)
