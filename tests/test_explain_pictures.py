"""The picture helpers of core.explain: nearest-neighbour enlargement, colour scales, LIME's numbers, F(I), progress."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.explain import (
    ExplainError,
    explain_patch,
    maximize_activation,
    patch_probability,
)
from core.explain.overlay import (
    colorize,
    colour_scale_bar,
    explanation_scale,
    label_superpixels,
    normalize_map,
    overlay_explanation,
    upscale_nearest,
    with_colour_scale,
)
from core.model import build_model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("tiny").eval()


def test_upscale_nearest_repeats_each_value_as_a_block():
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    big = upscale_nearest(a, 3)
    np.testing.assert_array_equal(big, np.repeat(np.repeat(a, 3, axis=0), 3, axis=1))
    assert (big[:3, :3] == 0).all() and (big[3:, 6:] == 5).all()
    assert upscale_nearest(a, 1) is a
    with pytest.raises(ExplainError):
        upscale_nearest(a, 0)


def test_colour_scale_bar_runs_the_colormap_from_low_to_high():
    bar = colour_scale_bar("RdBu_r", -2.0, 2.0, width=101, height=10)
    assert bar.shape == (10 + 11 + 6, 101, 3) and bar.dtype == np.uint8  # colours, then the values in 11 px text
    assert colour_scale_bar("jet", 0, 1, width=440).shape == (18 + 20 + 6, 440, 3)  # taller bar, larger text
    expected = colorize(np.linspace(0, 1, 101, dtype=np.float32)[None], "RdBu_r")[0]
    np.testing.assert_array_equal(bar[0], expected)
    assert (bar[:10] == bar[:1]).all()
    assert (bar[10:] < 128).any()  # the values are written below the colours
    with pytest.raises(ExplainError):
        colour_scale_bar("RdBu_r", 0, 1, width=4)


def test_explanation_scale_is_what_the_overlay_draws_at_its_ends(tiny):
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for method in ("occlusion", "saliency", "gradcam"):
        e = explain_patch(tiny, image, method, **({"window": 16, "stride": 8} if method == "occlusion" else {}))
        cmap, low, high = explanation_scale(e)
        assert high > 0 and (low == -high if e.signed else low == 0.0)
        if method == "occlusion":  # signed, 100th percentile: the largest |drop| is the end of the scale
            assert high == pytest.approx(float(np.abs(e.map).max()))
            values = normalize_map(e.map, signed=True)
            assert values.min() == pytest.approx(0.0) or values.max() == pytest.approx(1.0)
        if method == "saliency":  # unsigned, the 99th percentile
            assert high == pytest.approx(float(np.percentile(e.map, 99)), rel=1e-5)
        assert cmap == {"occlusion": "RdBu_r", "saliency": "inferno", "gradcam": "jet"}[method]
    picture = with_colour_scale(overlay_explanation(e, image), cmap, low, high)
    assert picture.shape == (64 + 4 + 10 + 11 + 6, 64, 3)


def test_label_superpixels_writes_each_number_inside_its_superpixel():
    segments = np.zeros((40, 60), dtype=np.int32)
    segments[:, 30:] = 1
    segments[25:, :15] = 2
    picture = np.full((40, 60, 3), 90, dtype=np.uint8)
    out, where = label_superpixels(picture, segments, [2, 1, 2], scale=4)
    assert out.shape == (160, 240, 3) and sorted(where) == [1, 2]
    for number, (x, y) in where.items():
        assert segments[y // 4, x // 4] == number  # the box's centre lies in its own superpixel
        patch = out[y - 3 : y + 4, x - 3 : x + 4]
        assert (patch == 255).any() and (patch == 0).any()  # white box, black digit
    untouched = np.ones((160, 240), dtype=bool)
    for x, y in where.values():
        untouched[y - 20 : y + 20, x - 20 : x + 20] = False
    assert (out[untouched] == 90).all()
    with pytest.raises(ExplainError):
        label_superpixels(picture, segments[:10], [1])


def test_patch_probability_is_the_sigmoid_of_the_logit(tiny):
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = float(torch.sigmoid(tiny(x))[0])
    assert patch_probability(tiny, image) == pytest.approx(expected, abs=1e-6)
    assert patch_probability(tiny, image) == pytest.approx(explain_patch(tiny, image, "gradcam").probability, abs=1e-6)
    with pytest.raises(ExplainError):
        patch_probability(tiny, image[..., :2])


def test_activation_maximization_reports_every_step(tiny):
    seen = []
    result = maximize_activation(tiny, steps=7, size=32, progress=lambda *step: seen.append(step))
    assert [s[:2] for s in seen] == [(i, 7) for i in range(1, 8)]
    np.testing.assert_allclose([s[2] for s in seen], result.objective, rtol=1e-6)
    np.testing.assert_allclose([s[3] for s in seen], result.activation, rtol=1e-6)
    plain = maximize_activation(tiny, steps=7, size=32)
    np.testing.assert_array_equal(plain.image, result.image)  # watching changes nothing
