"""The shared pipeline of every explanation method: inputs, targets, precision, timing, the result.

An explanation method is a subclass of :class:`Explainer` that only implements ``_attribute``;
this base class owns everything around it (pytorch-grad-cam's ``BaseCAM`` plays the same role):
checking the image and the parameters, turning the image into a tensor, wrapping the model so
that it returns the explained output, choosing the numeric precision, timing, and packing an
:class:`Explanation`.

Targets. The model returns one logit per patch; the explained output is
``"cancer"``: F(I) = sigmoid(logit) (the default), ``"not_cancer"``: 1 - F(I), or ``"logit"``.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from core.errors import ExplainError, PathologyError
from core.explain.overlay import overlay_explanation

__all__ = [
    "ExplainError",
    "Explanation",
    "Explainer",
    "ModelOutput",
    "TARGETS",
    "image_to_tensor",
    "model_device",
]

TARGETS = ("cancer", "not_cancer", "logit")
_PRECISION_CHOICES = ("fp32", "bf16", "fp16", "auto")

#: Memory one explanation may take. Each method's largest image is this budget divided by its
#: estimated bytes per pixel (:attr:`Explainer.bytes_per_pixel`, times the samples it runs per
#: forward pass): a 5000 x 5000 px image would need 7 GB for Grad-CAM with the tiny model and
#: 50+ GB for a batched method with VGG16, so it is refused with the limit in the message.
MEMORY_BUDGET_BYTES = 6 * 2**30



# ---------------------------------------------------------------------------------------------
# The result


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields, not objects
class Explanation:
    """One explanation of one output of the model for one patch.

    Attributes:
        method: the method's name (a key of ``METHODS``).
        map: H x W float32 array aligned with the image (row, col = image pixel).
        target: the explained output, ``"cancer"``, ``"not_cancer"`` or ``"logit"``.
        probability: F(I), the model's probability of cancer for the unperturbed patch.
        output: the value of the explained output for the unperturbed patch (``probability``,
            ``1 - probability`` or the logit).
        params: every parameter the method ran with, defaults filled in (JSON-able).
        seconds: wall time of the computation.
        signed: True when the map has meaningful negative values (occlusion, LIME, IG).
        extras: method-specific results (LIME segments and weights, Grad-CAM layer, ...).
    """

    method: str
    map: np.ndarray
    target: str
    probability: float
    output: float
    params: dict
    seconds: float
    signed: bool = False
    extras: dict = field(default_factory=dict)

    def overlay(self, image: np.ndarray, alpha: float = 0.5, cmap: str | None = None) -> np.ndarray:
        """Return the map drawn over ``image`` as H x W x 3 uint8 RGB (see ``core.explain.overlay``)."""
        return overlay_explanation(self, image, alpha=alpha, cmap=cmap)

    def summary(self) -> dict:
        """Return the JSON-able part of the explanation (no arrays): for logs and the CLI."""
        extras = {k: v for k, v in self.extras.items() if not isinstance(v, np.ndarray)}
        finite = self.map[np.isfinite(self.map)]
        return {
            "method": self.method,
            "target": self.target,
            "probability": self.probability,
            "output": self.output,
            "seconds": round(self.seconds, 4),
            "params": self.params,
            "map_shape": list(self.map.shape),
            "map_min": float(finite.min()) if finite.size else None,
            "map_max": float(finite.max()) if finite.size else None,
            **{"extras": extras},
        }


# ---------------------------------------------------------------------------------------------
# Inputs


def model_device(model: nn.Module) -> torch.device:
    """Return the device of the model's first parameter or buffer (CPU for a model without any)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def check_image(image: Any) -> np.ndarray:
    """Return ``image`` as a C-contiguous H x W x 3 uint8 array, or raise ExplainError."""
    if not isinstance(image, np.ndarray):
        raise ExplainError(f"expected the patch as a numpy array (H x W x 3 uint8), got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ExplainError(f"expected an H x W x 3 RGB patch, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ExplainError(f"expected a uint8 patch (0..255), got dtype {image.dtype}")
    if min(image.shape[:2]) < 8:
        raise ExplainError(f"the patch is too small to explain ({image.shape[1]} x {image.shape[0]} px)")
    return np.ascontiguousarray(image)


def image_to_tensor(image: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """Return a (1, 3, H, W) float32 tensor in [0, 1] (channels_last memory) for an H x W x 3 uint8 image.

    channels_last: oneDNN runs VGG convolutions about twice as fast on CPU with it, and it does
    not change any value.
    """
    # np.require copies a read-only array (a cached patch): torch warns on non-writable memory.
    tensor = torch.from_numpy(np.require(image, requirements=["C", "W"])).to(device=device, dtype=torch.float32)
    tensor = tensor.div_(255.0).permute(2, 0, 1).unsqueeze(0)  # HWC -> NCHW (a channels_last view)
    return tensor.contiguous(memory_format=torch.channels_last)


def batch_to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """Return a (N, 3, H, W) float32 tensor in [0, 1] for an N x H x W x 3 uint8 batch."""
    # NHWC uint8 permuted to NCHW is already channels_last in memory; .to keeps that layout.
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return tensor.to(device=device, dtype=torch.float32).div_(255.0)


# ---------------------------------------------------------------------------------------------
# The model seen by the methods


class ModelOutput(nn.Module):
    """Wrap a patch classifier so that it returns the explained output, shape (N,), float32.

    The wrapped model is shared (the app caches one model for every session): it is kept as a
    plain attribute, not a submodule, so nothing done to the wrapper (``eval``, ``to``, hooks)
    reaches it. One wrapper per explanation: it remembers the logit of the first sample of the
    first forward, which every method arranges to be the unperturbed patch.

    Args:
        model: returns one logit per patch, shape (N,) or (N, 1), for (N, 3, H, W) RGB in [0, 1].
        target: ``"cancer"`` (sigmoid), ``"not_cancer"`` (1 - sigmoid) or ``"logit"``.
        pair: return ``[1 - p, p]`` per patch, shape (N, 2) (LIME's classifier_fn).
    """

    def __init__(self, model: nn.Module, target: str = "cancer", pair: bool = False) -> None:
        super().__init__()
        if target not in TARGETS:
            raise ExplainError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
        self.__dict__["shared_model"] = model  # not registered: see the class docstring
        self.target = target
        self.pair = pair
        self.first_logit: float | None = None

    def logits(self, x: Tensor) -> Tensor:
        """Return the model's logits as a float32 tensor of shape (N,)."""
        if x.ndim == 4:
            # Captum and LIME build their perturbed batches in the default (NCHW) layout; oneDNN
            # runs VGG in bf16 about twice as fast on channels_last input (and its max-pools
            # far faster). A layout copy changes no value and costs < 1 % of a forward.
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.__dict__["shared_model"](x)
        if not isinstance(out, Tensor):
            raise ExplainError(f"the model returned a {type(out).__name__}, expected a tensor of logits")
        out = out.reshape(out.shape[0], -1)
        if out.shape[1] != 1:
            raise ExplainError(f"the model returned {out.shape[1]} outputs per patch; expected one logit")
        logit = out[:, 0].float()
        if self.first_logit is None and logit.numel():
            self.first_logit = float(logit[0].detach())
        return logit

    def forward(self, x: Tensor) -> Tensor:
        logit = self.logits(x)
        if self.pair:
            p = torch.sigmoid(logit)
            return torch.stack([1.0 - p, p], dim=1)
        if self.target == "cancer":
            return torch.sigmoid(logit)
        if self.target == "not_cancer":
            return 1.0 - torch.sigmoid(logit)
        return logit


def target_value(logit: float, target: str) -> float:
    """Return the explained output for a logit: p, 1 - p or the logit itself."""
    p = 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0
    return {"cancer": p, "not_cancer": 1.0 - p, "logit": logit}[target]


@contextlib.contextmanager
def precision_context(device: torch.device, precision: str) -> Iterator[str]:
    """Run the block in ``precision`` (autocast for bf16/fp16); in fp32 switch off any caller's autocast.

    Yields the precision in effect.
    """
    from core.device import autocast_for, resolve_precision

    try:
        effective = resolve_precision(device, precision)
    except ValueError as exc:
        raise ExplainError(str(exc)) from None
    if effective == "fp32":
        # A caller running the app under autocast must not drag pixel gradients into bf16.
        with torch.autocast(device_type=device.type, enabled=False):
            yield "fp32"
        return
    with autocast_for(device, effective) as used:
        yield used


# ---------------------------------------------------------------------------------------------
# The pipeline


class Explainer:
    """Base class of the explanation methods: validates, prepares, times and packs; subclasses attribute.

    Class attributes a subclass sets:
        name: the method's key in ``METHODS``.
        signed: whether the map has meaningful negative values.
        pixel_gradient: True for methods built on d output / d pixel: they always run in
            float32 (their maps degrade badly in bf16), whatever ``precision`` asks.
        defaults: every parameter with its default (``target`` and ``precision`` included).
        choices: allowed values of the parameters that take one of a few strings.
        pair_output: the model is seen as returning ``[1 - p, p]`` (LIME's classifier_fn).
    """

    name: ClassVar[str] = ""
    signed: ClassVar[bool] = False
    pixel_gradient: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}
    choices: ClassVar[dict[str, tuple]] = {}
    pair_output: ClassVar[bool] = False
    #: Estimated peak memory per image pixel of one sample in one pass: VGG16 in fp32, measured
    #: on CPU at 224 px with some margin (the tiny model takes about 5 times less).
    bytes_per_pixel: ClassVar[int] = 3000
    #: Parameters whose smallest value is the number of samples in one forward pass (none: 1).
    batch_params: ClassVar[tuple[str, ...]] = ()

    def resolve_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Return the defaults updated with ``params``; raise ExplainError for unknown names or values."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ExplainError(
                f"{self.name} has no parameter {', '.join(map(repr, unknown))}; "
                f"its parameters are {', '.join(sorted(self.defaults))}"
            )
        merged = {**self.defaults, **params}
        for key, allowed in {"target": TARGETS, "precision": _PRECISION_CHOICES, **self.choices}.items():
            if key in merged and merged[key] not in allowed:
                raise ExplainError(
                    f"{self.name}: {key} must be one of {', '.join(map(str, allowed))}, got {merged[key]!r}"
                )
        self.validate(merged)
        return merged

    def validate(self, params: dict[str, Any]) -> None:
        """Check method-specific parameter values (override; raise ExplainError)."""

    def max_pixels(self, params: Mapping[str, Any]) -> int:
        """Return the largest image (in pixels) this method explains with ``params`` (resolved).

        :data:`MEMORY_BUDGET_BYTES` / (:attr:`bytes_per_pixel` x samples per pass): with the
        defaults and VGG16 every method fits a 512 x 512 px patch in the 6 GiB budget.
        """
        per_pass = min((int(params[name]) for name in self.batch_params), default=1)
        return MEMORY_BUDGET_BYTES // (self.bytes_per_pixel * max(per_pass, 1))

    def check_size(self, width: int, height: int, params: Mapping[str, Any]) -> None:
        """Raise ExplainError when a ``width`` x ``height`` px image exceeds :meth:`max_pixels` (the limit in the message)."""
        limit = self.max_pixels(params)
        if width * height <= limit:
            return
        per_pass = min((int(params[name]) for name in self.batch_params), default=1)
        side = math.isqrt(limit)
        cost = f"{self.bytes_per_pixel / 1000:g} kB per pixel" + (f" per sample x {per_pass} samples per pass" if self.batch_params else "")
        raise ExplainError(
            f"{self.name}: this {width} x {height} px image ({width * height:,} px) is larger than the {limit:,} px "
            f"(about {side} x {side}) it can explain within {MEMORY_BUDGET_BYTES / 2**30:g} GiB of memory "
            f"(estimate: {cost}, VGG16 in fp32); crop or downscale the patch"
            + (" or lower batch_size" if "batch_size" in self.batch_params else "")
        )

    def explain(self, model: nn.Module, image: np.ndarray, **params: Any) -> Explanation:
        """Return the explanation of ``model``'s output for ``image`` (H x W x 3 uint8 RGB).

        Raises:
            ExplainError: bad image or parameters, an image larger than :meth:`max_pixels`
                (refused before any memory is taken), or the model failed.
        """
        image = check_image(image)
        p = self.resolve_params(params)
        self.check_size(image.shape[1], image.shape[0], p)
        if getattr(model, "training", False):
            warnings.warn("explaining a model in training mode; call model.eval() once when loading it", stacklevel=3)
        device = model_device(model)
        requested = p.get("precision", "fp32")
        precision = "fp32" if self.pixel_gradient else requested
        wrapper = ModelOutput(model, p["target"], pair=self.pair_output)
        started = time.perf_counter()
        # inference_mode(False): a caller inside inference_mode would otherwise forbid gradients.
        with torch.inference_mode(False), precision_context(device, precision) as effective:
            x = image_to_tensor(image, device)
            try:
                heatmap, extras = self._attribute(wrapper, model, image, x, p)
            except PathologyError:
                raise
            except (RuntimeError, ValueError, IndexError, AssertionError) as exc:
                raise ExplainError(f"{self.name} failed on this {image.shape[1]} x {image.shape[0]} px patch: {_first_line(exc)}") from exc
            if wrapper.first_logit is None:  # the method never ran the clean patch: one more forward
                with torch.no_grad():
                    wrapper.logits(x)
        seconds = time.perf_counter() - started
        heatmap = np.ascontiguousarray(heatmap, dtype=np.float32)
        if heatmap.shape != image.shape[:2]:
            raise ExplainError(f"internal error: {self.name} returned a map of shape {heatmap.shape} for a {image.shape[:2]} patch")
        logit = float(wrapper.first_logit)
        params_out = dict(p)
        if "precision" in params_out:
            params_out["precision"] = effective
            if requested != effective and self.pixel_gradient:
                extras = {**extras, "requested_precision": requested}
        return Explanation(
            method=self.name,
            map=heatmap,
            target=p["target"],
            probability=target_value(logit, "cancer"),
            output=target_value(logit, p["target"]),
            params=params_out,
            seconds=seconds,
            signed=self.signed,
            extras=extras,
        )

    def _attribute(self, wrapper: ModelOutput, model: nn.Module, image: np.ndarray, x: Tensor, p: dict) -> tuple[np.ndarray, dict]:
        """Return (H x W map, extras) for the (1, 3, H, W) input ``x``; ``wrapper(x)`` is the explained output."""
        raise NotImplementedError


def reduce_channels(attribution: Tensor, how: str) -> np.ndarray:
    """Return an H x W float32 map from a (1, 3, H, W) attribution: ``max``, ``mean`` or ``sum`` over channels."""
    a = attribution.detach().float()[0]
    if how == "max":
        out = a.max(dim=0).values
    elif how == "mean":
        out = a.mean(dim=0)
    else:
        out = a.sum(dim=0)
    return out.cpu().numpy().astype(np.float32)


def check_positive_int(params: dict, *names: str, minimum: int = 1) -> None:
    """Raise ExplainError unless each named parameter is an int >= minimum."""
    for name in names:
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ExplainError(f"{name} must be an integer >= {minimum}, got {value!r}")
        params[name] = int(value)


def check_number(params: dict, name: str, low: float | None = None, high: float | None = None) -> None:
    """Raise ExplainError unless the parameter is a finite number within [low, high]."""
    value = params[name]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
        raise ExplainError(f"{name} must be a number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ExplainError(f"{name} must lie in {bounds}, got {value!r}")
    params[name] = float(value)


def check_bool(params: dict, name: str) -> None:
    """Raise ExplainError unless the parameter is True or False."""
    if not isinstance(params[name], (bool, np.bool_)):
        raise ExplainError(f"{name} must be True or False, got {params[name]!r}")
    params[name] = bool(params[name])


def _first_line(exc: BaseException, limit: int = 240) -> str:
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    return text if len(text) <= limit else text[: limit - 3] + "..."

