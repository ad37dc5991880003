"""Map tiles of a slide and of its probability overlay, for a pan-and-zoom viewer.

Not the patch grid a model reads (that is ``core.tiling``): these tiles are only drawn.

The slide is treated as the top-left corner of a square of side ``256 * 2**max_zoom``
level-0 pixels (the smallest power-of-two multiple of 256 that holds it), the square a web
map calls the world: tile (z, x, y) is the square's cell (x, y) at zoom z, each 256 x 256
pixels. At ``max_zoom`` one tile pixel is one level-0 pixel. Slide tiles come from
OpenSlide's ``DeepZoomGenerator`` (tile 256, no overlap), whose level ``max - k`` is exactly
zoom ``max_zoom - k`` of this square; cells outside the slide are white. Overlay tiles are
rendered from a ``ProbabilityGrid`` with the same geometry.
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict

import numpy as np
import openslide
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from core.errors import SlideError
from core.heatmap import ProbabilityGrid, png_bytes, render_overlay
from core.slide_io import Slide

TILE = 256
WHITE = (255, 255, 255)


def max_zoom(dimensions: tuple[int, int]) -> int:
    """Return the zoom at which one tile pixel is one level-0 pixel."""
    return max(0, math.ceil(math.log2(max(max(dimensions), TILE) / TILE)))


def is_tile(top_zoom: int, z: int, x: int, y: int) -> bool:
    """Return True if (z, x, y) is a tile of the world square with zooms 0..``top_zoom``.

    ``z`` is compared first, so an absurd zoom never reaches ``2**z``.
    """
    return 0 <= z <= top_zoom and 0 <= x < 2**z and 0 <= y < 2**z


def world_side(dimensions: tuple[int, int]) -> int:
    """Return the side in level-0 pixels of the square world holding the slide."""
    return TILE * 2 ** max_zoom(dimensions)


def tile_bounds(dimensions: tuple[int, int], z: int, x: int, y: int) -> tuple[float, float, float]:
    """Return (x0, y0, scale) of tile (z, x, y): its level-0 top-left corner and level-0 px per tile px."""
    scale = 2 ** (max_zoom(dimensions) - z)
    return x * TILE * scale, y * TILE * scale, float(scale)


class LRU:
    """A thread-safe LRU cache of encoded tiles, bounded in bytes (a tile's size is ``len`` of its value)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key):
        """Return the cached value of ``key`` (marking it recently used), or None."""
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        """Cache ``value``; the least recently used entries go until the total fits ``max_bytes``."""
        size = len(value)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.nbytes -= len(old)
            self._data[key] = value
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, dropped = self._data.popitem(last=False)
                self.nbytes -= len(dropped)


    def drop(self, predicate) -> int:
        """Remove the entries whose key satisfies ``predicate``; return how many went."""
        with self._lock:
            gone = [key for key in self._data if predicate(key)]
            for key in gone:
                self.nbytes -= len(self._data.pop(key))
        return len(gone)


class SlideTiler:
    """Encoded JPEG map tiles of one slide, cached.

    ``cache``: an LRU shared with other tilers (a server keeps one, so its tile memory is bounded
    in bytes however many slides are open); None: a cache of ``cache_bytes`` of its own. Keys in a
    shared cache carry this tiler's own marker, so two tilers never see each other's tiles.
    """

    def __init__(self, slide: Slide, *, quality: int = 80, cache_bytes: int = 64 * 2**20, cache: LRU | None = None):
        self.slide = slide
        self.quality = quality
        self.max_zoom = max_zoom(slide.dimensions)
        self._dz = DeepZoomGenerator(slide.openslide, tile_size=TILE, overlap=0, limit_bounds=False)
        self._cache = LRU(cache_bytes) if cache is None else cache
        self._marker = object()  # unique for this tiler's life, unlike id()
        self._blank = self._encode(Image.new("RGB", (TILE, TILE), WHITE))

    def _encode(self, image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=self.quality)
        return buffer.getvalue()

    def valid(self, z: int, x: int, y: int) -> bool:
        """Return True if (z, x, y) is a tile of the world square (z is checked before any ``2**z``)."""
        return is_tile(self.max_zoom, z, x, y)

    def cached(self, z: int, x: int, y: int) -> bytes | None:
        """Return the JPEG bytes of tile (z, x, y) if already encoded, else None (no decoding: cheap enough for an event loop)."""
        return self._cache.get((self._marker, z, x, y))

    def forget(self) -> int:
        """Drop this tiler's tiles from its cache (a shared one keeps the others'); return how many went."""
        return self._cache.drop(lambda key: key[0] is self._marker)

    def tile(self, z: int, x: int, y: int) -> bytes:
        """Return the JPEG bytes of tile (z, x, y); white outside the slide.

        Raises:
            ValueError: (z, x, y) is not a tile of the world square.
            SlideError: the slide's pixels cannot be decoded.
        """
        if not self.valid(z, x, y):
            raise ValueError(f"no tile ({z}, {x}, {y}) at max zoom {self.max_zoom}")
        key = (self._marker, z, x, y)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        level = self._dz.level_count - 1 - (self.max_zoom - z)
        if level < 0:
            data = self._blank
        else:
            cols, rows = self._dz.level_tiles[level]
            if x >= cols or y >= rows:
                data = self._blank
            else:
                try:
                    lock = self.slide._lock
                    if lock is not None:
                        with lock:
                            image = self._dz.get_tile(level, (x, y))
                    else:
                        image = self._dz.get_tile(level, (x, y))
                except openslide.OpenSlideError as exc:
                    raise SlideError(f"cannot decode tile ({z}, {x}, {y}) of {self.slide.name}: {exc}") from None
                if image.size != (TILE, TILE):  # an edge tile: pad with white
                    full = Image.new("RGB", (TILE, TILE), WHITE)
                    full.paste(image, (0, 0))
                    image = full
                data = self._encode(image)
        self._cache.put(key, data)
        return data


def overlay_tile(
    grid: ProbabilityGrid,
    dimensions: tuple[int, int],
    z: int,
    x: int,
    y: int,
    *,
    colormap: str = "inferno",
    cut: float | None = None,
    outline: float | None = None,
    fade: bool = False,
) -> bytes:
    """Return the PNG bytes (RGBA) of the probability overlay for tile (z, x, y).

    Cells with a prediction are opaque (the viewer sets the layer's opacity); with ``cut``
    the cells below it are transparent; ``outline`` draws the border of cells >= it.
    """
    x0, y0, scale = tile_bounds(dimensions, z, x, y)
    rgba = render_overlay(grid, (TILE, TILE), origin=(x0, y0), scale=scale, colormap=colormap, opacity=1.0, cut=cut, outline=outline, fade=fade)
    return png_bytes(rgba)


def blank_overlay_png() -> bytes:
    """Return a fully transparent 256 x 256 PNG."""
    return png_bytes(np.zeros((TILE, TILE, 4), dtype=np.uint8))


def to_lonlat(x, y, dimensions: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Return (longitude, latitude) in degrees of level-0 points on the slide's world square.

    Web Mercator: the square's left edge is longitude -180, its top latitude ~85.05.
    """
    side = world_side(dimensions)
    u = np.asarray(x, dtype=np.float64) / side
    v = np.asarray(y, dtype=np.float64) / side
    return u * 360.0 - 180.0, np.degrees(np.arctan(np.sinh(np.pi * (1.0 - 2.0 * v))))


def from_lonlat(lon, lat, dimensions: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Return level-0 (x, y) of map points (inverse of ``to_lonlat``)."""
    side = world_side(dimensions)
    u = (np.asarray(lon, dtype=np.float64) + 180.0) / 360.0
    v = (1.0 - np.log(np.tan(np.radians(np.asarray(lat, dtype=np.float64))) + 1.0 / np.cos(np.radians(np.asarray(lat, dtype=np.float64)))) / np.pi) / 2.0
    return u * side, v * side
