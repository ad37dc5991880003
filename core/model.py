"""The patch classifier F(I) = probability of cancer in patch I, and its checkpoints.

Architecture (source material, "VGG16 pretrained on ImageNet, top fully connected part removed,
substituted with global max-pooling and a single dense layer; single logistic output"):

    RGB in [0, 1] -> ImageNet normalisation -> VGG conv trunk (``features``)
    -> global max-pool -> Linear(C, 1) -> logit;  F(I) = sigmoid(logit)

Two trunks: ``vgg16`` (torchvision's VGG16 ``features``, 13 convs 3x3/s1/p1, 5 max-pools 2x2/s2)
and ``tiny`` (same shape of network, few channels: trains on a laptop CPU; used by the demo and
the tests). Every ReLU is non-inplace so that hook-based explanation methods see true activations.

A checkpoint is one ``torch.save`` file of plain data, always read back with
``torch.load(..., weights_only=True)``: a checkpoint is data, never code.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import logging
import os
import pickle
import pickletools
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from core.errors import CheckpointError
from core.fileio import atomic_write

__all__ = [
    "ARCHS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "PatchClassifier",
    "build_model",
    "save_checkpoint",
    "load_checkpoint",
    "model_id_of",
]

log = logging.getLogger(__name__)

ARCHS = ("vgg16", "tiny")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CHECKPOINT_FORMAT = "pathology-explorer/checkpoint"
CHECKPOINT_FORMAT_VERSION = 1

# torchvision's VGG16_Weights.IMAGENET1K_V1; the 8 hex digits in the name are the sha256 prefix.
IMAGENET_VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
IMAGENET_VGG16_FILE = "vgg16-397923af.pth"
_IMAGENET_VGG16_SHA256_PREFIX = "397923af"

# Trunk configurations in torchvision's notation: an int is a 3x3 conv (stride 1, padding 1) with
# that many output channels followed by a ReLU, "M" a 2x2 max-pool with stride 2.
_CFG_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
# 5 convs, 4 pools: at 128 px the last conv map is 16x16, the pooled map 8x8; ~0.1 GMAC per patch.
_CFG_TINY = [16, "M", 32, "M", 64, 64, "M", 64, "M"]


def _make_trunk(cfg: list) -> nn.Sequential:
    """Return a VGG conv trunk laid out exactly like torchvision's ``make_layers`` (same indices)."""
    layers: list[nn.Module] = []
    in_channels = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(nn.Conv2d(in_channels, int(v), kernel_size=3, stride=1, padding=1))
            # Non-inplace: forward hooks and guided backprop need the pre-ReLU tensor untouched.
            layers.append(nn.ReLU(inplace=False))
            in_channels = int(v)
    return nn.Sequential(*layers)


class PatchClassifier(nn.Module):
    """VGG-style patch classifier with global max-pooling and a single logistic output.

    Attributes:
        arch: ``"vgg16"`` or ``"tiny"``.
        features: the conv trunk; its layers are named like torchvision's VGG
            (``"features.28"`` is VGG16's last conv).
        pool: global max-pooling (``nn.AdaptiveMaxPool2d(1)``).
        classifier: ``nn.Linear(C, 1)``, the single dense unit.
        mean, std: ImageNet normalisation, buffers of shape (1, 3, 1, 1).

    Input: float RGB (N, 3, H, W) in [0, 1], NOT normalised (normalisation happens inside,
    first thing). ``forward`` returns the logit, shape (N,); ``predict_proba`` returns F(I).
    Any H, W >= 2**(number of pools) work thanks to the global pooling.
    """

    def __init__(self, arch: str = "tiny") -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
        self.arch = arch
        self.features = _make_trunk(_CFG_VGG16 if arch == "vgg16" else _CFG_TINY)
        self.pool = nn.AdaptiveMaxPool2d(1)
        channels = [m for m in self.features if isinstance(m, nn.Conv2d)][-1].out_channels
        self.classifier = nn.Linear(channels, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1))
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's VGG initialisation for the trunk; a small head so the first logits are ~0.
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Return the logit of each patch, shape (N,), for RGB input (N, 3, H, W) in [0, 1]."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a batch of RGB patches (N, 3, H, W); got shape {tuple(x.shape)}")
        if not torch.is_floating_point(x):
            raise TypeError(f"expected float input in [0, 1]; got {x.dtype} (convert with x.float() / 255)")
        x = (x - self.mean) / self.std
        x = self.features(x)
        x = self.pool(x).flatten(1)
        return self.classifier(x).squeeze(1)

    def predict_proba(self, x: Tensor) -> Tensor:
        """Return F(I) = sigmoid(logit), shape (N,), in [0, 1]."""
        return torch.sigmoid(self.forward(x))

    def conv_layer_names(self) -> list[str]:
        """Return the dotted names of the conv layers, input to output (``["features.0", ...]``)."""
        return [f"features.{i}" for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]

    def layer(self, name: str) -> nn.Module:
        """Return the submodule with dotted ``name`` (e.g. ``"features.28"``).

        Raises:
            ValueError: no such layer; the message lists the valid names.
        """
        modules = dict(self.named_modules())
        modules.pop("", None)
        if name not in modules:
            raise ValueError(
                f"no layer {name!r} in the {self.arch} model; valid names: {', '.join(modules)}"
            )
        return modules[name]


# ---------------------------------------------------------------------------------------------
# Building


def build_model(
    arch: str = "vgg16",
    pretrained: str | None = None,
    weights: str | os.PathLike | None = None,
    download_timeout: float = 10.0,
) -> PatchClassifier:
    """Return a patch classifier in eval mode.

    Args:
        arch: ``"vgg16"`` or ``"tiny"``.
        pretrained: ``"imagenet"`` (vgg16 only) loads torchvision's ImageNet VGG16 weights into
            the trunk, from the torch hub cache or by download; ``None`` / ``"none"``: random
            initialisation (deterministic under ``torch.manual_seed``). The head is always new.
        weights: path to a local torchvision VGG16 state dict (``vgg16-397923af.pth`` or any
            file with ``features.N.weight`` keys); its ``classifier.*`` keys are ignored.
        download_timeout: seconds allowed for name resolution, connecting and each read.

    Raises:
        ValueError: unknown arch / pretrained value, or both ``pretrained`` and ``weights``.
        CheckpointError: the weights cannot be downloaded, read or do not fit the trunk.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    source = "none" if pretrained is None else str(pretrained).strip().lower()
    if source not in ("none", "imagenet"):
        raise ValueError(f"unknown pretrained value {pretrained!r}; choose 'imagenet' or 'none'")
    if source == "imagenet" and arch != "vgg16":
        raise ValueError(f"ImageNet weights exist only for arch 'vgg16', not {arch!r}; use pretrained='none'")
    if source == "imagenet" and weights is not None:
        raise ValueError("pass either pretrained='imagenet' or weights=PATH, not both")

    model = PatchClassifier(arch)
    if weights is not None:
        _load_trunk(model, Path(weights), what="Weights file")
    elif source == "imagenet":
        _load_trunk(model, _imagenet_weights_file(download_timeout), what="ImageNet weights file")
    return model.eval()


def _load_trunk(model: PatchClassifier, path: Path, what: str) -> None:
    """Copy the ``features.*`` tensors of a torchvision-style state dict file into the trunk."""
    data = _torch_load_data(path, what=what, map_location="cpu")
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{what} '{path}' holds a {type(data).__name__}, not a state dict")
    if "format" in data and "state_dict" in data:
        raise CheckpointError(
            f"{what} '{path}' is a Pathology Explorer checkpoint, not a torchvision state dict; "
            "load it with load_checkpoint (--checkpoint)"
        )
    expected = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
    given = {k: v for k, v in data.items() if isinstance(k, str) and k.startswith("features.")}
    problem = _state_dict_mismatch(expected, given)
    if problem:
        raise CheckpointError(f"{what} '{path}' does not fit the {model.arch} trunk: {problem}")
    with torch.no_grad():
        for key, tensor in given.items():
            expected[key].copy_(tensor)


def _imagenet_weights_file(timeout: float) -> Path:
    """Return the path of the ImageNet VGG16 weights in the torch hub cache, downloading them if needed."""
    cache = Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_VGG16_FILE
    if cache.is_file():
        return cache
    try:
        _download(IMAGENET_VGG16_URL, cache, timeout, _IMAGENET_VGG16_SHA256_PREFIX)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError, socket errors, timeouts are OSErrors
        raise CheckpointError(
            f"ImageNet VGG16 weights could not be downloaded ({_one_line(exc)}); pass --weights PATH "
            f"to a local copy of {IMAGENET_VGG16_FILE}, or --pretrained none for random initialisation"
        ) from None
    return cache


def _download(url: str, dest: Path, timeout: float, sha256_prefix: str) -> None:
    """Download ``url`` to ``dest`` atomically, every network step bounded by ``timeout`` seconds."""
    host = urllib.parse.urlsplit(url).hostname or ""
    # getaddrinfo ignores socket timeouts: resolve in a daemon thread so a dead resolver cannot hang us.
    _resolve_host(host, timeout)
    log.info("downloading %s to %s", url, dest)
    digest = hashlib.sha256()
    with atomic_write(dest) as out, urllib.request.urlopen(url, timeout=timeout) as response:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
        if not digest.hexdigest().startswith(sha256_prefix):
            raise ValueError(f"downloaded file has the wrong checksum (expected sha256 {sha256_prefix}...)")


def _resolve_host(host: str, timeout: float) -> None:
    result: dict[str, BaseException | None] = {}

    def target() -> None:
        try:
            socket.getaddrinfo(host, 443)
            result["error"] = None
        except BaseException as exc:  # reported to the caller below
            result["error"] = exc

    worker = threading.Thread(target=target, name="resolve-host", daemon=True)
    worker.start()
    worker.join(timeout)
    if "error" not in result:
        raise TimeoutError(f"resolving {host} took more than {timeout:g} s")
    if result["error"] is not None:
        raise OSError(f"cannot resolve {host}: {_one_line(result['error'])}")


# ---------------------------------------------------------------------------------------------
# Checkpoints


def model_id_of(model: nn.Module | Mapping[str, Tensor]) -> str:
    """Return the model's identity: sha256 over its state dict (names, dtypes, shapes, bytes, sorted by name), 16 hex chars.

    Same weights give the same id whatever the device or memory layout.
    """
    state = model.state_dict() if isinstance(model, nn.Module) else model
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(name.encode("utf-8"))
        digest.update(f"|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def save_checkpoint(path: str | os.PathLike, model: PatchClassifier, metadata: dict) -> str:
    """Write ``model`` and ``metadata`` to one checkpoint file, atomically; return the model id.

    Args:
        path: the file to write (its folder is created if missing); replaced if it exists.
        model: the classifier; its weights are stored on CPU in the default memory layout.
        metadata: plain JSON-able data (str, int, float, bool, None, list, dict). Must hold
            ``patch_size`` (px) and ``level`` (int) and/or ``mpp`` (float or None). ``arch``,
            ``normalization`` and ``input_range`` are filled in from the model when absent.
            Anything else is kept (training summary, ``demo``, label, ...).

    Raises:
        ValueError: metadata is not plain data, lacks a required key or contradicts the model.
        FileWriteError: ``path`` is a device, FIFO, directory or symbolic link.
    """
    if not isinstance(model, PatchClassifier):
        raise TypeError(f"expected a PatchClassifier, got {type(model).__name__}")
    meta = _plain(metadata, "metadata")
    if not isinstance(meta, dict):
        raise ValueError("metadata must be a dict")
    meta.pop("model_id", None)  # the id is computed from the weights, never trusted from the caller
    normalization = {"mean": [round(v, 6) for v in model.mean.flatten().tolist()],
                     "std": [round(v, 6) for v in model.std.flatten().tolist()]}
    for key, value in (("arch", model.arch), ("normalization", normalization), ("input_range", "0-1")):
        meta.setdefault(key, value)
    if meta["arch"] != model.arch:
        raise ValueError(f"metadata says arch {meta['arch']!r} but the model is {model.arch!r}")
    if meta["input_range"] != "0-1":
        raise ValueError(f"metadata input_range must be '0-1', got {meta['input_range']!r}")
    problem = _scale_problem(meta)
    if problem:
        raise ValueError(problem)

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    model_id = model_id_of(state)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "arch": model.arch,
        "state_dict": state,
        "metadata": meta,
        "model_id": model_id,
    }
    atomic_torch_save(payload, Path(path))
    return model_id


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> None:
    """Write ``payload`` with torch.save to ``path`` atomically (``core.fileio.atomic_write``).

    A crash never leaves a half-written file behind; the folder is created if missing.

    Raises:
        FileWriteError: ``path`` is a device, FIFO, directory or symbolic link.
    """
    with atomic_write(path) as f:
        torch.save(payload, f)


def load_checkpoint(
    path: str | os.PathLike,
    *,
    expected_arch: str | None = None,
    map_location: Any = "cpu",
) -> tuple[PatchClassifier, dict]:
    """Return the model (eval mode) and metadata stored in a checkpoint file.

    The file is read as data only (``torch.load(weights_only=True)``); the returned metadata
    has ``"model_id"`` filled in. When ``map_location`` is a device (name), the model is moved
    there.

    Raises:
        CheckpointError: missing, corrupt or truncated file; a pickle that needs code; not our
            format; another arch than ``expected_arch``; weights that do not fit the arch; a
            stored model id that does not match the weights. One line, naming the file.
        ValueError: ``expected_arch`` is not a known architecture.
    """
    if expected_arch is not None and expected_arch not in ARCHS:
        raise ValueError(f"unknown expected_arch {expected_arch!r}; choose one of {', '.join(ARCHS)}")
    if isinstance(map_location, (str, torch.device)):
        target = torch.device(map_location)
        if target.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"map_location {str(map_location)!r} asks for CUDA, which is not available here")
    path = Path(path)
    what = "Checkpoint"
    data = _torch_load_data(path, what=what, map_location=map_location)
    if not isinstance(data, Mapping) or data.get("format") != CHECKPOINT_FORMAT:
        hint = ""
        if isinstance(data, Mapping) and data and all(isinstance(v, Tensor) for v in data.values()):
            hint = " (it looks like a bare state dict: for torchvision VGG16 weights use build_model(weights=...) / --weights)"
        raise CheckpointError(f"{what} '{path}' is not a Pathology Explorer checkpoint{hint}")
    version = data.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{what} '{path}' has format version {version!r}; this program reads version {CHECKPOINT_FORMAT_VERSION}"
        )
    arch = data.get("arch")
    if arch not in ARCHS:
        raise CheckpointError(f"{what} '{path}' has unknown architecture {arch!r}")
    if expected_arch is not None and arch != expected_arch:
        raise CheckpointError(f"{what} '{path}' is a {arch!r} checkpoint, expected {expected_arch!r}")
    state = data.get("state_dict")
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{what} '{path}' has no valid state_dict")
    metadata = data.get("metadata")
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{what} '{path}' has no metadata dict")
    problem = _scale_problem(metadata)
    if problem:  # without it patches would be cut at a guessed size: refuse instead
        raise CheckpointError(f"{what} '{path}' has unusable metadata: {problem}")

    model = PatchClassifier(arch)
    problem = _state_dict_mismatch(model.state_dict(), state)
    if problem:
        raise CheckpointError(f"{what} '{path}' does not fit the {arch} architecture: {problem}")
    model_id = model_id_of(state)
    if data.get("model_id") != model_id:
        raise CheckpointError(
            f"{what} '{path}' is corrupt: its weights do not match the stored model id "
            f"({data.get('model_id')!r} stored, {model_id!r} computed)"
        )
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    metadata = dict(metadata)
    metadata["model_id"] = model_id
    return model.eval(), metadata


# ---------------------------------------------------------------------------------------------
# Helpers


def _torch_load_data(path: Path, what: str, map_location: Any) -> Any:
    """Return ``torch.load(path, weights_only=True)``, turning every failure into one clear CheckpointError."""
    if not path.exists():
        raise CheckpointError(f"{what} '{path}' not found")
    if path.is_dir():
        raise CheckpointError(f"{what} '{path}' is a folder, not a file")
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols >2 before refusing or reading them; the outcome is reported below.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"{what} '{path}' cannot be read ({_one_line(exc)})") from None
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc) or _pickle_needs_code(path):
            raise CheckpointError(
                f"{what} '{path}' contains code objects; refused (checkpoints are loaded as data only)"
            ) from None
        raise CheckpointError(f"{what} '{path}' is corrupt or not a PyTorch file") from None
    except Exception as exc:  # truncated zip (RuntimeError), garbage (EOFError, KeyError, ...): all mean unreadable
        if _zip_without_pickle(path):
            raise CheckpointError(
                f"{what} '{path}' is a zip archive but not a PyTorch file (it holds no data.pkl)"
            ) from None
        raise CheckpointError(
            f"{what} '{path}' is corrupt, truncated or not a PyTorch file ({type(exc).__name__}: {_one_line(exc)})"
        ) from None


def _zip_without_pickle(path: Path) -> bool:
    """Return True for a readable zip archive that holds no ``data.pkl`` (what torch.save writes)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return not any(name.endswith("data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


_CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}


def _pickle_needs_code(path: Path, limit: int = 64 << 20) -> bool:
    """Return True if the file is a well-formed pickle that imports or calls something.

    Only called after the data-only loader refused the file, to tell "code inside" from "garbage".
    pickletools only parses opcodes; it never imports or executes anything.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                if not names:
                    return False
                raw = archive.read(names[0])[:limit]
        else:
            with open(path, "rb") as f:
                raw = f.read(limit)
        found = False
        for opcode, _arg, _pos in pickletools.genops(io.BytesIO(raw)):
            found = found or opcode.name in _CODE_OPCODES
        return found
    except Exception:  # not parseable as a pickle: garbage, so "needs code" is False
        return False


def _scale_problem(meta: Mapping[str, Any]) -> str:
    """Return what is wrong with the patch scale a checkpoint's metadata records, or "".

    ``patch_size`` must be a positive int (px), and ``level`` (an int >= 0) and/or ``mpp``
    (a positive finite number, or None) must say the scale the model was trained at: every
    prediction cuts its patches by them, so a checkpoint without them is refused rather than
    run at a guessed size.
    """
    patch_size = meta.get("patch_size")
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size <= 0:
        return f"metadata needs 'patch_size', a positive int in pixels; got {_short_repr(patch_size)}"
    if "level" not in meta and "mpp" not in meta:
        return "metadata needs 'level' (int) or 'mpp' (float or None): the scale the model was trained at"
    level = meta.get("level")
    if "level" in meta and (isinstance(level, bool) or not isinstance(level, int) or level < 0):
        return f"metadata 'level' must be an int >= 0, got {_short_repr(level)}"
    mpp = meta.get("mpp")
    if mpp is not None and (isinstance(mpp, bool) or not isinstance(mpp, (int, float)) or not 0 < mpp < float("inf")):
        return f"metadata 'mpp' must be a positive number of microns per pixel or None, got {_short_repr(mpp)}"
    return ""


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value).bit_length() < 200 else "<a huge integer>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _state_dict_mismatch(expected: Mapping[str, Tensor], given: Mapping[str, Tensor]) -> str:
    """Return a short description of missing / unexpected / wrongly shaped keys, or "" if they fit."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k} {tuple(given[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{label}: {', '.join(map(str, items[:3]))}{more}")
    return "; ".join(parts)


def _plain(value: Any, where: str) -> Any:
    """Return a copy of ``value`` made of plain Python JSON types only (so weights_only can read it back).

    Subclasses (numpy float64, IntEnum, ...) are converted to the base type, tuples to lists;
    numpy scalars via ``.item()``. Anything else raises ValueError naming where it was found.
    """
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: key {k!r} is not a str (metadata must be JSON-able)")
            out[str(k)] = _plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        return _plain(item(), where)
    raise ValueError(f"{where}: {type(value).__name__} is not JSON-able (use str, int, float, bool, None, list, dict)")


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """Return the first non-empty line of an exception's message, shortened."""
    text = str(exc).strip()
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        text = str(exc.reason)
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = line.split(". ")[0] or "no details"  # torch's messages go on for sentences after the first
    return line if len(line) <= limit else line[: limit - 3] + "..."

