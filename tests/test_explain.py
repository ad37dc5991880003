"""Tests of core.explain: known answers on hand-weighted models (Captum's style), internals, hooks, threads, CLI.

CPU, offline, deterministic. Models with hand-set weights give maps computable by hand; the
tiny PatchClassifier (seeded) checks the pipeline end to end.
"""

from __future__ import annotations

import ast
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from core.explain import (
    KERNELS,
    METHODS,
    ExplainError,
    conv_filters,
    convolve,
    explain_patch,
    explanation_key,
    feature_maps,
    filter_kernel,
    hook_counts,
    maximize_activation,
    montage,
    overlay,
    pool,
)
from core.model import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]

# Small, fast parameters for the stochastic / costly methods (the defaults are for real patches).
FAST = {
    "saliency": {},
    "smoothgrad": {"n_samples": 6, "batch_size": 3},
    "gradcam": {},
    "occlusion": {"window": 16, "stride": 8},
    "lime": {"n_samples": 120, "n_segments": 16},
    "ig": {"n_steps": 8, "batch_size": 4},
}


# ---------------------------------------------------------------------------------------------
# Models with hand-set weights


class LinearModel(nn.Module):
    """logit = sum(w * x) + b, x in [0, 1]: its gradient is w everywhere."""

    def __init__(self, w: torch.Tensor, b: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = b
        self.eval()

    def forward(self, x):
        return (x * self.w).sum(dim=(1, 2, 3)) + self.b


class RegionSum(nn.Module):
    """logit = sum of x over rows r0:r1, cols c0:c1 (all channels)."""

    def __init__(self, r0, r1, c0, c1):
        super().__init__()
        self.box = (r0, r1, c0, c1)
        self.eval()

    def forward(self, x):
        r0, r1, c0, c1 = self.box
        return x[:, :, r0:r1, c0:c1].sum(dim=(1, 2, 3))


class RegionMean(nn.Module):
    """F(I) = mean of x over a square region (the logit is its logit): LIME's synthetic model."""

    def __init__(self, r0, r1, c0, c1):
        super().__init__()
        self.box = (r0, r1, c0, c1)
        self.eval()

    def forward(self, x):
        r0, r1, c0, c1 = self.box
        p = x[:, :, r0:r1, c0:c1].mean(dim=(1, 2, 3)).clamp(1e-4, 1 - 1e-4)
        return torch.log(p / (1 - p))


class ConvHead(nn.Module):
    """body = conv(3 -> 2, 3x3, pad 1) -> ReLU; logit = v . mean_spatial(body(x)). Optionally fails after the body."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU())
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            self.body[0].weight.copy_(torch.randn(2, 3, 3, 3, generator=g))
            self.body[0].bias.copy_(torch.tensor([-0.5, 0.2]))
        self.v = torch.tensor([1.0, -0.5])
        self.fail = fail
        self.eval()

    def forward(self, x):
        a = self.body(x)
        if self.fail:
            raise RuntimeError("boom after the hooked layer")
        return (a.mean(dim=(2, 3)) * self.v).sum(dim=1)


def random_patch(size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0




# ---------------------------------------------------------------------------------------------
# Known answers


def test_saliency_of_linear_model_is_abs_w():
    w = 0.01 * torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    model = LinearModel(w)
    image = random_patch(16)
    e = explain_patch(model, image, "saliency", target="logit")
    np.testing.assert_allclose(e.map, w[0].abs().max(dim=0).values.numpy(), rtol=1e-6)
    e = explain_patch(model, image, "saliency", target="logit", reduce="mean")
    np.testing.assert_allclose(e.map, w[0].abs().mean(dim=0).numpy(), rtol=1e-6)
    # Probability target: d sigmoid(z)/dx = sigmoid'(z) w.
    z = float((to_tensor(image) * w).sum())
    s = 1 / (1 + np.exp(-z))
    e = explain_patch(model, image, "saliency")
    np.testing.assert_allclose(e.map, s * (1 - s) * w[0].abs().max(dim=0).values.numpy(), rtol=1e-5)
    assert e.probability == pytest.approx(s, rel=1e-6)
    assert e.output == pytest.approx(s, rel=1e-6)
    assert e.map.dtype == np.float32 and e.map.shape == (16, 16)


def test_smoothgrad_of_linear_model_is_abs_w_and_seeded():
    w = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    model = LinearModel(w)
    image = random_patch(16)
    e = explain_patch(model, image, "smoothgrad", target="logit", n_samples=5, batch_size=2, noise=0.3)
    np.testing.assert_allclose(e.map, w[0].abs().max(dim=0).values.numpy(), rtol=1e-6)  # noise cannot change a constant gradient
    assert e.probability == pytest.approx(1 / (1 + np.exp(-float((to_tensor(image) * w).sum()))), rel=1e-6)


def test_smoothgrad_averages_noisy_saliency(tiny, tissue_patch):
    a = explain_patch(tiny, tissue_patch, "smoothgrad", n_samples=4, batch_size=4, seed=3)
    b = explain_patch(tiny, tissue_patch, "smoothgrad", n_samples=4, batch_size=2, seed=3)
    c = explain_patch(tiny, tissue_patch, "smoothgrad", n_samples=4, batch_size=4, seed=4)
    np.testing.assert_allclose(a.map, b.map, rtol=1e-5, atol=1e-9)  # same noise whatever the batching
    assert not np.allclose(a.map, c.map)
    plain = explain_patch(tiny, tissue_patch, "smoothgrad", n_samples=3, noise=0.0)
    np.testing.assert_allclose(plain.map, explain_patch(tiny, tissue_patch, "saliency").map, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("baseline", [0.0, 0.5])
def test_occlusion_of_region_sum_is_the_drop_there_and_zero_elsewhere(baseline):
    image = np.full((32, 32, 3), 200, dtype=np.uint8)
    model = RegionSum(8, 16, 8, 16)
    e = explain_patch(model, image, "occlusion", target="logit", window=4, stride=4, baseline=baseline, batch_size=7)
    expected = np.zeros((32, 32), dtype=np.float32)
    expected[8:16, 8:16] = 4 * 4 * 3 * (200 / 255 - baseline)  # each window inside the region removes its own sum
    np.testing.assert_allclose(e.map, expected, rtol=1e-5, atol=1e-4)  # float32 sums of ~150
    assert e.signed and e.extras["windows"] == 64
    assert e.output == pytest.approx(8 * 8 * 3 * 200 / 255, rel=1e-6)


def test_occlusion_overlapping_windows_average_the_drops():
    image = np.full((8, 8, 3), 255, dtype=np.uint8)
    model = RegionSum(0, 1, 0, 1)  # only pixel (0, 0) counts: 3 (channels) x 1.0
    e = explain_patch(model, image, "occlusion", target="logit", window=4, stride=2, baseline=0.0)
    # Pixel (0, 0) lies in one window only: drop 3. Pixels covered by windows that miss (0, 0) get 0.
    assert e.map[0, 0] == pytest.approx(3.0)
    assert e.map[7, 7] == pytest.approx(0.0)
    assert e.map[1, 3] == pytest.approx(1.5)  # two windows cover it, one contains (0, 0)


@pytest.mark.parametrize("after_activation", [True, False])
def test_gradcam_equals_hand_computed_weighted_sum(after_activation):
    model = ConvHead()
    image = random_patch(12, seed=2)
    x = to_tensor(image)
    with torch.no_grad():
        z = model.body[0](x)[0]  # (2, 12, 12) inner potentials xi
        a = torch.relu(z)  # neuron values y = ReLU(xi)
    hw = 12 * 12
    v = model.v
    if after_activation:  # layer = the ReLU after body.0: F^l = a, d logit / d a = v_l / |F^l|
        alpha = v / hw
        cam = torch.relu((alpha[:, None, None] * a).sum(0))
    else:  # layer = the conv itself: F^l = z, d logit / d z = v_l / |F^l| * [z > 0]
        alpha = (v[:, None, None] * (z > 0).float()).mean(dim=(1, 2)) / hw
        cam = torch.relu((alpha[:, None, None] * z).sum(0))
    e = explain_patch(model, image, "gradcam", layer="body.0", target="logit", after_activation=after_activation)
    # The layer map has the patch's size: bilinear upsampling is the identity.
    np.testing.assert_allclose(e.map, cam.numpy(), rtol=1e-5, atol=1e-7)
    assert e.extras["layer"] == "body.0"
    assert e.extras["tapped_layer"] == ("body.1" if after_activation else "body.0")
    assert e.output == pytest.approx(float((a.mean(dim=(1, 2)) * v).sum()), rel=1e-5)


def test_gradcam_upsamples_bilinear_to_the_patch(tiny, tissue_patch):
    e = explain_patch(tiny, tissue_patch, "gradcam")
    assert e.extras["layer"] == tiny.conv_layer_names()[-1]
    assert e.extras["layer_map_size"] == [8, 8]  # 64 px / 2**3 pools before the last conv
    assert e.map.shape == (64, 64) and (e.map >= 0).all()
    smooth = explain_patch(tiny, tissue_patch, "gradcam", smooth_sigma=2.0)
    assert smooth.map.std() <= e.map.std() + 1e-9


def _checker(size: int = 64, block: int = 16) -> np.ndarray:
    """Blocks of clearly different colours: SLIC finds them as superpixels."""
    colours = np.random.default_rng(0).permutation(
        [(r, g, b) for r in (20, 120, 220) for g in (30, 130, 230) for b in (40, 140)]
    )
    n = size // block
    image = np.zeros((size, size, 3), dtype=np.uint8)
    for i in range(n):
        for j in range(n):
            image[i * block : (i + 1) * block, j * block : (j + 1) * block] = colours[i * n + j]
    return image


def test_lime_recovers_the_superpixel_that_drives_the_model():
    image = _checker()
    image[16:32, 32:48] = (230, 230, 230)  # the region the model looks at: F(I) = its mean = 230 / 255
    model = RegionMean(16, 32, 32, 48)
    e = explain_patch(model, image, "lime", n_segments=16, compactness=20, n_samples=300, hide_color=(0, 0, 0), seed=1)
    segments, weights = e.extras["segments"], e.extras["weights"]
    top = e.extras["top_positive"][0]
    region = segments[16:32, 32:48]
    assert np.mean(region == top) > 0.9  # the top superpixel is the driving region
    assert np.mean(segments == top) < 0.1
    assert weights[top] == pytest.approx(230 / 255, abs=0.1)  # switching it off removes all of F(I)
    others = np.delete(weights, top)
    assert np.abs(others).max() < 0.05
    assert e.extras["r2"] > 0.95
    assert e.probability == pytest.approx(230 / 255, abs=1e-4)
    np.testing.assert_allclose(e.map, weights[segments])
    assert e.signed and len(e.extras["top_positive"]) <= 5


def test_lime_prints_nothing(capfd, tissue_patch):
    explain_patch(RegionMean(0, 8, 0, 8), tissue_patch, "lime", n_samples=30)
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # LIME 0.2's tqdm bar is gone


def test_lime_not_cancer_flips_the_weights():
    image = _checker()
    image[16:32, 32:48] = (230, 230, 230)
    model = RegionMean(16, 32, 32, 48)
    kw = {"n_segments": 16, "compactness": 20, "n_samples": 200, "hide_color": (0, 0, 0), "seed": 2}
    yes = explain_patch(model, image, "lime", **kw)
    no = explain_patch(model, image, "lime", target="not_cancer", **kw)
    np.testing.assert_allclose(no.extras["weights"], -yes.extras["weights"], atol=1e-6)
    assert no.output == pytest.approx(1 - yes.output)
    assert no.extras["top_negative"][0] == yes.extras["top_positive"][0]


def test_integrated_gradients_of_linear_model():
    w = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    model = LinearModel(w)
    image = random_patch(16, seed=4)
    x = to_tensor(image)
    e = explain_patch(model, image, "ig", target="logit", baseline="white", n_steps=4)
    np.testing.assert_allclose(e.map, ((x - 1.0) * w)[0].sum(0).numpy(), rtol=1e-4, atol=1e-6)  # (x - x') * w
    assert abs(e.extras["delta"]) < 1e-3
    blurred = explain_patch(model, image, "ig", target="logit", baseline="blurred", blur_sigma=2.0, n_steps=4)
    # Completeness: the map adds up to y(x) - y(baseline).
    from core.explain.integrated_gradients import ig_baseline

    base = ig_baseline(x.contiguous(memory_format=torch.channels_last), "blurred", 2.0)
    assert blurred.map.sum() == pytest.approx(float(((x - base) * w).sum()), rel=1e-4, abs=1e-4)


def test_activation_maximization_increases_its_objective(tiny):
    out = maximize_activation(tiny, size=32, steps=12, lr=0.05, lam=1e-4)
    assert out.objective.shape == (12,) and out.objective[-1] > out.objective[0]
    assert out.image.shape == (32, 32, 3) and out.image.dtype == np.uint8
    assert out.unit == "output logit"
    layer = tiny.conv_layer_names()[1]
    ch = maximize_activation(tiny, layer=layer, channel=3, size=32, steps=10, jitter=2, blur_every=4)
    assert ch.activation[-1] > ch.activation[0]
    assert ch.unit == f"{layer} channel 3 (mean)"
    again = maximize_activation(tiny, layer=layer, channel=3, size=32, steps=10, jitter=2, blur_every=4)
    np.testing.assert_array_equal(ch.image, again.image)  # seeded: deterministic


def test_activation_maximization_objective_is_the_formula():
    w = torch.full((1, 3, 8, 8), 0.01)
    model = LinearModel(w)
    out = maximize_activation(model, size=8, steps=1, lam=0.5)
    x = torch.full((1, 3, 8, 8), 0.5)
    assert out.objective[0] == pytest.approx(float((x * w).sum() - 0.5 * (x**2).sum()), rel=1e-6)
    # lambda dominates the gradient here: the ascent darkens the image.
    assert out.image.mean() < 127


def test_activation_maximization_errors(tiny):
    with pytest.raises(ExplainError, match="channel 99"):
        maximize_activation(tiny, layer="features.0", channel=99, size=16, steps=1)
    with pytest.raises(ExplainError, match="no layer"):
        maximize_activation(tiny, layer="nope", size=16, steps=1)
    with pytest.raises(ExplainError, match="steps"):
        maximize_activation(tiny, steps=0)


# ---------------------------------------------------------------------------------------------
# CNN basics


def test_convolve_is_cross_correlation_by_hand():
    x = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)
    k = np.array([[1, 0], [0, -1]], dtype=np.float32)  # not symmetric: a flip would change the result
    # out[r, c] = x[r, c] - x[r + 1, c + 1]
    np.testing.assert_array_equal(convolve(x, k, padding="valid"), [[-4, -4], [-4, -4]])
    k2 = np.array([[0, 1], [2, 0]], dtype=np.float32)  # out = x[r, c+1] + 2 x[r+1, c]
    np.testing.assert_array_equal(convolve(x, k2, padding="valid"), [[10, 13], [19, 22]])
    edge = convolve(x, "edge", padding="same")  # zero padding 1: centre = 8*5 - (sum - 5)
    assert edge[1, 1] == pytest.approx(8 * 5 - (45 - 5))
    assert edge[0, 0] == pytest.approx(8 * 1 - (2 + 4 + 5))
    np.testing.assert_array_equal(convolve(x, "identity"), x)
    np.testing.assert_array_equal(convolve(x, k, padding="valid", stride=2), [[-4]])
    assert convolve(x, k, padding="valid", bias=1.5)[0, 0] == pytest.approx(-2.5)


def test_convolve_matches_torch_conv2d_for_a_filter_over_channels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    kernel = rng.normal(size=(3, 3, 3)).astype(np.float32)  # (k, k, C)
    ours = convolve(image, kernel, stride=2, bias=0.25)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].double() / 255
    w = torch.from_numpy(kernel).permute(2, 0, 1)[None].double()
    ref = torch.nn.functional.conv2d(x, w, bias=torch.tensor([0.25], dtype=torch.float64), stride=2, padding=1)[0, 0]
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-5, atol=1e-6)
    per_channel = convolve(image, "blur")
    assert per_channel.shape == (9, 11, 3)
    np.testing.assert_allclose(per_channel[4, 5], image[3:6, 4:7].reshape(-1, 3).mean(0) / 255, rtol=1e-5)


def test_convolve_with_a_learned_filter(tiny):
    kernel = filter_kernel(tiny, "features.0", index=2)
    assert kernel.shape == (3, 3, 3)
    image = random_patch(8)
    out = convolve(image, kernel, bias=float(tiny.features[0].bias[2].detach()))
    ref = torch.nn.functional.conv2d(to_tensor(image), tiny.features[0].weight[2:3], tiny.features[0].bias[2:3], padding=1)
    np.testing.assert_allclose(out, ref[0, 0].detach().numpy(), rtol=1e-4, atol=1e-5)


def test_convolve_errors():
    with pytest.raises(ExplainError, match="unknown kernel"):
        convolve(np.zeros((4, 4)), "nope")
    with pytest.raises(ExplainError, match="same C"):
        convolve(np.zeros((4, 4)), np.zeros((3, 3, 3)))
    with pytest.raises(ExplainError, match="padding"):
        convolve(np.zeros((4, 4)), "edge", padding="full")
    assert set(KERNELS) >= {"edge", "sharpen", "blur", "sobel_x", "sobel_y", "identity"}


def test_pooling_against_hand_computed_arrays():
    y = np.array([[1, 2, 0, -1], [3, 4, 1, 1], [0, 0, 2, 2], [-2, 6, 2, 2]], dtype=np.float32)
    np.testing.assert_array_equal(pool(y, "max"), [[4, 1], [6, 2]])
    np.testing.assert_allclose(pool(y, "avg"), [[10 / 4, 1 / 4], [4 / 4, 8 / 4]])
    # L2: square root of the SUM of squares (the source material), not of the mean.
    np.testing.assert_allclose(pool(y, "l2"), [[np.sqrt(30), np.sqrt(3)], [np.sqrt(40), np.sqrt(16)]], rtol=1e-6)
    # Overlapping windows (stride 1) and a window that does not fit (dropped).
    np.testing.assert_array_equal(pool(y[:3, :3], "max", window=2, stride=1), [[4, 4], [4, 4]])
    np.testing.assert_array_equal(pool(y[:3, :3], "max", window=2), [[4]])
    stack = np.stack([y, -y], axis=2)  # H x W x C: each map separately
    np.testing.assert_array_equal(pool(stack, "max")[..., 1], [[-1, 1], [2, -2]])
    with pytest.raises(ExplainError, match="kind"):
        pool(y, "median")


# ---------------------------------------------------------------------------------------------
# Internals


def test_first_layer_filters_as_rgb_tiles():
    model = ConvHead()
    f = conv_filters(model)
    assert f.layer == "body.0" and f.rgb
    assert f.tiles.shape == (2, 3, 3, 3) and f.tiles.dtype == np.uint8
    w = model.body[0].weight.detach().numpy()[1]  # (3, k, k)
    expected = np.round((w - w.min()) / (w.max() - w.min()) * 255).astype(np.uint8).transpose(1, 2, 0)
    np.testing.assert_array_equal(f.tiles[1], expected)
    assert f.tiles[0].min() == 0 and f.tiles[0].max() == 255
    assert f.grid(scale=4).shape == (12 + 2, 2 * 12 + 3, 3)  # one row of two 12 px tiles


def test_deeper_filters_per_channel(tiny):
    layer = tiny.conv_layer_names()[1]
    f = conv_filters(tiny, layer)
    assert not f.rgb and f.tiles.shape == (32, 16, 3, 3)
    assert f.grid(scale=1, max_filters=2).shape == (2 * 3 + 3, 16 * 3 + 17)
    with pytest.raises(ExplainError, match="not a conv layer"):
        conv_filters(tiny, "features.1")


def test_feature_maps_with_max_and_mean(tiny, tissue_patch):
    fm = feature_maps(tiny, tissue_patch, "features.0")
    assert fm.tapped_layer == "features.1"  # the conv's neurons after the ReLU
    with torch.no_grad():
        ref = torch.relu(tiny.features[0]((to_tensor(tissue_patch) - tiny.mean) / tiny.std))[0].numpy()
    np.testing.assert_allclose(fm.maps, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fm.max, ref.reshape(16, -1).max(1), rtol=1e-6)
    np.testing.assert_allclose(fm.mean, ref.reshape(16, -1).mean(1), rtol=1e-5)
    assert fm.grid().shape == (4 * 64 + 5, 4 * 64 + 5)
    raw = feature_maps(tiny, tissue_patch, "features.0", after_activation=False)
    assert raw.maps.min() < 0 and raw.tapped_layer == "features.0"
    assert feature_maps(tiny, tissue_patch, "features.2").maps.shape == (16, 32, 32)


def test_overlay_and_grid_pictures(tiny, tissue_patch):
    for method in ("gradcam", "occlusion", "lime", "saliency"):
        e = explain_patch(tiny, tissue_patch, method, **FAST[method])
        picture = e.overlay(tissue_patch)
        assert picture.shape == tissue_patch.shape and picture.dtype == np.uint8
    zero = overlay(tissue_patch, np.zeros((64, 64), np.float32))
    np.testing.assert_array_equal(zero, tissue_patch)  # a zero map leaves the patch as it is
    with pytest.raises(ExplainError, match="aligned"):
        overlay(tissue_patch, np.zeros((8, 8)))
    assert montage(np.zeros((5, 4, 4), np.uint8), cols=3, pad=1).shape == (2 * 4 + 3, 3 * 4 + 4)


# ---------------------------------------------------------------------------------------------
# The pipeline on the real (tiny) model


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_on_the_tiny_patch_classifier(tiny, tissue_patch, method):
    e = explain_patch(tiny, tissue_patch, method, **FAST[method])
    assert e.method == method
    assert e.map.shape == (64, 64) and e.map.dtype == np.float32 and np.isfinite(e.map).all()
    with torch.no_grad():
        p = float(tiny.predict_proba(to_tensor(tissue_patch)))
    assert e.probability == pytest.approx(p, rel=1e-4)
    assert e.target == "cancer" and e.output == pytest.approx(p, rel=1e-4)
    assert e.seconds > 0 and e.params["target"] == "cancer"
    assert set(e.params) == set(METHODS[method].defaults)
    assert np.abs(e.map).max() > 0


@pytest.mark.parametrize("method", ["saliency", "smoothgrad", "ig"])
def test_pixel_gradient_methods_stay_in_float32(tiny, tissue_patch, method):
    fp32 = explain_patch(tiny, tissue_patch, method, **FAST[method])
    asked = explain_patch(tiny, tissue_patch, method, precision="bf16", **FAST[method])
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's autocast is switched off too
        inside = explain_patch(tiny, tissue_patch, method, **FAST[method])
    assert asked.params["precision"] == "fp32" and asked.extras["requested_precision"] == "bf16"
    np.testing.assert_array_equal(asked.map, fp32.map)
    np.testing.assert_array_equal(inside.map, fp32.map)


@pytest.mark.parametrize("method", ["gradcam", "occlusion", "lime"])
def test_other_methods_may_run_in_bf16(tiny, tissue_patch, method):
    e = explain_patch(tiny, tissue_patch, method, precision="bf16", **FAST[method])
    ref = explain_patch(tiny, tissue_patch, method, **FAST[method])
    assert e.params["precision"] == "bf16"
    assert np.isfinite(e.map).all()
    assert np.corrcoef(e.map.ravel(), ref.map.ravel())[0, 1] > 0.8


def test_not_cancer_target_negates_the_gradient(tiny, tissue_patch):
    cancer = explain_patch(tiny, tissue_patch, "occlusion", **FAST["occlusion"])
    not_cancer = explain_patch(tiny, tissue_patch, "occlusion", target="not_cancer", **FAST["occlusion"])
    np.testing.assert_allclose(not_cancer.map, -cancer.map, atol=1e-6)
    assert not_cancer.output == pytest.approx(1 - cancer.probability)


def test_bad_inputs_give_explain_errors(tiny, tissue_patch):
    with pytest.raises(ExplainError, match="unknown explanation method 'nope'"):
        explain_patch(tiny, tissue_patch, "nope")
    with pytest.raises(ExplainError, match="no parameter 'window'"):
        explain_patch(tiny, tissue_patch, "saliency", window=3)
    with pytest.raises(ExplainError, match="target must be one of cancer, not_cancer"):
        explain_patch(tiny, tissue_patch, "lime", target="logit")
    with pytest.raises(ExplainError, match="uint8"):
        explain_patch(tiny, tissue_patch.astype(np.float32), "saliency")
    with pytest.raises(ExplainError, match="H x W x 3"):
        explain_patch(tiny, tissue_patch[..., 0], "saliency")
    with pytest.raises(ExplainError, match="no layer 'features.99'.*features.0"):
        explain_patch(tiny, tissue_patch, "gradcam", layer="features.99")
    with pytest.raises(ExplainError, match="window"):
        explain_patch(tiny, tissue_patch, "occlusion", window=0)
    with pytest.raises(ExplainError, match="hide_color"):
        explain_patch(tiny, tissue_patch, "lime", hide_color=(1, 2))


def test_explanation_key_completes_defaults():
    a = explanation_key("m1", "slide:0:0:0:64", "occlusion", {})
    assert a == explanation_key("m1", "slide:0:0:0:64", "occlusion", METHODS["occlusion"].defaults)
    assert a != explanation_key("m1", "slide:0:0:0:64", "occlusion", {"window": 16})
    assert a != explanation_key("m2", "slide:0:0:0:64", "occlusion", {})
    assert a != explanation_key("m1", "slide:64:0:0:64", "occlusion", {})
    assert a != explanation_key("m1", "slide:0:0:0:64", "lime", {})
    assert len(a) == 64
    with pytest.raises(ExplainError):
        explanation_key("m1", "p", "occlusion", {"bogus": 1})


# ---------------------------------------------------------------------------------------------
# Hooks and threads


def test_hooks_removed_after_errors(tissue_patch):
    model = ConvHead(fail=True)
    before = hook_counts(model)
    with pytest.raises(ExplainError, match="boom"):
        explain_patch(model, random_patch(12), "gradcam", layer="body.0", target="logit")
    assert hook_counts(model) == before
    ok = ConvHead()
    with pytest.raises(ExplainError, match="channel 7"):
        maximize_activation(ok, layer="body.0", channel=7, size=12, steps=2)
    with pytest.raises(ExplainError, match="no layer"):
        feature_maps(ok, random_patch(12), "body.9")
    assert hook_counts(ok) == hook_counts(ConvHead())
    assert all(v == 0 for v in hook_counts(ok).values())


def test_hooks_removed_after_success(tiny, tissue_patch):
    before = hook_counts(tiny)
    assert all(v == 0 for v in before.values())
    explain_patch(tiny, tissue_patch, "gradcam")
    feature_maps(tiny, tissue_patch, "features.3")
    maximize_activation(tiny, layer="features.3", channel=1, size=16, steps=2)
    assert hook_counts(tiny) == before
    assert all(p.requires_grad for p in tiny.parameters()) and not tiny.training  # model state untouched
    assert all(p.grad is None for p in tiny.parameters())


def test_concurrent_explanations_equal_serial_ones(tiny, tissue_patch):
    jobs = [(m, FAST[m]) for m in METHODS]
    serial = [explain_patch(tiny, tissue_patch, m, **kw).map for m, kw in jobs]
    serial_fm = feature_maps(tiny, tissue_patch, "features.3").maps
    x = to_tensor(tissue_patch)
    stop = threading.Event()

    def foreign_inference():
        # Another session predicting with the same model while hooks are on it.
        n = 0
        with torch.no_grad():
            while not stop.is_set():
                tiny(torch.rand(2, 3, 64, 64))
                n += 1
        return n

    with ThreadPoolExecutor(max_workers=6) as pool_:
        other = pool_.submit(foreign_inference)
        futures = [pool_.submit(explain_patch, tiny, tissue_patch, m, **kw) for _ in range(2) for m, kw in jobs]
        fm_futures = [pool_.submit(feature_maps, tiny, tissue_patch, "features.3") for _ in range(3)]
        results = [f.result() for f in futures]
        fms = [f.result() for f in fm_futures]
        stop.set()
        assert other.result() > 0
    for i, result in enumerate(results):
        np.testing.assert_allclose(result.map, serial[i % len(jobs)], rtol=1e-5, atol=1e-8, err_msg=result.method)
    for fm in fms:
        np.testing.assert_allclose(fm.maps, serial_fm, rtol=1e-6)
    assert all(v == 0 for v in hook_counts(tiny).values())
    with torch.no_grad():
        assert float(tiny.predict_proba(x)) == pytest.approx(results[0].probability, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Command line


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, tiny, {"patch_size": 64, "level": 1, "mpp": None, "demo": True})
    return path


def _run_cli(argv):
    from core.cli import main

    return main(argv)


def test_cli_writes_map_and_overlay(tmp_path, checkpoint, tissue_patch, capsys):
    patch = tmp_path / "patch.png"
    Image.fromarray(tissue_patch).save(patch)
    out, png = tmp_path / "m" / "map.npy", tmp_path / "m" / "overlay.png"
    code = _run_cli(["explain", "--model", str(checkpoint), "--image", str(patch), "--method", "occlusion",
                     "--window", "16", "--stride", "8", "--device", "cpu", "--out", str(out), "--png", str(png)])
    assert code == 0
    heat = np.load(out)
    assert heat.shape == (64, 64) and heat.dtype == np.float32
    assert np.asarray(Image.open(png)).shape == (64, 64, 3)
    assert '"method": "occlusion"' in capsys.readouterr().out
    code = _run_cli(["explain", "--model", str(checkpoint), "--image", str(patch), "--method", "lime",
                     "--num-samples", "50", "--hide-color", "mean", "--param", "n_segments=8", "--out", str(out)])
    assert code == 0


def test_cli_reads_a_patch_from_a_slide(tmp_path, checkpoint, tissue_slide):
    slide, _ = tissue_slide
    out = tmp_path / "map.npy"
    code = _run_cli(["explain", "--model", str(checkpoint), str(slide), "--x", "600", "--y", "300",
                     "--method", "gradcam", "--layer", "features.8", "--out", str(out)])
    assert code == 0
    assert np.load(out).shape == (64, 64)  # the checkpoint's patch_size, read at its level 1


def test_cli_rejects_a_patch_outside_the_slide(tmp_path, checkpoint, tissue_slide, capsys):
    slide, _ = tissue_slide
    code = _run_cli(["explain", "--model", str(checkpoint), str(slide), "--x", "5000", "--y", "0",
                     "--method", "saliency", "--out", str(tmp_path / "m.npy")])
    assert code == 2 and "outside the slide (2048 x 1536" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "magic"], "unknown explanation method 'magic'"),
        (["--method", "gradcam", "--layer", "features.99"], "no layer 'features.99'"),
        (["--method", "saliency", "--window", "8"], "--window does not apply to saliency"),
        (["--method", "ig", "--baseline", "purple"], "baseline must be one of"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(tmp_path, checkpoint, tissue_patch, capsys, extra, message):
    patch = tmp_path / "patch.png"
    Image.fromarray(tissue_patch).save(patch)
    code = _run_cli(["explain", "--model", str(checkpoint), "--image", str(patch), *extra, "--out", str(tmp_path / "m.npy")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert not (tmp_path / "m.npy").exists()


def test_core_explain_never_imports_streamlit():
    for path in list((ROOT / "core" / "explain").glob("*.py")) + [ROOT / "core" / "cli" / "explain.py"]:
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & {"streamlit", "app", "pages"}, path
