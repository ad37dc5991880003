"""Training: three-step sampler, augmentation, schedule, runs with metrics/checkpoints/resume, torchrun, the demo model."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import CohortError
from core.model import load_checkpoint
from core.training import (
    DEMO_COMMAND,
    DEMO_MODEL_PATH,
    DEMO_PRESET,
    DEMO_TARGETS,
    METRICS_COLUMNS,
    ColorJitterRanges,
    RecipeSchedule,
    ThreeStepSampler,
    TrainConfig,
    TrainingError,
    augment_batch,
    color_jitter,
    demo_config,
    ensure_demo_model,
    random_flips,
    train,
)
from core.training.data import read_cohort_table
from tests.conftest import ROOT

# --------------------------------------------------------------------------------------------
# Fixtures: an 8-slide synthetic cohort whose own layout has both labels in train, val and test.


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from core.demo import make_demo_cohort

    out = tmp_path_factory.mktemp("train-cohort")
    table = make_demo_cohort(out, n_slides=8, seed=3, size=2048, workers=1)
    splits = {}
    with open(table) as handle:
        for row in csv.DictReader(handle):
            splits.setdefault(row["split"], set()).add(row["label"])
    assert all(splits[s] == {"tumor", "normal"} for s in ("train", "val", "test")), splits
    return table


def small_config(cohort: Path, out: Path, **changes) -> TrainConfig:
    values = dict(
        cohort=str(cohort), out=str(out), arch="tiny", pretrained="none", level=1, patch_size=64,
        epochs=2, samples_per_epoch=48, batch_size=16, lr=3e-4, workers=2, device="cpu", seed=7,
    )
    values.update(changes)
    return TrainConfig(**values)


# --------------------------------------------------------------------------------------------
# Sampler


def test_sampler_balances_labels_even_with_100x_more_negatives():
    labels = [
        np.r_[np.zeros(2000), np.ones(10)],  # slide 0: both labels, few positives
        np.zeros(3000),  # slide 1: no positive patch: never chosen for label 1
        np.r_[np.zeros(500), np.ones(20)],  # slide 2: both labels
        np.ones(5),  # slide 3: positives only: never chosen for label 0
    ]
    sampler = ThreeStepSampler(labels)
    assert sum(len(x) for x in labels) > 100 * sum(int(x.sum()) for x in labels)
    s = sampler.sample(40000, np.random.default_rng(0))
    # Step 1: labels balanced in expectation (binomial sd at n=40000 is 0.0025).
    assert abs(s.label.mean() - 0.5) < 0.01
    # Every drawn patch has the drawn label.
    drawn = np.array([labels[a][b] for a, b in zip(s.slide, s.patch)])
    np.testing.assert_array_equal(drawn, s.label)
    # Slides without a label are never chosen for it.
    assert 1 not in s.slide[s.label == 1] and 3 not in s.slide[s.label == 0]
    # Step 2: uniform over the slides that hold the label, whatever their patch counts.
    for label, slides in ((1, [0, 2, 3]), (0, [0, 1, 2])):
        share = np.bincount(s.slide[s.label == label], minlength=4)[slides] / (s.label == label).sum()
        np.testing.assert_allclose(share, 1 / 3, atol=0.02)
    # Step 3: uniform over that slide's patches with the label (slide 2's 20 positives).
    counts = np.bincount(s.patch[(s.slide == 2) & (s.label == 1)] - 500, minlength=20)
    assert counts.size == 20 and counts.min() > 0.5 * counts.mean()
    np.testing.assert_array_equal(sampler.slides_with(1), [0, 2, 3])


def test_sampler_is_deterministic_and_needs_each_class():
    labels = [np.array([0, 1, 0, 0]), np.array([0, 0])]
    a = ThreeStepSampler(labels).sample(100, np.random.default_rng(5))
    b = ThreeStepSampler(labels).sample(100, np.random.default_rng(5))
    np.testing.assert_array_equal(a.patch, b.patch)
    np.testing.assert_array_equal(a.slide, b.slide)
    with pytest.raises(ValueError, match="no slide has a patch with label 1"):
        ThreeStepSampler([np.zeros(5)], classes=(0, 1))


def test_hard_pool_is_the_highest_scoring_share_and_replaces_only_normal_draws():
    from core.training.hard_negatives import (
        hard_pool,
        mix_hard_negatives,
        train_negatives,
    )

    labels = [np.array([0, 1, 0, 0]), np.array([0, 0, 1])]
    slide, patch = train_negatives(labels)
    np.testing.assert_array_equal(slide, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(patch, [0, 2, 3, 0, 1])
    prob = np.array([0.10, 0.95, 0.20, 0.90, 0.05])
    pool = hard_pool(slide, patch, prob, top=0.4)  # 2 of 5, highest F(I) first
    assert list(zip(pool.slide, pool.patch)) == [(0, 2), (1, 0)] and list(pool.prob) == [0.95, 0.90]
    assert len(hard_pool(slide, patch, prob, top=0.01)) == 1  # never empty
    with pytest.raises(ValueError, match="hard share"):
        hard_pool(slide, patch, prob, top=0)

    drawn = ThreeStepSampler(labels).sample(4000, np.random.default_rng(1))
    mixed = mix_hard_negatives(drawn, pool, 0.5, np.random.default_rng(2))
    np.testing.assert_array_equal(mixed.label, drawn.label)  # labels, hence their balance, untouched
    tumour = drawn.label == 1
    np.testing.assert_array_equal(mixed.slide[tumour], drawn.slide[tumour])
    np.testing.assert_array_equal(mixed.patch[tumour], drawn.patch[tumour])
    assert all(labels[a][b] == 0 for a, b in zip(mixed.slide[~tumour], mixed.patch[~tumour]))
    in_pool = np.isin(mixed.slide * 10 + mixed.patch, pool.slide * 10 + pool.patch)[~tumour]
    # Half the normal draws replaced by pool draws, plus the plain draws that hit the pool by chance (2 of 5).
    assert abs(in_pool.mean() - (0.5 + 0.5 * 2 / 5)) < 0.03
    assert mix_hard_negatives(drawn, pool, 0.0, np.random.default_rng(2)) is drawn
    again = mix_hard_negatives(drawn, pool, 0.5, np.random.default_rng(2))
    np.testing.assert_array_equal(again.patch, mixed.patch)  # deterministic for a generator state
    with pytest.raises(TrainingError, match="hard-negative share"):
        TrainConfig(cohort="c.csv", hard_negatives=1.5)


# --------------------------------------------------------------------------------------------
# Augmentation


def test_flips_are_exact_per_patch():
    x = torch.rand(32, 3, 8, 6)
    flipped, vertical, horizontal = random_flips(x, torch.Generator().manual_seed(1))
    assert vertical.any() and (~vertical).any() and horizontal.any() and (~horizontal).any()
    for k in range(32):
        expected = x[k]
        if vertical[k]:
            expected = expected.flip(1)  # rows
        if horizontal[k]:
            expected = expected.flip(2)  # columns
        assert torch.equal(flipped[k], expected)


def test_augment_keeps_shape_dtype_range_and_is_seeded():
    x = torch.rand(16, 3, 32, 32)
    out = augment_batch(x, torch.Generator().manual_seed(3))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1 and not torch.equal(out, x)
    again = augment_batch(x, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    # Nothing to do: the identity.
    same = augment_batch(x, torch.Generator().manual_seed(3), flips=False, color=ColorJitterRanges(0, 0, 0, 0))
    assert torch.equal(same, x)
    with pytest.raises(ValueError, match="expected a batch"):
        augment_batch(torch.rand(3, 8, 8))


def test_colour_jitter_draws_per_patch_and_hue_keeps_gray():
    x = torch.full((64, 3, 4, 4), 0.5)
    bright = color_jitter(x, ColorJitterRanges(0.25, 0, 0, 0), torch.Generator().manual_seed(0))
    factors = bright[:, 0, 0, 0] / 0.5
    assert factors.min() >= 0.75 - 1e-6 and factors.max() <= 1.25 + 1e-6 and factors.std() > 0.05
    # A gray patch has no chroma: saturation and hue changes leave it unchanged.
    gray = color_jitter(x, ColorJitterRanges(0, 0, 0.25, 0.04), torch.Generator().manual_seed(0))
    torch.testing.assert_close(gray, x, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------
# Schedule (scripted validation values)


def test_schedule_halves_after_3_flat_loss_epochs_and_stops_after_5_flat_auc_epochs():
    schedule = RecipeSchedule(lr=1.0, lr_patience=3, lr_factor=0.5, stop_patience=5)
    losses = [1.0, 0.9, 0.9, 0.95, 0.91, 0.80, 0.85, 0.85]
    aucs = [0.80, 0.85, 0.85, 0.84, 0.85, 0.80, 0.83, 0.90]
    decisions = [schedule.step(loss, auc) for loss, auc in zip(losses, aucs)]
    # Best loss 0.9 at epoch 2; epochs 3, 4, 5 flat -> halved at the end of epoch 5, not 4.
    assert [d.lr_halved for d in decisions] == [False, False, False, False, True, False, False, False]
    assert [d.lr for d in decisions] == [1.0] * 4 + [0.5] * 4
    # Best AUC 0.85 at epoch 2; epochs 3..7 flat -> stop after epoch 7, not 6.
    assert [d.stop for d in decisions][:7] == [False] * 6 + [True]
    assert [d.auc_improved for d in decisions][:3] == [True, True, False]
    # A long plateau halves again every 3 epochs (epoch 1 sets the best; 2-4 flat, 5-7 flat).
    flat = RecipeSchedule(lr=1.0, stop_patience=100)
    lrs = [flat.step(1.0, 0.5).lr for _ in range(7)]
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    # The state round-trips (resume).
    restored = RecipeSchedule(lr=9.0)
    restored.load_state_dict(schedule.state_dict())
    assert restored.state_dict() == schedule.state_dict()


# --------------------------------------------------------------------------------------------
# Runs


def read_metrics(path: Path) -> list[dict]:
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    assert rows and tuple(rows[0]) == METRICS_COLUMNS
    return rows


@pytest.mark.slow
def test_run_writes_metrics_and_checkpoints_resumes_and_repeats(cohort, tmp_path):
    out = tmp_path / "run"
    config = small_config(cohort, out, test_slide_auc=True)
    epochs_seen = []
    steps = []
    result = train(config, progress=lambda d, t: steps.append((d, t)), on_epoch=epochs_seen.append)
    assert result.epochs == 2 and [m.epoch for m in epochs_seen] == [1, 2]
    assert steps[-1][0] == steps[-1][1] == 2 * 3  # 48 draws / 16 per batch = 3 steps per epoch
    rows = read_metrics(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0 <= float(r["val_auc"]) <= 1 and float(r["train_loss"]) > 0 and float(r["lr"]) == 3e-4 for r in rows)
    best, best_meta = load_checkpoint(out / "best.pt")
    last, last_meta = load_checkpoint(out / "last.pt")
    assert best_meta["patch_size"] == 64 and best_meta["level"] == 1 and best_meta["arch"] == "tiny"
    assert best_meta["mpp"] == 1.0  # cut at level 1 of 0.5 um/px slides: the checkpoint records 1 um/px
    assert last_meta["training"]["epochs"] == 2 and best_meta["training"]["seed"] == 7
    assert best_meta["training"]["best_val_auc"] == pytest.approx(result.best_val_auc)
    assert best_meta["training"]["test_slide_auc"] == result.test_slide_auc and result.test_slide_auc is not None
    state = torch.load(out / "last-state.pt", weights_only=True)  # data only
    assert state["epoch"] == 2 and "optimizer" in state
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["model_id"] == result.model_id == best_meta["model_id"]

    # An existing run is never overwritten by accident.
    with pytest.raises(TrainingError, match="already holds a training run"):
        train(config)
    with pytest.raises(TrainingError, match="seed 7 -> 8"):
        train(config.replace(seed=8, epochs=3), resume=True)

    # Resume: epoch 3 continues from 2; the first two rows are kept as they were.
    resumed = train(config.replace(epochs=3), resume=True)
    rows3 = read_metrics(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows3] == [1, 2, 3] and rows3[:2] == rows
    assert resumed.epochs == 3 and load_checkpoint(out / "last.pt")[1]["training"]["epochs"] == 3

    # Reproducible: the same seed without the interruption gives the same weights.
    straight = train(config.replace(epochs=3, out=str(tmp_path / "straight"), test_slide_auc=False))
    assert load_checkpoint(tmp_path / "straight" / "last.pt")[1]["model_id"] == load_checkpoint(out / "last.pt")[1]["model_id"]
    straight_rows = read_metrics(tmp_path / "straight" / "metrics.csv")
    assert [r["val_loss"] for r in straight_rows] == [r["val_loss"] for r in rows3]
    assert straight.best_val_auc == resumed.best_val_auc


@pytest.mark.slow
def test_hard_negative_mining_draws_the_normal_patches_the_model_scores_highest(cohort, tmp_path, monkeypatch):
    from core.tiling import TilingParams
    from core.training import loop
    from core.training.data import index_slides, read_slide_patches
    from core.training.hard_negatives import train_negatives

    out = tmp_path / "mined"
    config = small_config(cohort, out, epochs=1, hard_negatives=1.0, hard_negative_after=1, hard_negative_top=0.2)
    train(config)  # epoch 1: plain three-step draws
    first, _ = load_checkpoint(out / "last.pt")
    # The train split's normal patches scored independently with epoch 1's weights.
    train_slides = [s for s in read_cohort_table(cohort) if s.split == "train"]
    index = index_slides(train_slides, TilingParams(level=1, patch_size=64, tissue_threshold=0.25), 0.5)
    slide, patch = train_negatives([e.labels for e in index])
    with torch.no_grad():
        prob = np.concatenate([
            first.predict_proba(torch.from_numpy(read_slide_patches(index[s], patch[slide == s])).permute(0, 3, 1, 2).float() / 255).numpy()
            for s in np.unique(slide)
        ])
    seen = []
    real_mix = loop.mix_hard_negatives

    def spy(samples, pool, share, rng):
        mixed = real_mix(samples, pool, share, rng)
        seen.append((samples, pool, mixed))
        return mixed

    monkeypatch.setattr(loop, "mix_hard_negatives", spy)
    result = train(config.replace(epochs=2), resume=True)  # epoch 2 mines
    assert result.epochs == 2 and len(seen) == 1
    drawn, pool, mixed = seen[0]
    # The pool is the top 20% of the normal train patches by the current model's F(I) ...
    assert len(pool) == round(0.2 * slide.size)
    key = slide * 100000 + patch
    hard = np.isin(key, pool.slide * 100000 + pool.patch)
    assert prob[hard].min() >= prob[~hard].max() - 1e-5
    np.testing.assert_allclose(np.sort(pool.prob), np.sort(prob[hard]), atol=1e-5)
    # ... and with share 1 every normal draw of epoch 2 is one of them; tumour draws are untouched.
    normal = mixed.label == 0
    assert normal.any() and np.isin(mixed.slide[normal] * 100000 + mixed.patch[normal], pool.slide * 100000 + pool.patch).all()
    np.testing.assert_array_equal(mixed.patch[~normal], drawn.patch[~normal])
    meta = load_checkpoint(out / "last.pt")[1]
    assert "hard-negative mining after epoch 1" in meta["training"]["recipe"]
    assert meta["training"]["config"]["hard_negatives"] == 1.0


def test_cli_train_records_the_command_and_reports_errors(cohort, tmp_path, capsys):
    from core.cli import main

    out = tmp_path / "cli-run"
    argv = ["train", "--cohort", str(cohort), "--arch", "tiny", "--out", str(out), "--level", "1", "--patch-size", "64",
            "--epochs", "1", "--samples-per-epoch", "32", "--batch-size", "16", "--device", "cpu", "--seed", "1"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "epoch 1: train loss" in err and "best epoch 1" in err
    meta = load_checkpoint(out / "best.pt")[1]
    assert meta["training"]["command"].startswith("python -m core train --cohort ")
    assert "--seed 1" in meta["training"]["command"] and meta["demo"] is False
    # --resume takes the stored settings; only the options given change.
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2"]) == 0
    assert len(read_metrics(out / "metrics.csv")) == 2
    capsys.readouterr()
    for bad, message in [
        (["train", "--arch", "tiny", "--out", str(tmp_path / "x")], "train needs --cohort"),
        (["train", "--cohort", str(tmp_path / "none.csv"), "--out", str(tmp_path / "x"), "--pretrained", "none"], "cohort file not found"),
        (["train", "--cohort", str(cohort), "--out", str(tmp_path / "x"), "--arch", "tiny", "--pretrained", "imagenet"], "ImageNet weights exist only"),
        (["train", "--out", str(tmp_path / "nothing"), "--resume"], "nothing to resume"),
    ]:
        assert main(bad) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], lines


def test_cohort_table_errors(cohort, tmp_path):
    slides = read_cohort_table(cohort)
    assert len(slides) == 8 and {s.label for s in slides} == {0, 1}
    (tmp_path / "slides").mkdir()
    shutil.copy(slides[0].path, tmp_path / "slides" / "t1.tiff")
    table = tmp_path / "cohort.csv"
    table.write_text("slide,label,split\nt1,tumor,train\n")
    with pytest.raises(TrainingError, match="labelled tumor but has no annotations"):
        read_cohort_table(table)
    table.write_text("slide,label,split\nt1,maybe,train\n")
    with pytest.raises(CohortError, match="line 2: slide 't1': label must be .* got 'maybe'"):
        read_cohort_table(table)
    table.write_text("slide,label,split\nmissing,normal,train\n")
    with pytest.raises(TrainingError, match="no slide file for 'missing'"):
        read_cohort_table(table)


@pytest.mark.slow
def test_torchrun_two_processes_train_and_the_checkpoint_loads(cohort, tmp_path):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "core", "-v", "train", "--cohort", str(cohort), "--arch", "tiny",
         "--out", str(out), "--level", "1", "--patch-size", "64", "--epochs", "1", "--samples-per-epoch", "32",
         "--batch-size", "8", "--workers", "1", "--device", "cpu",
         "--hard-negatives", "0.5", "--hard-negative-after", "0"],  # the ranks score the normal patches together
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    model, meta = load_checkpoint(out / "best.pt")
    assert meta["training"]["world_size"] == 2
    assert meta["training"]["config"]["hard_negatives"] == 0.5 and "hard-negative mining" in meta["training"]["recipe"]
    # Each rank scored half the normal train patches; both drew from the same pool of all of them.
    pools = re.findall(r"hard negatives: the (\d+) highest-scoring of (\d+) normal train patches \(F\(I\) ([\d.]+)-([\d.]+)\)", proc.stderr)
    assert len(pools) == 2 and pools[0] == pools[1], pools
    assert meta["training"]["command"].startswith("torchrun --nproc-per-node 2 -m core train")
    assert len(read_metrics(out / "metrics.csv")) == 1
    assert len(re.findall(r"^epoch 1: train loss", proc.stderr, re.M)) == 1  # only rank 0 reports (-v adds log lines)
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2,)


# --------------------------------------------------------------------------------------------
# The demo model


def test_demo_preset_is_the_recipe_with_a_stated_higher_lr():
    config = demo_config(cohort="c.csv", out="o")
    assert config.arch == "tiny" and config.level == 1 and config.patch_size == 128
    assert config.inner_fraction == 0.5 and config.tissue_threshold == 0.25
    assert config.demo and "demo" in config.label and "synthetic" in config.label
    assert config.lr > 5e-5 and "5e-5" in config.note and config.command == DEMO_COMMAND
    assert (config.rho, config.momentum, config.lr_patience, config.stop_patience) == (0.9, 0.9, 3, 5)
    assert dict(DEMO_PRESET)["seed"] == config.seed
    # Hard-negative mining is on, and starts after plain epochs, before the last one.
    assert 0 < config.hard_negatives < 1 and 0 < config.hard_negative_after < config.epochs
    assert "hard-negative mining" in config.note


@pytest.fixture(scope="module")
def demo_model():
    if not DEMO_MODEL_PATH.is_file():
        pytest.fail(f"the committed demo model {DEMO_MODEL_PATH} is missing; make it with `{DEMO_COMMAND}`")
    return load_checkpoint(DEMO_MODEL_PATH)


def test_committed_demo_model_is_labelled_and_made_by_the_preset(demo_model):
    _, meta = demo_model
    assert DEMO_MODEL_PATH.stat().st_size < 1_000_000
    assert meta["demo"] is True and "demo" in meta["label"] and "synthetic" in meta["label"]
    assert meta["arch"] == "tiny" and meta["patch_size"] == 128 and meta["level"] == 1 and meta["mpp"] == 1.0
    training = meta["training"]
    # The preset; --out only says where the run's files went (the checkpoint was copied to models/).
    assert training["command"] == DEMO_COMMAND or re.fullmatch(re.escape(DEMO_COMMAND) + r" --out \S+", training["command"])
    # Good, not necessarily perfect (issue 15); how long it took is bench/'s business, not a test's.
    assert training["best_val_auc"] >= DEMO_TARGETS["val_auc"]
    assert training["seed"] == DEMO_PRESET["seed"]
    for key, value in DEMO_PRESET.items():
        assert training["config"][key] == (training["command"] if key == "command" else value), key


def test_committed_demo_model_reaches_the_test_slide_auc_target(demo_model):
    _, meta = demo_model
    assert meta["training"]["test_slide_auc"] >= DEMO_TARGETS["test_slide_auc"]


def test_demo_model_separates_tumor_from_normal_patches(demo_model, cohort):
    from core.annotations import load_tumors
    from core.slide_io import open_slide
    from core.tiling import TilingParams, label_grid, read_patches, tile_grid

    model, _ = demo_model
    tiling = TilingParams(patch_size=128, mpp=1.0, tissue_threshold=0.25)  # the checkpoint's own tiling
    probs = {}
    for slide in read_cohort_table(cohort):
        handle = open_slide(slide.path)
        grid = tile_grid(handle, tiling)
        labels = label_grid(grid, load_tumors(slide.annotations) if slide.annotations else [], 0.5)
        patches = read_patches(handle, grid.x, grid.y, grid.plan)
        with torch.no_grad():
            p = model.predict_proba(torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255).numpy()
        probs.setdefault("tumor", []).extend(p[labels])
        probs.setdefault("normal" if slide.label == 0 else "tumor-slide-normal", []).extend(p[~labels])
    tumor, normal = np.array(probs["tumor"]), np.array(probs["normal"])
    assert tumor.size and normal.size
    # Good, not perfect (issue 15): tumour patches rank well above the normal slides' patches (on
    # this small fixture cohort most tumour patches are tumour edges or desmoplastic stroma with a
    # few scattered tumour cells, so their median is well below 0.5: the typical one still outranks
    # nine in ten normal patches), while mimics (lymphoid aggregates, hyperchromatic benign
    # epithelium) on normal slides may score high: that is what the Threshold page teaches.
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(np.r_[np.ones(tumor.size), np.zeros(normal.size)], np.r_[tumor, normal])
    assert auc > 0.85, auc
    assert np.median(tumor) > np.quantile(normal, 0.9), (np.median(tumor), np.quantile(normal, 0.9))


def test_ensure_demo_model_returns_the_committed_file_or_installs_a_trained_one(demo_model, tmp_path):
    assert ensure_demo_model() == DEMO_MODEL_PATH  # present and loadable: no training
    # Missing at the target but trained already in the run folder: installed, not retrained.
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(DEMO_MODEL_PATH, run / "best.pt")
    (run / "summary.json").write_text("{}")
    target = tmp_path / "models" / "demo.pt"
    assert ensure_demo_model(path=target, run_dir=run) == target
    assert load_checkpoint(target)[1]["model_id"] == demo_model[1]["model_id"]
    # A damaged file is not returned as usable.
    target.write_bytes(b"not a checkpoint")
    assert ensure_demo_model(path=target, run_dir=run) == target
    assert load_checkpoint(target)[1]["demo"] is True


def test_validation_subset_keeps_both_labels_in_proportion_and_is_fixed():
    from core.training.loop import validation_subset

    labels = np.zeros(5000, dtype=np.int64)
    labels[[17, 4021]] = 1  # a val split whose only tumour is two patches among thousands
    keep = validation_subset(labels, 64)
    assert keep.size == 64 and np.all(np.diff(keep) > 0) and labels[keep].sum() == 1  # one of the two, not none
    balanced = np.r_[np.ones(300, dtype=np.int64), np.zeros(700, dtype=np.int64)]
    keep = validation_subset(balanced, 100)
    assert keep.size == 100 and balanced[keep].sum() == 30  # the split's proportion
    assert np.array_equal(keep, validation_subset(balanced, 100))  # the same subset every epoch and run
    assert np.array_equal(validation_subset(balanced[:50], 100), np.arange(50))  # under the cap: all of them
