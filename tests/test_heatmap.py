"""Heatmap grids and rendering, with hand-computed pixels."""

import numpy as np
import pytest
from matplotlib import colormaps

from core.heatmap import composite, heatmap_over_thumbnail, probability_grid, render_overlay


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
    outlined = rgba[..., 3] == 255
    assert outlined[:, 10].all() and outlined[:, 19].all()  # left and right border of the middle cell
    assert not outlined[:, :10].any() and not outlined[:, 20:].any()
    assert not outlined[5, 15]  # the interior is not outlined


def test_composite_blends():
    base = np.full((1, 2, 3), 100, np.uint8)
    overlay = np.array([[[200, 0, 0, 255], [200, 0, 0, 0]]], np.uint8)
    assert composite(base, overlay).tolist() == [[[200, 0, 0], [100, 100, 100]]]
    thumb = heatmap_over_thumbnail(np.full((10, 20, 3), 255, np.uint8), (200, 100), probability_grid(np.array([0]), np.array([0]), [1.0], 100), opacity=1.0)
    assert thumb.shape == (10, 20, 3) and (thumb[:, 10:] == 255).all() and (thumb[:, :10] != 255).any()


def test_fade_scales_alpha_with_probability():
    grid = probability_grid(np.array([0, 100, 200]), np.array([0, 0, 0]), [0.0, 0.5, 1.0], size0=100)
    rgba = render_overlay(grid, (30, 10), scale=10.0, opacity=1.0, fade=True)
    assert [rgba[5, c, 3] for c in (5, 15, 25)] == [round(255 * 0.15), round(255 * (0.15 + 0.85 * 0.5)), 255]
