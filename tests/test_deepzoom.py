"""Map tiles: geometry, pixels against direct reads, white outside, overlay colours."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.deepzoom import (
    LRU,
    SlideTiler,
    max_zoom,
    overlay_tile,
    tile_bounds,
    world_side,
)
from core.heatmap import probability_grid
from core.slide_io import Slide


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_world_geometry():
    assert max_zoom((2048, 1536)) == 3 and world_side((2048, 1536)) == 2048
    assert max_zoom((2049, 100)) == 4
    assert max_zoom((100, 100)) == 0
    assert tile_bounds((2048, 1536), 3, 2, 1) == (512, 256, 1.0)
    assert tile_bounds((2048, 1536), 1, 1, 0) == (1024, 0, 4.0)


def test_slide_tiles_match_reads(tissue_slide):
    path, image = tissue_slide
    tiler = SlideTiler(Slide(path), quality=95)
    full = decode(tiler.tile(3, 2, 1))
    assert full.shape == (256, 256, 3)
    assert np.abs(full.astype(int) - image[256:512, 512:768]).mean() < 3
    # Zoom 2: one tile pixel = 2 level-0 pixels (level 1 of the pyramid).
    half = decode(tiler.tile(2, 1, 0))
    assert np.abs(half.astype(int) - image[::2, ::2][0:256, 256:512]).mean() < 3
    # The world is 2048 x 2048: rows below the slide's 1536 px are white.
    bottom = decode(tiler.tile(3, 0, 7))
    assert bottom.min() > 245
    with pytest.raises(ValueError):
        tiler.tile(4, 0, 0)
    assert tiler.tile(3, 2, 1) is tiler.tile(3, 2, 1)  # cached


def test_tilers_sharing_a_cache_stay_within_its_bytes_and_apart(tissue_slide):
    path, _ = tissue_slide
    small = SlideTiler(Slide(path), quality=95)
    one_tile = len(small.tile(3, 2, 1))
    shared = LRU(3 * one_tile)  # room for about three tiles, whatever the number of tilers
    a, b = SlideTiler(Slide(path), quality=95, cache=shared), SlideTiler(Slide(path), quality=20, cache=shared)
    assert a.tile(3, 2, 1) != b.tile(3, 2, 1)  # same address, another tiler: its own tile, not the other's
    assert a.cached(3, 2, 1) is not None and b.cached(3, 2, 1) is not None
    for x in range(4):
        a.tile(3, x, 2)
        b.tile(3, x, 2)
        assert shared.nbytes <= shared.max_bytes
    assert len(shared) >= 2
    kept_b = len([key for key in shared._data if key[0] is b._marker])
    a.forget()
    assert all(key[0] is b._marker for key in shared._data) and len(shared) == kept_b


def test_overlay_tile_colours_follow_probabilities():
    grid = probability_grid(np.array([0, 256]), np.array([0, 0]), [0.0, 1.0], size0=256)
    rgba = decode(overlay_tile(grid, (2048, 2048), 3, 0, 0, colormap="viridis"))
    assert rgba.shape == (256, 256, 4) and rgba[..., 3].min() == 255  # tile (3,0,0) = patch 0
    right = decode(overlay_tile(grid, (2048, 2048), 3, 1, 0, colormap="viridis"))
    assert right[0, 0, :3].tolist() != rgba[0, 0, :3].tolist()
    empty = decode(overlay_tile(grid, (2048, 2048), 3, 5, 5))
    assert empty[..., 3].max() == 0
    cut = decode(overlay_tile(grid, (2048, 2048), 2, 0, 0, cut=0.5))
    assert cut[10, 10, 3] == 0 and cut[10, 130, 3] == 255  # zoom 2 (2 px per tile px): patch 1 spans columns 128..255


def test_lonlat_round_trip():
    from core.deepzoom import from_lonlat, to_lonlat

    x = np.array([0, 1024, 2048, 37.5])
    y = np.array([0, 1024, 2048, 1999.0])
    lon, lat = to_lonlat(x, y, (2048, 1536))
    assert lon[0] == -180 and lon[2] == 180 and lat[1] == pytest.approx(0) and lat[0] == pytest.approx(85.0511, abs=1e-3)
    back_x, back_y = from_lonlat(lon[:3], lat[:3], (2048, 1536))
    np.testing.assert_allclose(back_x, x[:3], atol=1e-6)
    np.testing.assert_allclose(back_y, y[:3], atol=1e-6)
