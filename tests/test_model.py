"""Tests of core.model (patch classifier, checkpoints) and core.device. CPU, offline, small inputs."""

from __future__ import annotations

import ast
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from core import device as dev
from core import model as cm
from core.errors import CheckpointError
from core.model import PatchClassifier, build_model, load_checkpoint, model_id_of, save_checkpoint

META = {"patch_size": 128, "level": 0, "mpp": None, "demo": True, "label": "unit test"}


@pytest.fixture(scope="module")
def vgg() -> PatchClassifier:
    torch.manual_seed(0)
    return build_model("vgg16")


@pytest.fixture()
def tiny() -> PatchClassifier:
    torch.manual_seed(0)
    model = build_model("tiny")
    # The init gives a near-zero head; spread the logits so that comparisons are meaningful.
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 0.5)
        model.classifier.bias.fill_(-0.3)
    return model


@pytest.fixture()
def x64() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture()
def ckpt(tmp_path, tiny) -> str:
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, tiny, META)
    return str(path)


# --- architecture -----------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["tiny", "vgg16"])
def test_forward_shape_and_head(arch, vgg, x64):
    torch.manual_seed(0)
    model = vgg if arch == "vgg16" else build_model("tiny")
    with torch.no_grad():
        logits = model(x64)
    assert logits.shape == (2,) and logits.dtype == torch.float32
    assert model.arch == arch
    assert isinstance(model.pool, nn.AdaptiveMaxPool2d) and model.pool.output_size == 1
    assert isinstance(model.classifier, nn.Linear) and model.classifier.out_features == 1
    assert torch.all(model.classifier.bias == 0)
    assert model.classifier.weight.abs().max() < 0.1
    assert model.mean.shape == model.std.shape == (1, 3, 1, 1)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert model.classifier.in_features == convs[-1].out_channels
    assert len(convs) >= 4
    assert all(not m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    assert not model.training


def test_vgg16_trunk_is_torchvision_vgg16(vgg):
    from torchvision.models import vgg16 as tv_vgg16

    convs = [m for m in vgg.features if isinstance(m, nn.Conv2d)]
    pools = [m for m in vgg.features if isinstance(m, nn.MaxPool2d)]
    relus = [m for m in vgg.modules() if isinstance(m, nn.ReLU)]
    assert len(convs) == 13 and len(pools) == 5 and len(relus) == 13
    for conv in convs:
        assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
    for pool in pools:
        assert pool.kernel_size == 2 and pool.stride == 2
    assert all(not r.inplace for r in relus)
    assert vgg.classifier.in_features == 512
    assert vgg.conv_layer_names()[0] == "features.0" and vgg.conv_layer_names()[-1] == "features.28"
    assert len(vgg.conv_layer_names()) == 13
    assert vgg.layer("features.28") is convs[-1]
    # Same parameter names and shapes as torchvision's VGG16 features (meta device: no memory, no init cost).
    with torch.device("meta"):
        reference = tv_vgg16().features.state_dict()
    ours = vgg.features.state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in reference.items()}


def test_tiny_is_deterministic_and_layer_lookup(x64):
    torch.manual_seed(123)
    a = build_model("tiny")
    torch.manual_seed(123)
    b = build_model("tiny")
    assert model_id_of(a) == model_id_of(b)
    assert torch.equal(a(x64), b(x64))
    assert a.conv_layer_names() == [f"features.{i}" for i, m in enumerate(a.features) if isinstance(m, nn.Conv2d)]
    with pytest.raises(ValueError, match="valid names: .*features.0"):
        a.layer("features.99")


def test_predict_proba_is_sigmoid_of_forward(tiny, x64):
    with torch.no_grad():
        p = tiny.predict_proba(x64)
        assert torch.equal(p, torch.sigmoid(tiny(x64)))
    assert p.shape == (2,) and torch.all((p >= 0) & (p <= 1))


def test_normalisation_happens_inside(tiny, x64):
    mean = torch.tensor(cm.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(cm.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        by_hand = tiny.classifier(tiny.pool(tiny.features((x64 - mean) / std)).flatten(1)).squeeze(1)
        assert torch.allclose(tiny(x64), by_hand, atol=1e-6)
        assert not torch.allclose(tiny(x64), tiny.classifier(tiny.pool(tiny.features(x64)).flatten(1)).squeeze(1))


def test_bad_inputs_and_arguments(tiny):
    with pytest.raises(ValueError, match="RGB"):
        tiny(torch.rand(2, 1, 32, 32))
    with pytest.raises(TypeError, match="float"):
        tiny(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="architecture"):
        build_model("resnet50")
    with pytest.raises(ValueError, match="vgg16"):
        build_model("tiny", pretrained="imagenet")
    with pytest.raises(ValueError, match="pretrained"):
        build_model("tiny", pretrained="cifar")


# --- checkpoints ------------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path, tiny, x64):
    path = tmp_path / "sub" / "model.pt"
    meta = dict(META, training={"epochs": 3, "val_auc": [0.5, 0.75]})
    model_id = save_checkpoint(path, tiny, meta)
    assert model_id == model_id_of(tiny) and len(model_id) == 16
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left behind
    loaded, meta2 = load_checkpoint(path, expected_arch="tiny")
    assert isinstance(loaded, PatchClassifier) and loaded.arch == "tiny"
    with torch.no_grad():
        assert torch.equal(loaded(x64), tiny(x64))
    assert model_id_of(loaded) == model_id and meta2["model_id"] == model_id
    for key, value in meta.items():
        assert meta2[key] == value
    assert meta2["arch"] == "tiny" and meta2["input_range"] == "0-1"
    assert meta2["normalization"] == {"mean": list(cm.IMAGENET_MEAN), "std": list(cm.IMAGENET_STD)}
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "pathology-explorer/checkpoint" and raw["format_version"] == 1
    assert raw["model_id"] == model_id


def test_model_id_changes_with_one_weight(tiny):
    before = model_id_of(tiny)
    with torch.no_grad():
        tiny.features[0].weight[0, 0, 0, 0] += 1e-3
    assert model_id_of(tiny) != before
    # The id does not depend on memory layout: a channels_last copy (Module.to converts in
    # place, so a deep copy is needed to compare two layouts) has the same id.
    import copy

    contiguous = model_id_of(tiny)
    converted = copy.deepcopy(tiny).to(memory_format=torch.channels_last)
    assert converted.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not tiny.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert model_id_of(converted) == contiguous == model_id_of(tiny.state_dict())


def test_metadata_validation(tmp_path, tiny):
    import numpy as np

    path = tmp_path / "m.pt"
    save_checkpoint(path, tiny, dict(META, auc=np.float64(0.9), epochs=np.int64(4), sizes=(1, 2)))
    _, meta = load_checkpoint(path)
    assert type(meta["auc"]) is float and type(meta["epochs"]) is int and meta["sizes"] == [1, 2]
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(path, tiny, dict(META, bad=object()))
    with pytest.raises(ValueError, match="patch_size"):
        save_checkpoint(path, tiny, {"level": 0})
    with pytest.raises(ValueError, match="level"):
        save_checkpoint(path, tiny, {"patch_size": 64})
    with pytest.raises(ValueError, match="arch"):
        save_checkpoint(path, tiny, dict(META, arch="vgg16"))


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found") as info:
        load_checkpoint(tmp_path / "nope.pt")
    assert "nope.pt" in str(info.value) and "\n" not in str(info.value)


def test_truncated_file(tmp_path, ckpt):
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(open(ckpt, "rb").read()[:100])
    with pytest.raises(CheckpointError, match="corrupt") as info:
        load_checkpoint(bad)
    assert "truncated.pt" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("content", [os.urandom(0), bytes(range(256)) * 8, b"hello, not a model\n"])
def test_garbage_file(tmp_path, content):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(content + torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(5)).to(torch.uint8).numpy().tobytes())
    with pytest.raises(CheckpointError, match="corrupt") as info:
        load_checkpoint(bad)
    assert "garbage.pt" in str(info.value) and "\n" not in str(info.value)


class _Evil:
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["pickle2", "pickle5", "torch"])
def test_pickle_with_code_is_refused_not_executed(tmp_path, writer):
    marker = tmp_path / "PWNED"
    evil = _Evil()
    evil.marker = str(marker)
    bad = tmp_path / "evil.pt"
    if writer == "torch":
        torch.save({"format": cm.CHECKPOINT_FORMAT, "payload": evil}, bad)
    else:
        bad.write_bytes(pickle.dumps(evil, protocol=int(writer[-1])))
    with pytest.raises(CheckpointError, match="contains code objects; refused") as info:
        load_checkpoint(bad)
    assert "evil.pt" in str(info.value)
    assert not marker.exists()


def test_wrong_arch(ckpt):
    with pytest.raises(CheckpointError, match="is a 'tiny' checkpoint, expected 'vgg16'"):
        load_checkpoint(ckpt, expected_arch="vgg16")


def test_foreign_state_dict(tmp_path, tiny):
    path = tmp_path / "bare.pt"
    torch.save(tiny.state_dict(), path)
    with pytest.raises(CheckpointError, match="not a Pathology Explorer checkpoint.*weights="):
        load_checkpoint(path)
    torch.save({"hello": [1, 2]}, path)
    with pytest.raises(CheckpointError, match="not a Pathology Explorer checkpoint"):
        load_checkpoint(path)


def test_state_dict_that_does_not_fit_the_arch(tmp_path, ckpt):
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    raw["state_dict"]["features.99.weight"] = raw["state_dict"].pop("features.0.weight")
    path = tmp_path / "mismatch.pt"
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="missing keys: features.0.weight.*unexpected keys: features.99.weight"):
        load_checkpoint(path)
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    raw["arch"] = "vgg16"  # tiny weights claimed as vgg16
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="does not fit the vgg16 architecture: .*wrong shapes"):
        load_checkpoint(path)


def test_tampered_weights_fail_the_model_id_check(tmp_path, ckpt):
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    raw["state_dict"]["classifier.bias"] += 1.0
    path = tmp_path / "tampered.pt"
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="do not match the stored model id"):
        load_checkpoint(path)


# --- pretrained weights -----------------------------------------------------------------------


def test_imagenet_without_network_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    # A reserved .invalid host: the download fails the same way with or without a network.
    monkeypatch.setattr(cm, "IMAGENET_VGG16_URL", "https://download.pytorch.invalid/models/vgg16-397923af.pth")
    with pytest.raises(CheckpointError, match="--weights") as info:
        build_model("vgg16", pretrained="imagenet", download_timeout=5.0)
    message = str(info.value)
    assert "\n" not in message and "could not be downloaded" in message and "--pretrained none" in message
    assert not any((tmp_path / "torch_home").rglob("*.pth"))


def test_local_weights_and_hub_cache(tmp_path, monkeypatch, vgg, x64):
    # A torchvision-style VGG16 state dict: features.* tensors plus classifier.* keys that must be ignored.
    gen = torch.Generator().manual_seed(7)
    state = {k: torch.randn(v.shape, generator=gen) for k, v in vgg.features.state_dict().items()}
    state = {f"features.{k}": v for k, v in state.items()}
    state["classifier.6.weight"] = torch.randn(1000, 8)
    state["classifier.6.bias"] = torch.randn(1000)
    path = tmp_path / "vgg16-local.pth"
    torch.save(state, path)

    model = build_model("vgg16", weights=path)
    for key, value in model.features.state_dict().items():
        assert torch.equal(value, state[f"features.{key}"])

    # The same file in the torch hub cache is used for pretrained="imagenet" without any network.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(cm, "IMAGENET_VGG16_URL", "https://download.pytorch.invalid/models/vgg16-397923af.pth")
    cached = tmp_path / "th" / "hub" / "checkpoints" / "vgg16-397923af.pth"
    cached.parent.mkdir(parents=True)
    os.replace(path, cached)
    model2 = build_model("vgg16", pretrained="imagenet")
    assert model_id_of(model2.features) == model_id_of(model.features)


def test_wrong_weights_file(tmp_path, ckpt):
    bare = tmp_path / "small.pth"
    torch.save({"features.0.weight": torch.zeros(16, 3, 3, 3), "features.0.bias": torch.zeros(16)}, bare)
    with pytest.raises(CheckpointError, match="does not fit the vgg16 trunk: missing keys"):
        build_model("vgg16", weights=bare)
    with pytest.raises(CheckpointError, match="Pathology Explorer checkpoint"):
        build_model("tiny", weights=ckpt)
    with pytest.raises(CheckpointError, match="not found"):
        build_model("tiny", weights=tmp_path / "absent.pth")


# --- device -----------------------------------------------------------------------------------


def test_resolve_device():
    assert dev.resolve_device("cpu") == torch.device("cpu")
    assert dev.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        dev.resolve_device("tpu")
    assert dev.device_label("cpu") == f"CPU ({torch.get_num_threads()} threads)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_resolve_cuda_without_cuda_raises(ckpt):
    with pytest.raises(ValueError, match="CUDA is not available"):
        dev.resolve_device("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        dev.resolve_device("cuda:0")
    with pytest.raises(ValueError, match="CUDA"):
        load_checkpoint(ckpt, map_location="cuda")


def test_precision_resolution():
    assert dev.resolve_precision("cpu", "fp32") == "fp32"
    assert dev.resolve_precision("cpu", "auto") == ("bf16" if dev.cpu_supports_bf16() else "fp32")
    with pytest.raises(ValueError, match="precision"):
        dev.resolve_precision("cpu", "int8")
    assert isinstance(dev.cpu_supports_bf16(), bool)


def test_autocast_bf16_close_to_fp32(tiny):
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = tiny.predict_proba(x)
        model = dev.prepare_model(tiny, "cpu", "bf16")
        assert not model.training
        assert model.features[0].weight.is_contiguous(memory_format=torch.channels_last)
        with dev.autocast_for("cpu", "bf16") as used:
            assert used == "bf16"
            p = model.predict_proba(x)
        with dev.autocast_for("cpu", "fp32") as used:
            assert used == "fp32"
            assert torch.allclose(model.predict_proba(x).float(), reference, atol=1e-5)
    assert p.shape == (4,)
    assert torch.allclose(p.float(), reference, atol=2e-2)


# --- repository rule --------------------------------------------------------------------------


def test_every_torch_load_in_the_repo_is_data_only():
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for folder in ("core", "app", "pages", "tests", "bench"):
        for file in sorted((root / folder).rglob("*.py")):
            try:
                tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
            except SyntaxError:  # a file being edited by someone else; its own tests report it
                continue
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"
                ):
                    safe = any(
                        k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                        for k in node.keywords
                    )
                    if not safe:
                        offenders.append(f"{file.relative_to(root)}:{node.lineno}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"
