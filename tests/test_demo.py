"""The synthetic demo cohort: OpenSlide-readable pyramids, annotations, cohort table, determinism."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile

from core.annotations import load_tumors
from core.demo import cohort_layout, make_demo_cohort
from core.slide_io import Slide
from core.tiling import TilingParams, label_grid, tile_grid


def _rows(folder):
    with open(folder / "cohort.csv") as handle:
        return list(csv.DictReader(handle))


def test_cohort_files_and_table(demo_cohort):
    rows = _rows(demo_cohort)
    assert [r["slide"] for r in rows] == ["demo_001", "demo_002", "demo_003", "demo_004"]
    assert sorted(r["label"] for r in rows) == ["normal", "normal", "tumor", "tumor"]
    assert list(rows[0].keys()) == ["slide", "label", "split"]
    for row in rows:
        assert (demo_cohort / "slides" / f"{row['slide']}.tiff").is_file()
        assert (demo_cohort / "annotations" / f"{row['slide']}.geojson").is_file()
        assert (demo_cohort / "annotations" / f"{row['slide']}.xml").is_file()


def test_slides_open_as_generic_tiff_pyramids_with_mpp(demo_cohort):
    slide = Slide(demo_cohort / "slides" / "demo_001.tiff")
    assert slide.vendor == "generic-tiff"
    assert slide.mpp == pytest.approx(0.5)
    assert slide.dimensions[0] == 2048
    assert slide.level_count >= 2
    assert slide.level_downsamples[:2] == (1.0, 2.0)
    assert "synthetic" in slide.properties["tiff.ImageDescription"]
    with tifffile.TiffFile(demo_cohort / "slides" / "demo_001.tiff") as tif:
        assert len(tif.pages) == slide.level_count  # one page per level, no SubIFDs
        assert all(page.is_tiled and page.tilewidth == 256 for page in tif.pages)
        assert [page.subfiletype for page in tif.pages[1:]] == [1] * (len(tif.pages) - 1)


def test_tumors_only_on_tumor_slides_and_they_look_like_tumor(demo_cohort):
    for row in _rows(demo_cohort):
        tumors = load_tumors(demo_cohort / "annotations" / f"{row['slide']}.geojson")
        assert (len(tumors) > 0) == (row["label"] == "tumor"), row
        features = json.loads((demo_cohort / "annotations" / f"{row['slide']}.geojson").read_text())
        assert features["properties"]["synthetic"] is True
        if row["label"] != "tumor":
            continue
        slide = Slide(demo_cohort / "slides" / f"{row['slide']}.tiff")
        grid = tile_grid(slide, TilingParams(level=0, patch_size=128))
        labels = label_grid(grid, tumors)
        assert labels.any() and not labels.all()
        # Tumor patches hold more haematoxylin: they are darker than normal tissue patches.
        means = np.array([slide.read_region((int(x), int(y)), 0, (128, 128)).mean() for x, y in zip(grid.x, grid.y)])
        assert means[labels].mean() < means[~labels].mean() - 15


def test_geojson_and_asap_agree(demo_cohort):
    for row in _rows(demo_cohort):
        a = load_tumors(demo_cohort / "annotations" / f"{row['slide']}.geojson")
        b = load_tumors(demo_cohort / "annotations" / f"{row['slide']}.xml")
        assert len(a) == len(b)
        for pa, pb in zip(a, b):
            assert pa.symmetric_difference(pb).area < 1e-6 * pa.area


def test_same_seed_same_cohort(tmp_path):
    make_demo_cohort(tmp_path / "a", n_slides=2, seed=5, size=1024, workers=1)
    make_demo_cohort(tmp_path / "b", n_slides=2, seed=5, size=1024, workers=1)
    make_demo_cohort(tmp_path / "c", n_slides=2, seed=6, size=1024, workers=1)
    for name in ("slides/demo_001.tiff", "slides/demo_002.tiff", "annotations/demo_001.geojson", "cohort.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "slides/demo_001.tiff").read_bytes() != (tmp_path / "c" / "slides/demo_001.tiff").read_bytes()


def test_strip_rendering_is_seamless():
    """Rendering in strips must equal rendering the same rows at once (no seams)."""
    from core.demo import SlideRenderer, plan_slide

    plan = plan_slide("demo_x", "tumor", "train", 2048, (1, 1))
    renderer = SlideRenderer(plan)
    whole = renderer.render_strip(0, plan.height)
    parts = np.concatenate([renderer.render_strip(row, min(256, plan.height - row)) for row in range(0, plan.height, 256)])
    np.testing.assert_array_equal(whole, parts)


def test_layout_balances_splits():
    layout = cohort_layout(20, seed=0)
    labels = [label for _, label, _ in layout]
    assert labels.count("tumor") == 12 and labels.count("normal") == 8
    for split in ("train", "val", "test"):
        assert {label for _, label, s in layout if s == split} == {"tumor", "normal"}
    with pytest.raises(ValueError):
        cohort_layout(1, seed=0)


def test_demo_data_cli(tmp_path, capsys):
    from core.cli import main

    assert main(["demo-data", str(tmp_path / "cohort"), "--slides", "2", "--size", "1024", "--workers", "1"]) == 0
    assert len(list((tmp_path / "cohort" / "slides").glob("*.tiff"))) == 2
    assert main(["demo-data", str(tmp_path / "x"), "--slides", "1"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: ")
