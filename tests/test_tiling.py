"""Tissue mask, patch grid and inner-square labels, against slides and polygons with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import Polygon, box

from core.slide_io import Slide
from core.tiling import (
    TilingParams,
    grid_corners,
    inner_square_hits,
    inner_squares,
    label_patches,
    tile_grid,
)
from core.tissue import mask_from_rgb, tissue_mask

TISSUE = (512, 256, 1536, 1024)  # the pink rectangle of the tissue_slide fixture, level-0 px


def test_tissue_mask_finds_the_rectangle(tissue_slide):
    slide = Slide(tissue_slide[0])
    mask = tissue_mask(slide)
    # The finest level that fits 2048 px is level 0 itself: the mask is the rectangle exactly.
    assert mask.mask.shape == (1536, 2048)
    expected = np.zeros((1536, 2048), bool)
    expected[256:1024, 512:1536] = True
    assert (mask.mask == expected).mean() > 0.999
    assert mask.tissue_fraction == pytest.approx(1024 * 768 / (2048 * 1536), rel=0.01)


def test_tissue_mask_on_a_coarse_level(tissue_slide):
    mask = tissue_mask(Slide(tissue_slide[0]), max_size=600)
    assert mask.mask.shape == (384, 512) and mask.downsample_x == 4.0
    fractions = mask.fraction_in_boxes(np.array([512, 0, 384]), np.array([256, 0, 256]), 256, 256)
    assert fractions.tolist() == pytest.approx([1.0, 0.0, 0.5])


def test_blank_image_has_no_tissue():
    assert not mask_from_rgb(np.full((64, 64, 3), 250, np.uint8)).any()


def test_specks_removed_and_holes_filled():
    rgb = np.full((200, 200, 3), 255, np.uint8)
    rgb[20:180, 20:180] = (220, 120, 180)
    rgb[90:93, 90:93] = 255  # a 9-pixel hole
    rgb[5:7, 190:192] = (220, 120, 180)  # a 4-pixel speck
    mask = mask_from_rgb(rgb, min_object_px=16, max_hole_px=16)
    assert mask[91, 91] and not mask[6, 191]


def test_grid_counts_and_tissue_filter(tissue_slide):
    slide = Slide(tissue_slide[0])
    grid = tile_grid(slide, TilingParams(level=0, patch_size=256, tissue_threshold=0.5))
    # Tissue spans columns 2..5 and rows 1..3 of the 256-px grid: 4 x 3 patches.
    assert len(grid) == 12
    assert set(zip(grid.x.tolist(), grid.y.tolist())) == {(x, y) for x in (512, 768, 1024, 1280) for y in (256, 512, 768)}
    assert (grid.tissue == 1.0).all()
    everything = tile_grid(slide, TilingParams(level=0, patch_size=256, tissue_threshold=0))
    assert len(everything) == 8 * 6


def test_grid_at_level1_is_aligned_and_in_level0_units(tissue_slide):
    slide = Slide(tissue_slide[0])
    grid = tile_grid(slide, TilingParams(level=1, patch_size=96, stride=80, tissue_threshold=0.25))
    assert grid.size0 == 192 and grid.downsample == 2.0
    assert (grid.x % 2 == 0).all() and (grid.y % 2 == 0).all()
    assert (np.diff(np.unique(grid.x)) % 160 == 0).all()
    assert (grid.x + grid.size0 <= 2048).all() and (grid.y + grid.size0 <= 1536).all()
    # Every kept patch overlaps the tissue by more than a quarter.
    for x, y in zip(grid.x, grid.y):
        overlap = box(x, y, x + 192, y + 192).intersection(box(*TISSUE)).area
        assert overlap / 192**2 > 0.2


def test_grid_corners_with_non_integer_downsample():
    x, y, size0 = grid_corners((10_000, 8_000), 4.000345, 512, 512)
    assert size0 == 2048
    assert (x % 4 == 0).all() and (y % 4 == 0).all()
    assert x.max() + size0 <= 10_000 and len(np.unique(x)) == 4


def test_grid_patches_read_as_expected(tissue_slide):
    slide = Slide(tissue_slide[0])
    grid = tile_grid(slide, TilingParams(level=1, patch_size=128, tissue_threshold=0.9))
    patch = slide.read_region((int(grid.x[0]), int(grid.y[0])), 1, (128, 128))
    assert patch.shape == (128, 128, 3) and (patch.mean(axis=(0, 1)) < 250).all()


def test_params_dict_makes_stride_explicit():
    assert TilingParams(level=1, patch_size=128).to_dict() == {"level": 1, "patch_size": 128, "stride": 128, "tissue_threshold": 0.25}


# -- inner-square labels -------------------------------------------------------------------------
def test_inner_square_geometry():
    boxes = inner_squares([0, 1000], [0, 2000], 512, 512, 0.5)
    assert boxes.tolist() == [[128, 128, 384, 384], [1128, 2128, 1384, 2384]]
    assert inner_squares([0], [0], 100, 100, 1.0).tolist() == [[0, 0, 100, 100]]
    with pytest.raises(ValueError):
        inner_squares([0], [0], 100, 100, 0)


@pytest.mark.parametrize(
    "tumor, positive",
    [
        (box(200, 200, 300, 300), True),  # inside the inner square
        (box(0, 0, 1000, 1000), True),  # contains the whole patch
        (box(384, 0, 500, 500), True),  # touches the inner square's right edge exactly
        (box(384.01, 0, 500, 500), False),  # just misses it
        (box(0, 0, 127.9, 512), False),  # inside the patch but left of the inner square
        (box(400, 400, 510, 510), False),  # in the patch's corner only
        (Polygon([(384, 384), (450, 384), (450, 450)]), True),  # touches the inner corner at one point
        (Polygon([(100, 100), (380, 50), (130, 120)]), False),  # a sliver passing just outside
    ],
)
def test_patch_labels_by_inner_square(tumor, positive):
    assert label_patches([0], [0], 512, 512, [tumor]).tolist() == [positive]


def test_hits_pair_patches_with_tumors():
    tumors = [box(200, 200, 300, 300), box(700, 150, 800, 250), box(5000, 5000, 5100, 5100)]
    x = np.array([0, 512, 1024])
    y = np.array([0, 0, 0])
    patch_index, tumor_index = inner_square_hits(x, y, 512, 512, tumors)
    assert sorted(zip(patch_index.tolist(), tumor_index.tolist())) == [(0, 0), (1, 1)]
    assert label_patches(x, y, 512, 512, tumors).tolist() == [True, True, False]
    assert label_patches(x, y, 512, 512, []).tolist() == [False, False, False]
