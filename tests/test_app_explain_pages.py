"""Explain, CNN basics and Network through AppTest: the pictures a teacher points at are drawn as promised.

Pooled maps are blocky (np.repeat of the pooled map), every attribution map has its colour scale,
LIME's numbered superpixels are the ones its caption lists, an uploaded image gets its F(I), and
activation maximization reports its steps and objective while it runs. The arrays the pages hand
to ``image`` are recorded by wrapping Streamlit's ``ImageMixin.image`` (AppTest runs the page in
this process).
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image
from streamlit.elements.image import ImageMixin
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT

MAIN = str(ROOT / "app" / "main.py")
PAGES = ROOT / "pages"


@pytest.fixture(scope="module")
def predicted(app_cohort, tmp_path_factory):
    """A copy of the app's cohort with predictions of the test model (tiny, 64 px at level 1) for every slide.

    A copy: the session's app_cohort stays without results, as other modules expect.
    """
    import shutil

    from core.inference import predict_slide
    from core.model import load_checkpoint
    from core.store import ResultStore
    from core.tiling import TilingParams

    folder = tmp_path_factory.mktemp("explain-pages") / "cohort"
    shutil.copytree(app_cohort, folder, ignore=shutil.ignore_patterns("results.sqlite*"))
    model, meta = load_checkpoint(folder / "models" / "test-tiny.pt")
    with ResultStore(folder / "results.sqlite") as store:
        for path in sorted((folder / "slides").glob("*.tiff")):
            predict_slide(path, model, store, TilingParams(level=1, patch_size=64), model_id=meta["model_id"], metadata=meta, device="cpu")
    return folder


@pytest.fixture()
def drawn(monkeypatch):
    """Every (array, caption) a page draws with ``.image`` during the test, in order."""
    pictures: list[tuple[np.ndarray, str | None]] = []
    original = ImageMixin.image

    def record(self, image, caption=None, *args, **kwargs):
        if isinstance(image, np.ndarray):
            pictures.append((image.copy(), caption))
        return original(self, image, caption, *args, **kwargs)

    monkeypatch.setattr(ImageMixin, "image", record)
    return pictures


@pytest.fixture()
def app(predicted, monkeypatch, tmp_path):
    monkeypatch.setenv("PATHEX_DEMO_DIR", str(predicted))
    monkeypatch.setenv("PATHEX_NO_DEMO_TRAINING", "1")
    monkeypatch.setenv("PATHEX_UPLOAD_DIR", str(tmp_path / "uploads"))
    at = AppTest.from_file(MAIN, default_timeout=180).run()
    assert not at.exception, at.exception
    labels = at.sidebar.selectbox[1].options
    at.sidebar.selectbox[1].select(next(label for label in labels if "test-tiny" in label)).run()
    assert not at.exception, at.exception
    return at


def open_page(at, page: str):
    at.switch_page(str(PAGES / page)).run()
    at.radio(key="patch_source").set_value("most suspicious patch of a slide").run()
    assert not at.exception, at.exception
    return at


def test_cnn_basics_pooled_maps_are_blocky_and_the_default_slide_is_a_tumour_slide(app, drawn, predicted):
    import pandas as pd

    from core.explain import KERNELS, convolve, pool
    from core.explain.overlay import rescale_uint8

    at = open_page(app, "cnn_basics.py")
    labels = pd.read_csv(predicted / "cohort.csv").set_index("slide")["label"]
    assert labels[at.selectbox(key="patch_slide").value] == "tumor"
    drawn.clear()
    at.run()
    assert not at.exception, at.exception
    image = next(a for a, c in drawn if c == "input patch")
    relu_map = np.maximum(convolve(image.mean(axis=2).astype(np.uint8), KERNELS["edge"]), 0)  # the page's default kernel
    np.testing.assert_array_equal(next(a for a, c in drawn if c == "y = ReLU(ξ)"), rescale_uint8(relu_map))
    for (picture, _), kind in zip(drawn[-3:], ("max", "avg", "l2")):  # the last three pictures: the pooled maps
        pooled = rescale_uint8(pool(relu_map, kind, 4))
        factor = picture.shape[0] // pooled.shape[0]
        assert factor >= 2 and picture.shape[0] >= 512
        np.testing.assert_array_equal(picture, np.repeat(np.repeat(pooled, factor, axis=0), factor, axis=1))
    assert any("max pooling 4 × 4" in c.value for c in at.caption)


def test_explain_draws_a_colour_scale_under_every_map_and_numbers_limes_superpixels(app, drawn, monkeypatch):
    import importlib

    from core.explain import METHODS

    overlay_module = importlib.import_module("core.explain.overlay")  # core.explain.overlay is also a function's name

    labelled = []
    original = overlay_module.label_superpixels

    def spy(picture, segments, numbers, scale=1):
        out = original(picture, segments, numbers, scale)
        labelled.append((picture, list(numbers), scale, out))
        return out

    monkeypatch.setattr(overlay_module, "label_superpixels", spy)
    at = open_page(app, "explain.py")
    drawn.clear()
    labelled.clear()
    at.run()
    assert not at.exception, at.exception
    # One picture per method, its colour scale below it: a bar whose every row is the same run of colours.
    pictures = [a for a, _ in drawn][1:]  # the first is the patch
    assert len(pictures) == len(METHODS)
    for picture in pictures:
        width = picture.shape[1]
        bar_rows, text_rows = max(10, width // 24), max(11, width // 22) + 6  # colour_scale_bar's layout
        bar = picture[-(bar_rows + text_rows) : -text_rows]
        assert (bar == bar[:1]).all() and len(np.unique(bar[0], axis=0)) > 50
        assert width >= 384
    # LIME: the numbers drawn are the superpixels its caption lists, on the picture shown.
    caption = next(c.value for c in at.caption if "surrogate R²" in c.value)
    listed = [int(n) for part in re.findall(r"(?:supporting|against): \[([\d, ]*)\]", caption) for n in part.split(",") if n.strip()]
    assert listed and "numbered on the picture" in caption
    (plain, numbers, scale, (picture, where)) = labelled[-1]
    assert numbers == listed and sorted(where) == sorted(set(listed))
    shown = pictures[list(METHODS).index("lime")]
    np.testing.assert_array_equal(shown[: picture.shape[0]], picture)
    assert picture.shape[0] >= 384
    enlarged = np.repeat(np.repeat(plain, scale, axis=0), scale, axis=1)
    for x, y in where.values():  # each number's box changed the picture there
        assert not np.array_equal(picture[y - 4 : y + 4, x - 4 : x + 4], enlarged[y - 4 : y + 4, x - 4 : x + 4])


def test_explain_shows_f_of_i_for_an_uploaded_image(app, predicted):
    from core.explain import patch_probability
    from core.model import load_checkpoint

    at = app.switch_page(str(PAGES / "explain.py")).run()
    at.multiselect(key="explain_methods").set_value(["gradcam"])
    at.radio(key="patch_source").set_value("upload an image").run()
    rng = np.random.default_rng(3)
    image = np.full((96, 96, 3), (220, 150, 190), dtype=np.uint8)
    image[rng.integers(0, 96, 400), rng.integers(0, 96, 400)] = (90, 40, 140)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    uploader = next(u for u in at.get("file_uploader") if "image" in u.label.lower())
    uploader.set_value(("upload.png", buffer.getvalue(), "image/png")).run()
    assert not at.exception, at.exception
    shown = next(m for m in at.metric if m.label == "F(I)")
    model, meta = load_checkpoint(predicted / "models" / "test-tiny.pt")
    side = int(meta["patch_size"])
    expected = patch_probability(model, np.asarray(Image.fromarray(image).resize((side, side))))
    assert float(shown.value) == pytest.approx(expected, abs=6e-4)  # shown with 3 decimals


def test_activation_maximization_reports_its_steps_while_it_runs(app, monkeypatch):
    import streamlit.elements.progress as progress_module

    texts = []
    original = progress_module.ProgressMixin.progress

    def record(self, value, text=None):
        texts.append(text)
        return original(self, value, text)

    monkeypatch.setattr(progress_module.ProgressMixin, "progress", record)
    at = app.switch_page(str(PAGES / "network.py")).run()
    next(n for n in at.number_input if n.label == "Steps").set_value(30)
    next(b for b in at.button if b.label == "Run gradient ascent").click().run()
    assert not at.exception, at.exception
    steps = [t for t in texts if t and t.startswith("Gradient ascent: step")]
    pattern = r"Gradient ascent: step (\d+) / 30 · objective -?[\d.e+-]+ · y_i\(x\) -?[\d.e+-]+"
    assert steps and all(re.fullmatch(pattern, t) for t in steps), steps
    assert steps[-1].startswith("Gradient ascent: step 30 / 30")  # the last step is always drawn
    result = at.session_state["ascent"]
    assert len(result.objective) == 30 and steps[-1].endswith(f"y_i(x) {result.activation[-1]:.4g}")
