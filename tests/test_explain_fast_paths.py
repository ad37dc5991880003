"""The fast paths of the forward-only explanations give what the libraries give on their own.

Occlusion runs Captum's ``Occlusion`` through a wrapper that hands the model channels_last
batches; LIME builds its samples as float tensors in our own ``data_labels``. Both are checked
against the plain library calls (Captum's Occlusion on an NCHW model call, LIME's stock
``LimeImageExplainer`` with its uint8 samples) on the tiny model: equal in float32, close within
bf16's precision in bf16. CPU, offline, deterministic; no timing (that is bench/bench_explain.py's).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import Occlusion
from lime.lime_image import LimeImageExplainer

from core.device import autocast_for
from core.explain import explain_patch
from core.explain.base import batch_to_tensor, image_to_tensor
from core.explain.lime_slic import slic_segments


def plain_captum_occlusion(model, image, window, stride, baseline, batch, precision="fp32") -> np.ndarray:
    """Captum's Occlusion on sigmoid(model(x)) with NCHW batches, as the method ran before (one channel of the map)."""
    x = image_to_tensor(image).contiguous()  # NCHW, the layout Captum builds its batches in
    with torch.no_grad(), autocast_for("cpu", precision):
        a = Occlusion(lambda b: torch.sigmoid(model(b).float())).attribute(
            x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
            baselines=baseline, perturbations_per_eval=batch,
        )
    return a[0, 0].float().numpy()


@pytest.mark.parametrize("window,stride,batch", [(16, 8, 16), (12, 5, 7)])
def test_occlusion_equals_captums_plain_occlusion_in_fp32(tiny, tissue_patch, window, stride, batch):
    e = explain_patch(tiny, tissue_patch, "occlusion", window=window, stride=stride, baseline=0.5, batch_size=batch, precision="fp32")
    expected = plain_captum_occlusion(tiny, tissue_patch, window, stride, 0.5, batch)
    assert np.abs(expected).max() > 1e-3  # the map is not trivially zero
    np.testing.assert_allclose(e.map, expected, rtol=1e-4, atol=1e-6)


def test_occlusion_in_bf16_matches_captum_within_bf16_precision(tiny, tissue_patch):
    e = explain_patch(tiny, tissue_patch, "occlusion", window=16, stride=8, batch_size=16, precision="bf16")
    assert e.params["precision"] == "bf16"
    fp32 = plain_captum_occlusion(tiny, tissue_patch, 16, 8, 0.5, 16)
    bf16 = plain_captum_occlusion(tiny, tissue_patch, 16, 8, 0.5, 16, precision="bf16")
    scale = np.abs(fp32).max()
    # bf16 keeps 8 bits of mantissa: drops of F(I) agree to a few % of the map's range.
    assert np.abs(e.map - bf16).max() < 0.05 * scale
    assert np.abs(e.map - fp32).max() < 0.1 * scale
    assert np.corrcoef(e.map.ravel(), fp32.ravel())[0, 1] > 0.98


def stock_lime(model, image, *, seed, n_samples, n_segments, hide_color, batch_size=25):
    """LIME 0.2's own LimeImageExplainer (uint8 samples, its tqdm bar) with the defaults of our method."""
    segments = slic_segments(image, n_segments, 10.0, 1.0)

    def classifier_fn(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            p = torch.sigmoid(model(batch_to_tensor(images)).float())
        return torch.stack([1 - p, p], dim=1).numpy()

    explanation = LimeImageExplainer(kernel_width=0.25, feature_selection="auto", random_state=seed).explain_instance(
        image, classifier_fn, labels=(1,), hide_color=hide_color, top_labels=None, num_features=10,
        num_samples=n_samples, batch_size=batch_size, segmentation_fn=lambda _image: segments,
    )
    weights = np.zeros(int(segments.max()) + 1, dtype=np.float32)
    for index, weight in explanation.local_exp[1]:
        weights[int(index)] = weight
    return segments, weights, float(explanation.score)


@pytest.mark.parametrize("hide_color", [(128, 128, 128), None])
def test_lime_equals_stock_lime_for_a_fixed_seed(tiny, tissue_patch, hide_color, capfd):
    kw = {"seed": 3, "n_samples": 150, "n_segments": 20}
    segments, weights, r2 = stock_lime(tiny, tissue_patch, hide_color=hide_color, **kw)
    capfd.readouterr()  # the stock explainer's tqdm bar
    e = explain_patch(tiny, tissue_patch, "lime", hide_color=hide_color, precision="fp32", batch_size=32, **kw)
    np.testing.assert_array_equal(e.extras["segments"], segments)
    assert np.count_nonzero(weights) == 10  # num_features superpixels kept, as LIME chose them
    np.testing.assert_allclose(e.extras["weights"], weights, rtol=1e-4, atol=1e-6)
    assert e.extras["r2"] == pytest.approx(r2, rel=1e-4, abs=1e-6)
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # our sampling prints nothing


def test_lime_samples_do_not_depend_on_the_batch_size(tiny, tissue_patch):
    a = explain_patch(tiny, tissue_patch, "lime", n_samples=90, n_segments=12, seed=1, batch_size=7)
    b = explain_patch(tiny, tissue_patch, "lime", n_samples=90, n_segments=12, seed=1, batch_size=90)
    np.testing.assert_allclose(a.extras["weights"], b.extras["weights"], rtol=1e-4, atol=1e-6)
