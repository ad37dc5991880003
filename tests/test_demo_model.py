"""The committed demo model on the held-out slides of the demo cohort: good, not perfect.

Evaluates ``models/demo-tiny.pt`` (no retraining) on freshly generated val and test slides of
the default cohort (12 slides) and checks the issue's ranges and the numbers shipped beside
the checkpoint (``models/demo-tiny-run/evaluation.json``, shown on the Training page).
"""

from __future__ import annotations

import json

import pytest

from core.training.demo import DEMO_MODEL_PATH, DEMO_RANGES, DEMO_SHIPPED_RUN, HELD_OUT_SPLITS, evaluate_demo_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory) -> dict:
    return evaluate_demo_model(DEMO_MODEL_PATH, tmp_path_factory.mktemp("held-out"), workers=2)


def test_held_out_slides_are_the_issues_held_out_set(evaluation):
    assert evaluation["slides"] >= 12
    assert 0 < evaluation["tumor_slides"] < evaluation["slides"]


@pytest.mark.parametrize("key", [
    "slide_auc",  # 0.943 (0.85-0.97)
    pytest.param("patch_auc", marks=pytest.mark.xfail(
        strict=True,
        reason="known gap (issue 15): retrained by the preset (10 epochs, hard-negative mining from epoch 6; judged on "
        "seed 7, never on these slides), the demo model's patch AUC on seed 0's 12 held-out slides is 0.996, above "
        "0.90-0.98: almost every patch is easy (slide AUC 0.943 and FROC 0.635 are in range)",
    )),
    "froc_score",  # 0.635 (0.5-0.85)
])
def test_held_out_metrics_are_good_not_perfect(evaluation, key):
    low, high = DEMO_RANGES[key]
    assert low <= evaluation[key] <= high, (key, evaluation[key], (low, high))


def test_shipped_run_matches_the_committed_model(evaluation):
    from core.model import load_checkpoint

    shipped = json.loads((DEMO_SHIPPED_RUN / "evaluation.json").read_text())
    summary = json.loads((DEMO_SHIPPED_RUN / "summary.json").read_text())
    _, meta = load_checkpoint(DEMO_MODEL_PATH)
    assert shipped["model_id"] == summary["model_id"] == meta["model_id"] == evaluation["model_id"]
    assert shipped["cohort"]["splits"] == list(HELD_OUT_SPLITS)
    assert meta["mpp"] == 1.0 and meta["patch_size"] == 128  # the patches' physical scale is recorded
    assert meta["demo"] is True
    for key in DEMO_RANGES:
        assert evaluation[key] == pytest.approx(shipped[key], abs=0.01), key
    assert (DEMO_SHIPPED_RUN / "metrics.csv").read_text().startswith("epoch,train_loss,val_loss,val_auc,lr,seconds")
