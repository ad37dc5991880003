"""Patches by physical resolution: the level choice, the resize, and the same patch from any pyramid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import SlideError
from core.inference import adopt_level_run, model_tiling, predict_slide, run_params
from core.model import build_model
from core.slide_io import open_slide
from core.store import ResultStore
from core.tiling import TilingParams, read_patches, read_plan, tile_grid
from tests.conftest import write_pyramid


def tissue(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A white image with smooth pink-purple tissue blobs (level-0 px), the same picture at any scale."""
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    field = np.sin(9 * xx + 2) * np.cos(7 * yy + 1) + 0.6 * np.sin(23 * xx * yy + 3)
    inside = field > 0.1
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    shade = (field[inside] - 0.1) / 1.5
    image[inside] = np.stack([220 - 90 * shade, 140 - 90 * shade, 200 - 40 * shade], axis=1).clip(0, 255).astype(np.uint8)
    return image


@pytest.fixture(scope="module")
def two_scans(tmp_path_factory):
    """The same tissue as a 0.25 um/px pyramid (3072 px) and as a 0.5 um/px pyramid (1536 px)."""
    folder = tmp_path_factory.mktemp("scans")
    fine = tissue(3072, 2048)
    coarse = np.asarray(Image.fromarray(fine).resize((1536, 1024), Image.Resampling.BOX))
    return (
        write_pyramid(folder / "fine.tiff", fine, levels=4, mpp=0.25),
        write_pyramid(folder / "coarse.tiff", coarse, levels=3, mpp=0.5),
    )


def test_level_choice_is_the_coarsest_at_or_finer_than_the_target(two_scans):
    fine = open_slide(two_scans[0])  # levels at 0.25, 0.5, 1, 2 um/px
    for target, level, read in [(0.25, 0, 64), (0.5, 1, 64), (0.7, 1, 90), (1.0, 2, 64), (3.0, 3, 96), (0.2, 0, 51)]:
        plan = read_plan(fine, TilingParams(patch_size=64, mpp=target))
        assert (plan.level, plan.read_size) == (level, read), target
        assert plan.size0 == round(64 * target / 0.25)
        assert plan.step0 % plan.unit == 0  # corners aligned to the read level
    # Metadata rounding (0.2527 vs 0.25) stays within tolerance: read as is.
    assert not read_plan(fine, TilingParams(patch_size=64, mpp=0.5005)).resized


def test_resized_patches_equal_read_region_plus_pillow(two_scans):
    slide = open_slide(two_scans[0])
    grid = tile_grid(slide, TilingParams(patch_size=48, mpp=0.7, tissue_threshold=0.1))
    assert grid.plan.resized and len(grid) > 10
    x, y = grid.x[:12], grid.y[:12]
    got = read_patches(slide, x, y, grid.plan)
    side = grid.plan.read_size
    for k in range(len(x)):
        region = slide.read_region((int(x[k]), int(y[k])), grid.plan.level, (side, side))
        expected = np.asarray(Image.fromarray(region).resize((48, 48), Image.Resampling.BILINEAR))
        assert np.array_equal(got[k], expected)


def test_side_by_side_reads_equal_single_reads(two_scans):
    slide = open_slide(two_scans[0])
    grid = tile_grid(slide, TilingParams(patch_size=32, mpp=1.0, tissue_threshold=0))
    assert not grid.plan.resized and grid.plan.level == 2
    rows = np.flatnonzero(grid.y == grid.y[0])[:8]
    batch = read_patches(slide, grid.x[rows], grid.y[rows], grid.plan)
    for k, i in enumerate(rows):
        single = read_patches(slide, grid.x[i : i + 1], grid.y[i : i + 1], grid.plan)[0]
        assert np.array_equal(batch[k], single)


def test_two_scans_give_the_same_patches_in_microns_and_close_probabilities(two_scans, tmp_path):
    torch.manual_seed(0)
    model = build_model("tiny")
    with torch.no_grad():
        model.classifier.weight.mul_(20)  # outputs that vary visibly with the patch
    tiling = TilingParams(patch_size=64, mpp=1.0, tissue_threshold=0.3)
    results = {}
    with ResultStore(tmp_path / "r.sqlite") as store:
        for path, mpp in zip(two_scans, (0.25, 0.5)):
            result = predict_slide(path, model, store, tiling, device="cpu", precision="fp32")
            pred = result.predictions
            results[mpp] = {(round(x * mpp, 3), round(y * mpp, 3)): p for x, y, p in zip(pred.x, pred.y, pred.prob)}  # level-0 um
            assert np.all(pred.width * mpp == 64.0)  # 64 px at 1 um/px = 64 um on both scans
    shared = set(results[0.25]) & set(results[0.5])
    union = set(results[0.25]) | set(results[0.5])
    assert len(shared) >= 0.9 * len(union) and len(shared) > 20  # the tissue mask may differ at the border
    diffs = np.array([abs(results[0.25][k] - results[0.5][k]) for k in shared])
    print(f"{len(shared)} shared patches of {len(union)}; |dprob| max {diffs.max():.4f}, mean {diffs.mean():.4f}")
    assert diffs.max() < 0.02


def test_a_single_level_image_needs_its_mpp(tmp_path):
    path = tmp_path / "patch.png"
    Image.fromarray(tissue(600, 400)).save(path)
    torch.manual_seed(0)
    model = build_model("tiny")
    tiling = TilingParams(patch_size=64, mpp=0.5, tissue_threshold=0.1)
    with ResultStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(SlideError, match="patch has no resolution metadata.*--mpp.*mpp column of cohort.csv.*Review page"):
            predict_slide(path, model, store, tiling, device="cpu")
        failed = store.runs(status="failed")
        assert len(failed) == 1 and "no resolution metadata" in failed[0].message  # failed with its reason, not 'running'
        result = predict_slide(path, model, store, tiling, device="cpu", slide_mpp=0.25)
        assert result.run.status == "complete" and len(result.predictions) > 0
        assert set(result.predictions.width.tolist()) == {128}  # 64 px x 0.5 / 0.25
        assert store.slides()[0].mpp == 0.25
        # Another given mpp is another run (the patches cover other pixels).
        other = predict_slide(path, model, store, tiling, device="cpu", slide_mpp=0.5)
        assert other.run.id != result.run.id and set(other.predictions.width.tolist()) == {64}
        assert run_params(tiling, 0.5) != run_params(tiling, 0.25) != run_params(tiling)


def test_model_tiling_prefers_the_recorded_resolution():
    assert model_tiling({"patch_size": 128, "level": 1, "mpp": 1.0}) == TilingParams(patch_size=128, mpp=1.0)
    assert model_tiling({"patch_size": 128, "level": 1}) == TilingParams(level=1, patch_size=128)
    assert model_tiling({"patch_size": 128, "mpp": 1.0}, level=2) == TilingParams(level=2, patch_size=128)
    # Level-based params keep their historical form, so stored runs keep their identity.
    assert TilingParams(level=1, patch_size=128).to_dict() == {"level": 1, "patch_size": 128, "stride": 128, "tissue_threshold": 0.25}
    assert TilingParams.from_dict(TilingParams(patch_size=64, mpp=0.5).to_dict()) == TilingParams(patch_size=64, mpp=0.5, stride=64)


def test_level_runs_are_re_keyed_not_recomputed(demo_cohort, tmp_path):
    """A store written when the checkpoint knew only its level keeps its results once it records its mpp."""
    path = sorted((demo_cohort / "slides").glob("*.tiff"))[0]  # 0.5 um/px at level 0
    torch.manual_seed(0)
    model = build_model("tiny")
    with ResultStore(tmp_path / "r.sqlite") as store:
        old = predict_slide(path, model, store, TilingParams(level=1, patch_size=64), device="cpu")
        new = predict_slide(path, model, store, TilingParams(patch_size=64, mpp=1.0), device="cpu")
        assert new.run.id == old.run.id and new.reused and new.computed == 0
        assert np.array_equal(new.predictions.prob, old.predictions.prob)
        assert store.find_run(new.run.slide_id, new.run.model_id, run_params(TilingParams(level=1, patch_size=64))) is None
        # A resolution that needs a resize is not the old run.
        assert adopt_level_run(store, new.run.slide_id, new.run.model_id, open_slide(path), TilingParams(patch_size=64, mpp=0.8)) is None


def test_the_demo_checkpoint_records_its_resolution_and_its_id_is_its_weights():
    from core.model import load_checkpoint, model_id_of
    from core.paths import REPO_ROOT

    model, meta = load_checkpoint(REPO_ROOT / "models" / "demo-tiny.pt")
    assert meta["mpp"] == 1.0 and meta["patch_size"] == 128
    assert meta["model_id"] == model_id_of(model.state_dict())  # the id names these weights (retraining changes it)
    assert model_tiling(meta) == TilingParams(patch_size=128, mpp=1.0)


def test_real_slides_predict_or_fail_with_their_reason(shared_slides, tmp_path):
    """small.svs (Aperio, has mpp) predicts at the model's resolution; unreadable.svs ends as a failed run."""
    torch.manual_seed(0)
    model = build_model("tiny")
    tiling = TilingParams(patch_size=32, mpp=1.0, tissue_threshold=0)
    with ResultStore(tmp_path / "r.sqlite") as store:
        small = predict_slide(shared_slides / "small.svs", model, store, tiling, device="cpu")
        assert small.run.status == "complete" and len(small.predictions) > 0
        mpp = open_slide(shared_slides / "small.svs").mpp
        assert abs(small.predictions.width[0] - 32 * 1.0 / mpp) <= 1
        with pytest.raises(Exception) as info:
            predict_slide(shared_slides / "unreadable.svs", model, store, tiling, device="cpu")
        failed = [r for r in store.runs() if r.status == "failed"]
        assert len(failed) == 1 and failed[0].message and str(info.value).endswith(failed[0].message.split(": ", 1)[-1])


def test_cli_predict_takes_the_mpp_of_an_image(tmp_path, capsys):
    """`predict --mpp` gives a PNG its resolution; without it the one-line error says how to give it."""
    from core.cli import main
    from core.model import save_checkpoint

    torch.manual_seed(0)
    checkpoint = tmp_path / "m.pt"
    save_checkpoint(checkpoint, build_model("tiny"), {"patch_size": 64, "mpp": 0.5, "level": 0})
    image = tmp_path / "tissue.png"
    Image.fromarray(tissue(640, 384)).save(image)
    db, csv = tmp_path / "r.sqlite", tmp_path / "p.csv"
    assert main(["predict", "--model", str(checkpoint), str(image), "--db", str(db), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "tissue has no resolution metadata" in err and "--mpp" in err
    assert main(["predict", "--model", str(checkpoint), str(image), "--db", str(db), "--device", "cpu", "--mpp", "0.25", "--csv", str(csv)]) == 0
    rows = csv.read_text().splitlines()
    assert rows[0] == "slide,x,y,width,height,prob" and len(rows) > 1
    assert {line.split(",")[3] for line in rows[1:]} == {"128"}  # 64 px at 0.5 um/px on a 0.25 um/px image
    # --level cuts by level instead: 64 level-0 px.
    assert main(["predict", "--model", str(checkpoint), str(image), "--db", str(db), "--device", "cpu", "--level", "0", "--csv", str(csv)]) == 0
    assert {line.split(",")[3] for line in csv.read_text().splitlines()[1:]} == {"64"}


def test_store_evaluation_reads_each_slides_own_run_params(demo_cohort, tmp_path):
    """A slide whose mpp the user gave has runs of its own params; the store evaluation finds them."""
    from core.cohort import Cohort
    from core.evaluation import evaluate_store_cohort

    torch.manual_seed(0)
    model = build_model("tiny")
    slides = sorted((demo_cohort / "slides").glob("*.tiff"))[:2]
    tiling = TilingParams(patch_size=64, mpp=1.0)
    with ResultStore(tmp_path / "r.sqlite") as store:
        predict_slide(slides[0], model, store, tiling, device="cpu")
        predict_slide(slides[1], model, store, tiling, device="cpu", slide_mpp=0.5)  # given: its own params
        cohort = Cohort((slides[0].stem, slides[1].stem), ("normal", "normal"))
        with pytest.raises(Exception, match="no predictions"):
            evaluate_store_cohort(store, cohort, params=run_params(tiling))
        results = evaluate_store_cohort(store, cohort, params=run_params(tiling), slide_params={slides[1].stem: run_params(tiling, 0.5)})
        assert set(results.predictions) == {s.stem for s in slides}
