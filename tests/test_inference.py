"""Whole-slide inference into the store: equality with a direct forward, resume, reuse, CLI, torchrun."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from core.inference import PredictionRunner, predict_slide
from core.model import build_model, save_checkpoint
from core.slide_io import open_slide
from core.store import ResultStore
from core.tiling import TilingParams, read_patches, tile_grid
from tests.conftest import ROOT

TILING = TilingParams(level=1, patch_size=64)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = build_model("tiny")
    # Make the output depend visibly on the image: a larger head than the default init.
    with torch.no_grad():
        model.classifier.weight.mul_(50)
    return model


@pytest.fixture(scope="module")
def checkpoint(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, tiny_model, {"patch_size": 64, "level": 1, "label": "test model"})
    return path


def slide_path(demo_cohort, name="demo_001"):
    return demo_cohort / "slides" / f"{name}.tiff"


def test_read_patches_equals_one_read_per_patch(demo_cohort):
    slide = open_slide(slide_path(demo_cohort))
    grid = tile_grid(slide, TILING)
    batch = read_patches(slide, grid.x[:40], grid.y[:40], grid.plan)
    for k in range(40):
        single = slide.read_region((int(grid.x[k]), int(grid.y[k])), 1, (64, 64))
        np.testing.assert_array_equal(batch[k], single)


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-5), ("bf16", 2e-2)])
def test_prediction_equals_direct_forward(demo_cohort, tiny_model, tmp_path, precision, tolerance):
    with ResultStore(tmp_path / "r.sqlite") as store:
        result = predict_slide(slide_path(demo_cohort), tiny_model, store, TILING, device="cpu", precision=precision, batch_size=16)
    slide = open_slide(slide_path(demo_cohort))
    grid = tile_grid(slide, TILING)
    assert len(result.predictions) == len(grid) > 20
    assert (result.predictions.width == grid.size0).all() and grid.size0 == 128
    patches = np.stack([slide.read_region((int(x), int(y)), 1, (64, 64)) for x, y in zip(grid.x, grid.y)])
    with torch.no_grad():
        expected = tiny_model.float()(torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255).sigmoid().numpy()
    got = {(x, y): p for x, y, p in zip(result.predictions.x, result.predictions.y, result.predictions.prob)}
    values = np.array([got[(x, y)] for x, y in zip(grid.x, grid.y)])
    assert np.abs(values - expected).max() < tolerance
    assert values.std() > 1e-3  # the model's output really varies with the patch


def test_stored_run_is_reused(demo_cohort, tiny_model, tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        first = predict_slide(slide_path(demo_cohort), tiny_model, store, TILING, device="cpu")
        calls = []
        second = predict_slide(slide_path(demo_cohort), tiny_model, store, TILING, device="cpu", progress=lambda d, t: calls.append(d))
        assert not first.reused and second.reused and second.computed == 0
        assert second.run.id == first.run.id
        np.testing.assert_array_equal(first.predictions.prob, second.predictions.prob)
        other = predict_slide(slide_path(demo_cohort), tiny_model, store, TilingParams(level=1, patch_size=32), device="cpu")
        assert other.run.id != first.run.id and not other.reused


def test_interrupted_run_resumes_without_duplicates(demo_cohort, tiny_model, tmp_path):
    reference_store = ResultStore(tmp_path / "ref.sqlite")
    reference = predict_slide(slide_path(demo_cohort), tiny_model, reference_store, TILING, device="cpu", precision="fp32", batch_size=8)

    class Stop(Exception):
        pass

    def stop_after_three_batches(done, total):
        if done >= 24:
            raise Stop()

    store = ResultStore(tmp_path / "r.sqlite")
    runner = PredictionRunner(tiny_model, device="cpu", precision="fp32", batch_size=8, commit_rows=8)
    with pytest.raises(Exception):
        runner.predict_slide(slide_path(demo_cohort), store, TILING, progress=stop_after_three_batches)
    [run] = store.runs()
    assert run.status == "failed" and run.n_done == 24
    resumed = runner.predict_slide(slide_path(demo_cohort), store, TILING)
    assert resumed.computed == len(reference.predictions) - 24
    assert resumed.run.status == "complete" and resumed.run.n_done == len(reference.predictions)
    np.testing.assert_array_equal(resumed.predictions.x, reference.predictions.x)
    np.testing.assert_array_equal(resumed.predictions.y, reference.predictions.y)
    np.testing.assert_allclose(resumed.predictions.prob, reference.predictions.prob, atol=1e-6)


def test_killed_process_resumes(demo_cohort, checkpoint, tmp_path):
    """kill -9 in the middle of a run: the committed batches survive, the rest is computed once."""
    db = tmp_path / "r.sqlite"
    code = f"""
import os, signal
from core.inference import predict_slide
from core.model import load_checkpoint
from core.store import ResultStore
from core.tiling import TilingParams
model, meta = load_checkpoint({str(checkpoint)!r})
def progress(done, total):
    if done >= 40:
        os.kill(os.getpid(), signal.SIGKILL)
predict_slide({str(slide_path(demo_cohort))!r}, model, ResultStore({str(db)!r}), TilingParams(level=1, patch_size=64),
              model_id=meta["model_id"], device="cpu", batch_size=8, commit_rows=8, progress=progress)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    from core.model import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    with ResultStore(db) as store:
        [run] = store.runs()
        assert run.status == "running" and run.n_done == 40
        result = predict_slide(slide_path(demo_cohort), model, store, TILING, model_id=meta["model_id"], device="cpu")
        assert result.computed == result.run.n_total - 40
        assert len(set(zip(result.predictions.x.tolist(), result.predictions.y.tolist()))) == len(result.predictions)


def test_cli_predict_csv_and_a_bad_slide(demo_cohort, checkpoint, tmp_path, capsys, shared_slides):
    from core.cli import main

    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("demo_001", "demo_002"):
        shutil.copy(slide_path(demo_cohort, name), slides / f"{name}.tiff")
    shutil.copy(shared_slides / "unopenable.tiff", slides / "broken.tiff")
    out = tmp_path / "preds.csv"
    status = main(["predict", "--model", str(checkpoint), str(slides), "--db", str(tmp_path / "r.sqlite"), "--csv", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2
    assert "broken.tiff" in err and "unsupported or corrupt" in err
    with open(out) as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["slide", "x", "y", "width", "height", "prob"]
    assert {r[0] for r in rows[1:]} == {"demo_001", "demo_002"}
    assert all(r[3] == r[4] == "128" for r in rows[1:])
    assert all(0.0 <= float(r[5]) <= 1.0 for r in rows[1:])


@pytest.mark.slow
def test_torchrun_two_processes_share_the_store(demo_cohort, checkpoint, tmp_path):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = tmp_path / "preds.csv"
    db = tmp_path / "r.sqlite"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "core", "predict", "--model", str(checkpoint),
         str(demo_cohort / "slides"), "--db", str(db), "--csv", str(out), "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with ResultStore(db) as store:
        runs = store.runs()
        assert len(runs) == 4 and all(r.status == "complete" for r in runs)
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    assert {r["slide"] for r in rows} == {"demo_001", "demo_002", "demo_003", "demo_004"}
    assert len(rows) == sum(r.n_done for r in runs)
