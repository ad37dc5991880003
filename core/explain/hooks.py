"""Hooks on a shared model, made safe for two explanations at once: layer lookup, taps, captures.

The app keeps one model for every browser session, so two explanations may run on it at the
same time, each in its own thread. A forward hook is global to the module it is registered on:
it fires for *every* forward through that module, whichever thread runs it. Two rules make
that harmless here:

1. Every hook registered on the shared model acts only in the thread that registered it
   (``threading.get_ident()``); another thread's forward passes through untouched, so a
   Grad-CAM never records another session's activations and never changes its output.
2. Captum's layer methods get a private ``nn.Identity`` *tap* instead of the shared layer: our
   thread-bound hook routes the layer's output through the tap, and Captum hooks the tap,
   which no other thread can reach.

Registration and removal go through one process-wide lock: torch numbers hook handles with a
class-level counter (``RemovableHandle.next_id``), which two threads registering at once could
hand out twice. Every hook is removed in a ``finally`` (context managers), also on errors.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from torch import Tensor, nn

from core.errors import ExplainError

__all__ = ["resolve_layer", "default_gradcam_layer", "tap_layer", "capture_layer", "conv_layer_names", "hook_counts"]

_HOOK_LOCK = threading.Lock()

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh)


class _StopForward(Exception):
    """Raised by a capture hook to end a forward early, once the wanted layer has run."""


def _named_modules(model: nn.Module) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    modules.pop("", None)
    return modules


def conv_layer_names(model: nn.Module) -> list[str]:
    """Return the dotted names of the model's 2-D conv layers, input to output."""
    names = getattr(model, "conv_layer_names", None)
    if callable(names):
        return list(names())
    return [name for name, m in _named_modules(model).items() if isinstance(m, nn.Conv2d)]


def resolve_layer(model: nn.Module, name: str, after_activation: bool = False) -> tuple[str, nn.Module]:
    """Return ``(name, module)`` of the layer whose output is looked at.

    Args:
        name: dotted module name, e.g. ``"features.28"``.
        after_activation: when ``name`` is a conv layer directly followed by an activation in its
            ``nn.Sequential`` (VGG's conv -> ReLU), return that activation instead: the source
            material's feature maps are neuron values y_j = sigma(xi_j), i.e. after the ReLU.

    Raises:
        ExplainError: no such layer (the message lists the conv layers).
    """
    modules = _named_modules(model)
    if not isinstance(name, str) or name not in modules:
        convs = conv_layer_names(model)
        raise ExplainError(
            f"no layer {name!r} in this model; conv layers: {', '.join(convs) or 'none'} "
            f"(any module name works, e.g. a ReLU or a pooling layer)"
        )
    module = modules[name]
    if after_activation and isinstance(module, nn.Conv2d):
        parent_name, _, child = name.rpartition(".")
        parent = modules.get(parent_name) if parent_name else model
        if isinstance(parent, nn.Sequential):
            children = list(parent.named_children())
            index = [n for n, _ in children].index(child)
            if index + 1 < len(children) and isinstance(children[index + 1][1], _ACTIVATIONS):
                next_name = children[index + 1][0]
                full = f"{parent_name}.{next_name}" if parent_name else next_name
                return full, children[index + 1][1]
    return name, module


def default_gradcam_layer(model: nn.Module) -> str:
    """Return the name of the last conv layer (Grad-CAM's default)."""
    convs = conv_layer_names(model)
    if not convs:
        raise ExplainError("the model has no Conv2d layer; pass layer=NAME for Grad-CAM")
    return convs[-1]


def _register(module: nn.Module, hook) -> object:
    with _HOOK_LOCK:
        return module.register_forward_hook(hook)


def _remove(handle) -> None:
    with _HOOK_LOCK:
        handle.remove()


@contextlib.contextmanager
def tap_layer(module: nn.Module) -> Iterator[nn.Module]:
    """Yield a private ``nn.Identity`` through which ``module``'s output flows, in this thread only.

    Hand the tap (not the shared module) to Captum's layer methods: their hooks then sit on a
    module no other thread uses. Our hook on the shared module is removed on exit, also on error.
    """
    tap = nn.Identity()
    owner = threading.get_ident()

    def route(_module: nn.Module, _inputs, output):
        if threading.get_ident() != owner:
            return None  # another session's forward: leave it alone
        return tap(output)

    handle = _register(module, route)
    try:
        yield tap
    finally:
        _remove(handle)


class Capture:
    """The output of one layer recorded during a forward in this thread (``tensor``: None until then)."""

    def __init__(self) -> None:
        self.tensor: Tensor | None = None


@contextlib.contextmanager
def capture_layer(module: nn.Module, stop: bool = False, detach: bool = True) -> Iterator[Capture]:
    """Record ``module``'s output for forwards run in this thread; optionally stop the forward there.

    With ``stop=True`` the forward ends right after the layer (saves the rest of the network);
    run it inside :func:`run_until_capture`.
    """
    capture = Capture()
    owner = threading.get_ident()

    def record(_module: nn.Module, _inputs, output):
        if threading.get_ident() != owner:
            return None
        if not isinstance(output, Tensor):
            raise ExplainError(f"layer {type(_module).__name__} returns a {type(output).__name__}, not a tensor")
        capture.tensor = output.detach() if detach else output
        if stop:
            raise _StopForward
        return None

    handle = _register(module, record)
    try:
        yield capture
    finally:
        _remove(handle)


def run_until_capture(forward, x: Tensor, capture: Capture) -> Tensor:
    """Run ``forward(x)`` and return the captured layer output (the forward may stop early)."""
    try:
        forward(x)
    except _StopForward:
        pass
    if capture.tensor is None:
        raise ExplainError("the chosen layer did not run during the forward pass (is it part of the model's forward?)")
    return capture.tensor


def hook_counts(model: nn.Module) -> dict[str, int]:
    """Return the number of forward, forward-pre and backward hooks on every module (for tests and checks)."""
    counts: dict[str, int] = {}
    for name, m in model.named_modules():
        counts[name or "<model>"] = (
            len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
            + len(getattr(m, "_backward_pre_hooks", {}))
        )
    return counts
