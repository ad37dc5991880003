"""The Streamlit pages on a small synthetic cohort, driven by AppTest."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT

MAIN = str(ROOT / "app" / "main.py")


@pytest.fixture(scope="module")
def app_data(demo_cohort, tmp_path_factory):
    """A copy of the small demo cohort with a test checkpoint in its models/ folder."""
    from core.model import build_model, save_checkpoint

    folder = tmp_path_factory.mktemp("appdata") / "cohort"
    shutil.copytree(demo_cohort, folder)
    torch.manual_seed(0)
    model = build_model("tiny")
    with torch.no_grad():
        model.classifier.weight.mul_(50)
    (folder / "models").mkdir()
    save_checkpoint(folder / "models" / "test-tiny.pt", model, {"patch_size": 64, "level": 1, "label": "test"})
    return folder


@pytest.fixture()
def app(app_data, monkeypatch):
    monkeypatch.setenv("PATHEX_DEMO_DIR", str(app_data))
    at = AppTest.from_file(MAIN, default_timeout=120)
    return at


def choose_test_model(at):
    labels = at.sidebar.selectbox[1].options
    at.sidebar.selectbox[1].select(next(l for l in labels if "test-tiny" in l))
    return at.run()


def test_review_predicts_and_decides_at_t(app):
    at = app.run()
    assert not at.exception, at.exception
    at = choose_test_model(at)
    assert at.title[0].value == "Review"
    assert at.sidebar.slider[0].value == 0.5
    run_button = next(b for b in at.button if b.label.startswith("Run the model on demo_001"))
    at = run_button.click().run()
    assert not at.exception, at.exception
    decision = next(m for m in at.metric if m.label.startswith("Decision at t"))
    score = float(next(m for m in at.metric if m.label.startswith("Slide score")).value)
    assert decision.value == ("cancer" if score >= 0.5 else "no cancer")
    # Moving t just above and below the slide score flips the decision, without recomputing.
    at.sidebar.slider[0].set_value(min(1.0, round(score + 0.01, 2))).run()
    assert next(m for m in at.metric if m.label.startswith("Decision at t")).value == "no cancer"
    at.sidebar.slider[0].set_value(max(0.0, round(score - 0.01, 2))).run()
    assert next(m for m in at.metric if m.label.startswith("Decision at t")).value == "cancer"
    assert not at.exception
