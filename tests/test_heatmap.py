"""Heatmap grids and rendering, with hand-computed pixels."""

import numpy as np
import pytest
from matplotlib import colormaps

from core.heatmap import (
    DEFAULT_COLORMAP, FADE_FROM, FADE_FULL, OUTLINE_HALO_RGB, OUTLINE_RGB, composite, fade_weight, heatmap_over_thumbnail,
    outline_runs, probability_grid, render_overlay,
)


def test_grid_places_patches_in_cells():
    x = np.array([0, 512, 1024, 512])
    y = np.array([0, 0, 0, 512])
    grid = probability_grid(x, y, [0.1, 0.2, 0.3, 0.9], size0=512)
    assert grid.shape == (2, 3) and grid.step0 == 512 and grid.x0 == 0
    assert grid.values[0].tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert np.isnan(grid.values[1, 0]) and grid.values[1, 1] == pytest.approx(0.9)


def test_overlapping_patches_use_their_central_cell():
    grid = probability_grid(np.array([0, 256]), np.array([0, 0]), [0.5, 0.6], size0=512)
    assert grid.step0 == 256 and grid.x0 == 128  # the central 256 px of each patch


def test_render_colours_alpha_and_cut():
    grid = probability_grid(np.array([0, 100]), np.array([0, 0]), [0.0, 1.0], size0=100)
    rgba = render_overlay(grid, (20, 10), scale=10.0, colormap="viridis", opacity=0.5)
    lut = (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    assert rgba[5, 2, :3].tolist() == lut[0].tolist() and rgba[5, 15, :3].tolist() == lut[255].tolist()
    assert rgba[5, 2, 3] == 128
    cut = render_overlay(grid, (20, 10), scale=10.0, opacity=0.5, cut=0.5)
    assert cut[5, 2, 3] == 0 and cut[5, 15, 3] == 128
    # Outside the grid (below it) nothing is drawn.
    assert render_overlay(grid, (20, 20), scale=10.0)[15, 5, 3] == 0


def test_outline_marks_the_border_of_cells_above_threshold():
    grid = probability_grid(np.array([0, 100, 200]), np.array([0, 0, 0]), [0.2, 0.9, 0.3], size0=100)
    rgba = render_overlay(grid, (30, 10), scale=10.0, opacity=0.0, outline=0.5)
    cyan = (rgba[..., 3] == 255) & (rgba[..., :3] == OUTLINE_RGB).all(-1)
    halo = (rgba[..., 3] == 255) & (rgba[..., :3] == OUTLINE_HALO_RGB).all(-1)
    # Two picture pixels of cyan inside the cell's left and right border, one dark pixel outside.
    # (The cell's top and bottom, rows 0-1 and 8-9, are borders too: nothing is predicted above or below.)
    assert cyan[:, [10, 11, 18, 19]].all() and not cyan[2:8, 12:18].any() and cyan[[0, 1, 8, 9], 12:18].all()
    assert halo[:, [9, 20]].all()
    assert not (cyan | halo)[:, :9].any() and not (cyan | halo)[:, 21:].any()


def test_outline_continues_across_tiles():
    """A region border on the seam of two tiles is drawn in both (each renders with a margin)."""
    grid = probability_grid(np.array([0, 100]), np.array([0, 0]), [0.2, 0.9], size0=100)
    left = render_overlay(grid, (10, 10), origin=(0, 0), scale=10.0, opacity=0.0, outline=0.5)
    right = render_overlay(grid, (10, 10), origin=(100, 0), scale=10.0, opacity=0.0, outline=0.5)
    assert (right[:, :2, :3] == OUTLINE_RGB).all() and (right[:, :2, 3] == 255).all()
    assert (left[:, 9, :3] == OUTLINE_HALO_RGB).all() and (left[:, 9, 3] == 255).all()
    assert (left[:, :9, 3] == 0).all()  # opacity 0: nothing else drawn


def test_outline_runs_are_the_border_of_cells_above_threshold():
    """Hand-computed: a 2 x 3 grid, cells >= 0.5 marked #, NaN marked .:  # # .  /  . # #"""
    grid = probability_grid(np.array([0, 100, 200, 0, 100, 200]), np.array([0, 0, 0, 100, 100, 100]),
                            [0.9, 0.5, 0.1, 0.2, 0.7, 0.6], size0=100)
    grid.values[0, 2] = np.nan
    horizontal, vertical = outline_runs(grid, 0.5)
    # Row boundaries 0 (top), 1 (middle), 2 (bottom): top over columns 0-1, middle where the rows differ
    # (column 0: # over ., column 2: . over #), bottom under columns 1-2.
    assert horizontal.tolist() == [[0, 0, 2], [1, 0, 1], [1, 2, 3], [2, 1, 3]]
    # Column boundaries: 0 at row 0; 1 at row 1 (. | #); 2 at row 0 (# | .); 3 at row 1.
    assert vertical.tolist() == [[0, 0, 1], [1, 1, 2], [2, 0, 1], [3, 1, 2]]
    # t is compared in float32, as the grid holds it: a cell equal to t is above.
    value = np.float32(0.29)
    grid.values[:] = value
    assert len(outline_runs(grid, 0.29)[0]) == 2 and len(outline_runs(grid, float(np.nextafter(value, np.float32(1)))) [0]) == 0
    empty = probability_grid(np.array([], dtype=int), np.array([], dtype=int), [], size0=100)
    assert outline_runs(empty, 0.5)[0].shape == (0, 3)


def test_composite_blends():
    base = np.full((1, 2, 3), 100, np.uint8)
    overlay = np.array([[[200, 0, 0, 255], [200, 0, 0, 0]]], np.uint8)
    assert composite(base, overlay).tolist() == [[[200, 0, 0], [100, 100, 100]]]
    thumb = heatmap_over_thumbnail(np.full((10, 20, 3), 255, np.uint8), (200, 100), probability_grid(np.array([0]), np.array([0]), [1.0], 100), opacity=1.0)
    assert thumb.shape == (10, 20, 3) and (thumb[:, 10:] == 255).all() and (thumb[:, :10] != 255).any()


def test_transparent_low_probabilities():
    """Under fade, F(I) <= FADE_FROM is fully transparent (no grey veil), alpha grows to full at FADE_FULL."""
    probs = [0.0, FADE_FROM, (FADE_FROM + FADE_FULL) / 2, FADE_FULL, 1.0]
    grid = probability_grid(np.arange(5) * 100, np.zeros(5, int), probs, size0=100)
    rgba = render_overlay(grid, (50, 10), scale=10.0, opacity=0.8, fade=True)
    alpha = [int(rgba[5, c, 3]) for c in (5, 15, 25, 35, 45)]
    assert alpha == [0, 0, round(255 * 0.8 * 0.5), round(255 * 0.8), round(255 * 0.8)]
    assert fade_weight(np.array([np.nan, -1.0, 2.0])).tolist() == [0.0, 0.0, 1.0]


def _hue(rgb) -> float:
    import colorsys

    return 360 * colorsys.rgb_to_hsv(*(np.asarray(rgb, float) / 255))[0]


def test_default_colours_stand_apart_from_h_and_e():
    """Every colour of the default map drawn at half opacity or more under fade is at least 35 degrees
    of hue away from H&E's stains: haematoxylin's blue-purple and eosin's pink span 250-360 and 0-15."""
    lut = (colormaps[DEFAULT_COLORMAP](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    visible = np.linspace(0, 1, 256)[fade_weight(np.linspace(0, 1, 256)) >= 0.5]
    assert visible.min() < 0.5  # the check covers colours below the default t too

    def distance_to_stains(hue: float) -> float:
        return 0.0 if hue >= 250 or hue <= 15 else min(hue - 15, 250 - hue)

    for p in visible:
        hue = _hue(lut[int(round(p * 255))])
        assert distance_to_stains(hue) >= 35, f"F(I) {p:.2f}: hue {hue:.0f}"
    # The t outline (cyan) is apart from both stains and from the map's own top end (yellow).
    assert distance_to_stains(_hue(OUTLINE_RGB)) >= 40 and abs(_hue(OUTLINE_RGB) - _hue(lut[-1])) > 90
