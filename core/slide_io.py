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

import errno
import os
import re
import threading
import warnings
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


#: A thumbnail's source level larger than this (px) is read piece by piece, not whole (RGBA: 256 MB).
THUMBNAIL_DIRECT_PIXELS = 64_000_000
#: Largest level (px) read to make a thumbnail (about a minute of decoding); larger ones are refused.
THUMBNAIL_MAX_PIXELS = 2_000_000_000
_THUMBNAIL_PIECE = 4096

# PIL modes of more than 8 bits per sample: 16-bit grey (PNG, TIFF) and 32-bit integer / float.
_WIDE_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


class UnsupportedImageError(ValueError):
    """A plain image whose pixels cannot be shown as 8-bit RGB (32-bit float or integer data)."""


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


def image_rgb(image: Image.Image) -> np.ndarray:
    """Return a decoded PIL image of any mode as H x W x 3 uint8 RGB, transparency composited on white.

    16-bit grey images (PIL modes ``I;16*``, and ``I`` holding values up to 65535, which is
    how PIL opens a 16-bit PNG) are scaled to 8 bits (value / 257), not clipped: PIL's own
    ``convert`` would turn every value above 255 white. 16-bit RGB(A) files are already
    reduced to 8 bits by PIL when they are opened.

    Raises:
        UnsupportedImageError: 32-bit float data, or integer data beyond 16 bits: there is no
            one right way to show them as colours.
    """
    if image.mode in _WIDE_MODES:
        if image.mode == "F":
            raise UnsupportedImageError(
                "it holds 32-bit floating-point pixels, which have no standard colour scale; save it as 8- or 16-bit RGB"
            )
        values = np.asarray(image)
        if values.size and (int(values.min()) < 0 or int(values.max()) > 65535):
            raise UnsupportedImageError(
                f"it holds 32-bit integer pixels (values {int(values.min())}..{int(values.max())}); only 8- and 16-bit images are read"
            )
        grey = ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA")
    return rgba_to_rgb(image)


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Return a plain image file (PNG, JPEG, TIFF, ...) as H x W x 3 uint8 RGB (see :func:`image_rgb`).

    Images of more than ``PIL.Image.MAX_IMAGE_PIXELS`` (~89 Mpx, ~270 MB decoded) are refused
    from their header, before anything is decoded: a few bytes can claim gigapixels.

    Raises:
        SlideError: not found, not an image, damaged, too large, or of unsupported pixel data.
    """
    p = Path(path)
    if not p.is_file():
        if p.is_symlink() and not p.exists():
            raise SlideError(_link_problem(p, "an image"))
        raise SlideError(f"image '{p}' not found" if not p.exists() else f"image '{p}' is not a file (a folder or device)")
    try:
        with warnings.catch_warnings():
            # PIL warns above MAX_IMAGE_PIXELS (a multi-line warning on the CLI's stderr); refused below instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(p)
        with im:
            width, height = im.size
            limit = Image.MAX_IMAGE_PIXELS
            if limit and width * height > limit:
                raise SlideError(
                    f"cannot read image '{p}': it is {width} x {height} px, more than the {limit:,} px read as one "
                    "image; crop it, or open it as a slide (a tiled pyramidal TIFF)"
                )
            im.load()
            return image_rgb(im)
    except UnsupportedImageError as exc:
        raise SlideError(f"cannot read image '{p}': {exc}") from None
    except UnidentifiedImageError:
        raise SlideError(f"cannot read image '{p}': not an image file PIL can decode (PNG, JPEG, TIFF, ...)") from None
    except Image.DecompressionBombError as exc:  # PIL's own check, at twice MAX_IMAGE_PIXELS, while opening
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(claimed.group(1)):,} px" if claimed else "gigapixels"
        raise SlideError(
            f"cannot read image '{p}': its header claims {size}, more than the {Image.MAX_IMAGE_PIXELS:,} px read as one "
            "image (a decompression bomb?); crop it, or open it as a slide (a tiled pyramidal TIFF)"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise SlideError(f"cannot read image '{p}': the file is damaged or truncated ({exc})") from None


def _starts_like_tiff(path: Path) -> bool:
    """Return True when the file begins with a TIFF or BigTIFF signature (so "damaged" says more than "unknown format")."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return head in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _link_problem(path: Path, what: str = "a slide") -> str:
    """Return why the symbolic link ``path`` leads nowhere: a loop, or a missing target."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path} is a symbolic link loop (it leads back to itself), not {what}"
    return f"{path} is a broken symbolic link (its target {os.readlink(path)} does not exist), not {what}"


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
            if self.path.is_symlink():
                raise SlideError(_link_problem(self.path))
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
            # Decode a plain image up front, so a damaged one fails here and not mid-analysis. Up to twice
            # MAX_IMAGE_PIXELS (~179 Mpx, ~540 MB) is read; PIL's warning about it would only clutter stderr.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(self.path)
                image.load()
            if image.mode in _WIDE_MODES:  # 16-bit grey: ImageSlide's RGBA conversion would clip it to white
                image = Image.fromarray(image_rgb(image), "RGB")
            return openslide.ImageSlide(image)
        except openslide.OpenSlideUnsupportedFormatError:
            raise SlideError(f"{self.path.name} is not a slide format OpenSlide can read ({SUPPORTED_HINT})") from None
        except openslide.OpenSlideError as exc:
            raise SlideError(f"cannot open {self.path.name}: unsupported or corrupt slide ({exc})") from None
        except UnidentifiedImageError:
            if _starts_like_tiff(self.path):
                raise SlideError(
                    f"{self.path.name} starts like a TIFF but neither OpenSlide nor PIL can read it: it is damaged or truncated"
                ) from None
            raise SlideError(f"{self.path.name} is neither a slide nor an image OpenSlide can read ({SUPPORTED_HINT})") from None
        except UnsupportedImageError as exc:
            raise SlideError(f"cannot open {self.path.name}: {exc}") from None
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
        """Return an RGB thumbnail whose longer side is at most ``max_size`` pixels.

        OpenSlide reads the whole level it shrinks, which for a single-level slide is the
        full-resolution image (a 100000 x 100000 px TIFF: 40 GB). A level of more than
        :data:`THUMBNAIL_DIRECT_PIXELS` is therefore read piece by piece (4096 px squares,
        ~64 MB each, each shrunk at once), and one of more than :data:`THUMBNAIL_MAX_PIXELS`
        is refused: reading it would take minutes for a picture; a pyramid makes it instant.

        Raises:
            SlideError: the slide cannot be decoded, or it has no level small enough to read.
        """
        osr = self._live()
        downsample = max(self.dimensions[0] / max_size, self.dimensions[1] / max_size, 1.0)
        level = self.best_level_for_downsample(downsample)
        width, height = self.level_dimensions[level]
        if width * height > THUMBNAIL_DIRECT_PIXELS:
            return self._thumbnail_by_pieces(level, max_size)
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

    def _thumbnail_by_pieces(self, level: int, max_size: int) -> np.ndarray:
        """Return the thumbnail of ``level`` read as 4096 px squares, each shrunk into place (bounded memory)."""
        width, height = self.level_dimensions[level]
        if width * height > THUMBNAIL_MAX_PIXELS:
            raise SlideError(
                f"{self.name} has no level small enough for a low-resolution view (tissue mask, thumbnail): its smallest level is "
                f"{width} x {height} px ({width * height / 1e6:,.0f} Mpx), and at most {THUMBNAIL_MAX_PIXELS / 1e6:,.0f} Mpx "
                "are read to make one; save it as a tiled pyramidal TIFF "
                "(e.g. vips tiffsave IN OUT.tiff --tile --pyramid --compression jpeg)"
            )
        scale = min(max_size / width, max_size / height, 1.0)
        out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))
        out = np.empty((out_h, out_w, 3), dtype=np.uint8)
        step = _THUMBNAIL_PIECE
        downsample = self.level_downsamples[level]
        for y in range(0, height, step):
            y0, y1 = round(y * out_h / height), round(min(y + step, height) * out_h / height)
            for x in range(0, width, step):
                x0, x1 = round(x * out_w / width), round(min(x + step, width) * out_w / width)
                if x1 <= x0 or y1 <= y0:
                    continue
                piece = self.read_region(
                    (round(x * downsample), round(y * downsample)), level, (min(step, width - x), min(step, height - y))
                )
                out[y0:y1, x0:x1] = np.asarray(Image.fromarray(piece).resize((x1 - x0, y1 - y0), Image.Resampling.BOX))
        return out

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


def forget_under(folder: str | os.PathLike) -> int:
    """Forget the cached handles of slides inside ``folder``; return how many.

    For a folder about to be removed (a closed session's uploads): a cached handle would keep
    the deleted file open (its disk space) and OpenSlide's tile cache in memory. The handles
    close once unreferenced (never here: a reader may still hold one).
    """
    root = Path(folder).resolve()
    with _cache_lock:
        gone = [key for key in _cache if Path(key[0]).is_relative_to(root)]
        for key in gone:
            del _cache[key]
    return len(gone)


def slide_info(path: str | os.PathLike) -> SlideInfo:
    """Return the info of the slide at ``path``."""
    return open_slide(path).info
