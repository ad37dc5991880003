"""Whole-slide images through OpenSlide: levels, microns per pixel, regions and thumbnails.

Every format OpenSlide reads (Aperio SVS, generic tiled TIFF, Hamamatsu NDPI, MIRAX, DICOM,
...) opens here; a plain PNG or JPEG opens through OpenSlide's ``ImageSlide`` so a single
image can be explored too. Regions come back as H x W x 3 uint8 RGB, transparent pixels
composited on white. Coordinates are (x, y) in the level-0 frame unless a name says
otherwise; sizes are (width, height) in pixels of the level being read.

Handles are cached (``open_slide``) and may be shared between threads: OpenSlide itself is
thread-safe, and the one non-thread-safe backend (PIL behind ``ImageSlide``) is serialised
by a lock. A handle that hit a decoding error is dropped from the cache, because OpenSlide
refuses every later call on it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
from PIL import Image, UnidentifiedImageError

from core.errors import SlideError

Coord = tuple[int, int]
Size = tuple[int, int]

SUPPORTED_HINT = (
    "OpenSlide reads Aperio .svs/.tif, Hamamatsu .ndpi/.vms/.vmu, Leica .scn, MIRAX .mrxs, "
    "Philips .tiff, Sakura .svslide, Ventana .bif/.tif, Zeiss .czi, DICOM .dcm, generic tiled "
    "TIFF; plus plain PNG/JPEG images"
)


@dataclass(frozen=True)
class SlideInfo:
    """What a slide is: format, pyramid and scale. Dimensions are (width, height) in pixels."""

    path: str
    name: str
    vendor: str
    dimensions: Size
    level_count: int
    level_dimensions: tuple[Size, ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None
    objective_power: float | None
    associated_images: tuple[str, ...]

    def to_dict(self) -> dict:
        """Return the info as plain JSON-able data."""
        return {
            "path": self.path,
            "name": self.name,
            "vendor": self.vendor,
            "dimensions": list(self.dimensions),
            "level_count": self.level_count,
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": list(self.level_downsamples),
            "mpp": self.mpp,
            "objective_power": self.objective_power,
            "associated_images": list(self.associated_images),
        }


def _float_property(properties, key: str) -> float | None:
    value = properties.get(key)
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if np.isfinite(number) and number > 0 else None


def rgba_to_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """Return an H x W x 3 uint8 array, transparent pixels composited on white.

    OpenSlide's RGBA output is not premultiplied: rgb = rgb * a + 255 * (1 - a).
    """
    array = np.asarray(image)
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2).astype(np.uint8, copy=False)
    if array.shape[2] == 3:
        return np.ascontiguousarray(array, dtype=np.uint8)
    rgb, alpha = array[:, :, :3], array[:, :, 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.uint16)[:, :, None]
    blended = (rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return blended.astype(np.uint8)


class Slide:
    """An open whole-slide image; use ``open_slide`` to get a cached, shared handle."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.name = self.path.stem
        self._check_file()
        self._osr = self._open()
        self._is_image = isinstance(self._osr, openslide.ImageSlide)
        # PIL images (ImageSlide) are not safe for concurrent reads; OpenSlide handles are.
        self._lock = threading.Lock() if self._is_image else None
        self._broken: str | None = None
        self.info = self._read_info()

    # -- opening ---------------------------------------------------------------------------
    def _check_file(self) -> None:
        if not self.path.exists():
            raise SlideError(f"slide not found: {self.path}")
        if not self.path.is_file():
            raise SlideError(f"not a slide file (it is a folder or device): {self.path}")
        if self.path.stat().st_size == 0:
            raise SlideError(f"{self.path.name} is empty (0 bytes): not a slide")

    def _open(self):
        try:
            fmt = openslide.OpenSlide.detect_format(str(self.path))
        except openslide.OpenSlideError as exc:
            raise SlideError(f"cannot open {self.path.name}: {exc}") from None
        try:
            if fmt is not None:
                return openslide.OpenSlide(str(self.path))
            # Decode a plain image up front, so a damaged one fails here and not mid-analysis.
            image = Image.open(self.path)
            image.load()
            return openslide.ImageSlide(image)
        except openslide.OpenSlideUnsupportedFormatError:
            raise SlideError(f"{self.path.name} is not a slide format OpenSlide can read ({SUPPORTED_HINT})") from None
        except openslide.OpenSlideError as exc:
            raise SlideError(f"cannot open {self.path.name}: unsupported or corrupt slide ({exc})") from None
        except UnidentifiedImageError:
            raise SlideError(f"{self.path.name} is neither a slide nor an image OpenSlide can read ({SUPPORTED_HINT})") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise SlideError(f"cannot open {self.path.name}: the file is damaged or truncated ({exc})") from None
        except Image.DecompressionBombError:
            raise SlideError(
                f"{self.path.name} is a plain image too large to load whole; save it as a tiled pyramidal TIFF"
            ) from None

    def _read_info(self) -> SlideInfo:
        osr = self._osr
        props = osr.properties
        mpp_x = _float_property(props, openslide.PROPERTY_NAME_MPP_X)
        mpp_y = _float_property(props, openslide.PROPERTY_NAME_MPP_Y)
        mpp = (mpp_x + mpp_y) / 2 if mpp_x and mpp_y else (mpp_x or mpp_y)
        vendor = "image" if self._is_image else (props.get(openslide.PROPERTY_NAME_VENDOR) or "unknown")
        return SlideInfo(
            path=str(self.path),
            name=self.name,
            vendor=vendor,
            dimensions=tuple(osr.dimensions),
            level_count=osr.level_count,
            level_dimensions=tuple(tuple(d) for d in osr.level_dimensions),
            level_downsamples=tuple(float(d) for d in osr.level_downsamples),
            mpp=mpp,
            objective_power=_float_property(props, openslide.PROPERTY_NAME_OBJECTIVE_POWER),
            associated_images=tuple(sorted(osr.associated_images.keys())) if not self._is_image else (),
        )

    # -- shape -----------------------------------------------------------------------------
    @property
    def dimensions(self) -> Size:
        """(width, height) of level 0 in pixels."""
        return self.info.dimensions

    @property
    def level_count(self) -> int:
        return self.info.level_count

    @property
    def level_dimensions(self) -> tuple[Size, ...]:
        return self.info.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self.info.level_downsamples

    @property
    def mpp(self) -> float | None:
        """Microns per level-0 pixel, or None when the file does not say."""
        return self.info.mpp

    @property
    def vendor(self) -> str:
        return self.info.vendor

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._osr.properties)

    @property
    def openslide(self) -> openslide.AbstractSlide:
        """The underlying OpenSlide handle (for OpenSlide tools such as DeepZoomGenerator)."""
        return self._live()

    @property
    def is_closed(self) -> bool:
        return self._osr is None

    def best_level_for_downsample(self, downsample: float) -> int:
        """Return the level whose downsample is the largest not exceeding ``downsample``."""
        return int(self._live().get_best_level_for_downsample(downsample))

    def check_level(self, level: int) -> None:
        """Raise SlideError unless ``level`` exists in this slide."""
        if not 0 <= level < self.level_count:
            raise SlideError(f"{self.name} has levels 0..{self.level_count - 1}; level {level} does not exist")

    # -- pixels ----------------------------------------------------------------------------
    def _live(self):
        if self._osr is None:
            raise SlideError(f"slide {self.name} is closed")
        if self._broken:
            raise SlideError(f"slide {self.name} is unusable after an earlier read error: {self._broken}")
        return self._osr

    def read_region(self, location: Coord, level: int, size: Size) -> np.ndarray:
        """Return an RGB region of the slide.

        Args:
            location: (x, y) of the top-left pixel in the level-0 frame.
            level: pyramid level, 0 = full resolution.
            size: (width, height) in pixels of that level.

        Returns:
            uint8 array (height, width, 3); pixels outside the slide or transparent are white.

        Raises:
            SlideError: the level does not exist, the slide is closed, or its tiles cannot be decoded.
        """
        self.check_level(level)
        width, height = int(size[0]), int(size[1])
        if width <= 0 or height <= 0:
            raise SlideError(f"region size must be positive, got {width} x {height}")
        osr = self._live()
        try:
            if self._lock is not None:
                with self._lock:
                    region = osr.read_region((int(location[0]), int(location[1])), level, (width, height))
            else:
                region = osr.read_region((int(location[0]), int(location[1])), level, (width, height))
        except (openslide.OpenSlideError, OSError) as exc:
            self._broken = str(exc)
            _evict(self)
            raise SlideError(
                f"cannot decode {self.name} at level {level}, location {tuple(location)}: {exc} "
                "(the file is damaged or truncated)"
            ) from None
        return rgba_to_rgb(region)

    def read_level(self, level: int) -> np.ndarray:
        """Return a whole level as RGB (height, width, 3) uint8; only for small levels."""
        width, height = self.level_dimensions[level]
        if width * height > 64_000_000:
            raise SlideError(f"level {level} of {self.name} is {width} x {height} px: too large to read whole")
        return self.read_region((0, 0), level, (width, height))

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """Return an RGB thumbnail whose longer side is at most ``max_size`` pixels."""
        osr = self._live()
        try:
            if self._lock is not None:
                with self._lock:
                    image = osr.get_thumbnail((max_size, max_size))
            else:
                image = osr.get_thumbnail((max_size, max_size))
        except openslide.OpenSlideError as exc:
            self._broken = str(exc)
            _evict(self)
            raise SlideError(f"cannot decode {self.name} for a thumbnail: {exc} (the file is damaged)") from None
        return rgba_to_rgb(image.convert("RGBA") if image.mode not in ("RGB", "RGBA") else image)

    def associated_image(self, name: str) -> np.ndarray:
        """Return an associated image (label, macro, thumbnail, ...) as RGB uint8."""
        osr = self._live()
        if name not in self.info.associated_images:
            raise SlideError(f"{self.name} has no associated image {name!r}; it has {list(self.info.associated_images)}")
        try:
            return rgba_to_rgb(osr.associated_images[name])
        except openslide.OpenSlideError as exc:
            raise SlideError(f"cannot decode associated image {name!r} of {self.name}: {exc}") from None

    def close(self) -> None:
        """Release the OpenSlide handle; later reads raise SlideError."""
        if self._osr is not None:
            self._osr.close()
            self._osr = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Slide({self.name!r}, vendor={self.vendor!r}, dimensions={self.dimensions}, levels={self.level_count})"


# -- the shared handle cache -----------------------------------------------------------------
_CACHE_SIZE = 32
_cache: OrderedDict[tuple, Slide] = OrderedDict()
_cache_lock = threading.Lock()


def _cache_key(path: Path) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _evict(slide: Slide) -> None:
    with _cache_lock:
        for key, cached in list(_cache.items()):
            if cached is slide:
                del _cache[key]


def open_slide(path: str | os.PathLike) -> Slide:
    """Return a shared, cached handle on the slide at ``path`` (reopened if the file changed).

    Raises:
        SlideError: missing, empty, unsupported or corrupt file.
    """
    path = Path(path)
    if not path.is_file():
        Slide(path)  # raises the right "not found" / "not a file" error
    key = _cache_key(path)
    with _cache_lock:
        slide = _cache.get(key)
        if slide is not None and not slide.is_closed and not slide._broken:
            _cache.move_to_end(key)
            return slide
    slide = Slide(path)
    with _cache_lock:
        _cache[key] = slide
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            # Dropped handles are closed by garbage collection once no reader holds them.
            _cache.popitem(last=False)
    return slide


def clear_cache() -> None:
    """Forget every cached handle (they close once unreferenced)."""
    with _cache_lock:
        _cache.clear()


def slide_info(path: str | os.PathLike) -> SlideInfo:
    """Return the info of the slide at ``path``."""
    return open_slide(path).info
