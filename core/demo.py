"""The synthetic demo cohort: H&E-like pyramidal TIFF slides, tumor annotations, a cohort table.

Every file written here is synthetic and says so (TIFF ImageDescription, GeoJSON
properties, the slide names start with ``demo_``). The slides imitate haematoxylin and eosin
staining by Beer-Lambert mixing of two stains: pink stroma (eosin) with small elongated
nuclei, purple nuclei (haematoxylin); tumor regions hold larger, denser, darker, irregular
nuclei; some slides also hold dense clusters of small round dark nuclei (lymphocyte-like
mimics, not tumor). Tissue has an irregular outline on a white background.

A slide is rendered in horizontal strips, each a deterministic function of the slide's seed
and the global pixel coordinates, so memory stays bounded (a 50,000 px slide renders in
strips of 1024 rows) and the result does not depend on the strip size. The pyramid is
written with tifffile, one page per level, ``subfiletype=1`` on reduced levels, 256 px
JPEG tiles: the layout OpenSlide opens as ``generic-tiff``.
"""

from __future__ import annotations

import csv
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import shapely
import tifffile
from PIL import Image, ImageDraw
from scipy import ndimage
from shapely.geometry import Polygon

from core.annotations import write_asap_xml, write_geojson
from core.fileio import atomic_write

log = logging.getLogger(__name__)

DEMO_MPP = 0.5  # microns per level-0 pixel (a 20x scan)
TILE = 256
STRIP = 1024  # rows rendered at once; a multiple of TILE
MARGIN = 24  # rows rendered beyond a strip so nuclei that cross its edge are whole
FIELD_SCALE = 16  # level-0 pixels per cell of the low-resolution tissue field
TEXTURE_SCALE = 8  # level-0 pixels per cell of the stroma texture field

SYNTHETIC_NOTE = "Pathology Explorer synthetic demo slide: generated, not real tissue"

# Stain optical-density vectors (R, G, B); haematoxylin after Ruifrok & Johnston, eosin
# adjusted so that stroma renders pink rather than magenta.
OD_HAEMATOXYLIN = np.array([0.65, 0.70, 0.29], dtype=np.float32)
OD_EOSIN = np.array([0.05, 0.90, 0.35], dtype=np.float32)
OD_GLASS = 0.03

# Nuclei per level-0 square pixel.
DENSITY_STROMA = 1 / 650
DENSITY_TUMOR = 1 / 240
DENSITY_LYMPH = 1 / 110
DENSITY_MAX = DENSITY_LYMPH


@dataclass(frozen=True)
class SlidePlan:
    """Everything random about one slide, drawn up front from its seed."""

    name: str
    label: str  # "tumor" | "normal"
    split: str  # "train" | "val" | "test"
    width: int
    height: int
    seed: tuple[int, int]
    tumors: tuple[Polygon, ...]
    mimics: tuple[Polygon, ...]


# -- planning -----------------------------------------------------------------------------
def _blob(rng: np.random.Generator, cx: float, cy: float, radius: float, points: int = 48) -> Polygon:
    """Return an irregular star-shaped polygon (level-0 px) around (cx, cy)."""
    theta = np.linspace(0, 2 * np.pi, points, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 6):
        r += rng.uniform(0.0, 0.16) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r *= radius
    stretch = rng.uniform(0.7, 1.0)
    angle = rng.uniform(0, np.pi)
    px, py = r * np.cos(theta), r * np.sin(theta) * stretch
    xs = cx + px * np.cos(angle) - py * np.sin(angle)
    ys = cy + px * np.sin(angle) + py * np.cos(angle)
    return Polygon(np.round(np.stack([xs, ys], axis=1), 1))


def _tissue_field(seed: tuple[int, int], width: int, height: int) -> np.ndarray:
    """Return the low-resolution tissue field (> 0 is tissue), one cell per FIELD_SCALE px."""
    rng = np.random.default_rng([*seed, 1])
    rows, cols = height // FIELD_SCALE + 4, width // FIELD_SCALE + 4
    noise = ndimage.gaussian_filter(rng.standard_normal((rows, cols)).astype(np.float32), sigma=max(rows, cols) / 24)
    noise /= np.abs(noise).max() + 1e-6
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cx, cy = cols * rng.uniform(0.42, 0.58), rows * rng.uniform(0.42, 0.58)
    ax, ay = cols * rng.uniform(0.36, 0.44), rows * rng.uniform(0.34, 0.42)
    envelope = 1 - ((xx - cx) / ax) ** 2 - ((yy - cy) / ay) ** 2
    return (envelope + 0.55 * noise).astype(np.float32)


def _texture_field(seed: tuple[int, int], width: int, height: int) -> np.ndarray:
    """Return the low-resolution stroma texture (eosin density multiplier around 1)."""
    rng = np.random.default_rng([*seed, 2])
    rows, cols = height // TEXTURE_SCALE + 8, width // TEXTURE_SCALE + 8
    streaks = ndimage.gaussian_filter(rng.standard_normal((rows, cols)).astype(np.float32), sigma=(1.0, 4.0))
    patches = ndimage.gaussian_filter(rng.standard_normal((rows, cols)).astype(np.float32), sigma=12)
    streaks /= streaks.std() + 1e-6
    patches /= patches.std() + 1e-6
    return (1.0 + 0.18 * streaks + 0.12 * patches).astype(np.float32)


def _place(rng, field: np.ndarray, radius: float, taken: list[tuple[float, float, float]], tries: int = 200):
    """Return a level-0 centre inside tissue, at least ``radius`` from the tissue edge and
    clear of ``taken`` discs, or None."""
    inside = ndimage.distance_transform_edt(field > 0) * FIELD_SCALE
    rows, cols = np.nonzero(inside > radius * 0.9)
    if rows.size == 0:
        return None
    for _ in range(tries):
        i = rng.integers(rows.size)
        cx = (cols[i] + rng.uniform()) * FIELD_SCALE
        cy = (rows[i] + rng.uniform()) * FIELD_SCALE
        if all((cx - x) ** 2 + (cy - y) ** 2 > (radius + r + 150) ** 2 for x, y, r in taken):
            return cx, cy
    return None


def plan_slide(name: str, label: str, split: str, size: int, seed: tuple[int, int], *, height: int | None = None) -> SlidePlan:
    """Return the random layout of one demo slide (size = level-0 width in px; height random
    at 68-80% of it unless given)."""
    rng = np.random.default_rng([*seed, 0])
    width = int(size) // TILE * TILE
    drawn = int(round(size * rng.uniform(0.68, 0.8)))
    height = int(height or drawn) // TILE * TILE
    field = _tissue_field(seed, width, height)
    scale = size / 8192  # tumor sizes follow the slide size
    taken: list[tuple[float, float, float]] = []
    tumors: list[Polygon] = []
    if label == "tumor":
        radii = [rng.uniform(700, 1300) * scale]
        radii += list(rng.uniform(180, 520, size=rng.integers(1, 4)) * scale)
        if rng.uniform() < 0.5:
            radii.append(rng.uniform(50, 100))  # an isolated-tumor-cell-sized focus
        for radius in radii:
            centre = _place(rng, field, radius, taken)
            if centre is not None:
                taken.append((*centre, radius))
                tumors.append(_blob(rng, *centre, radius))
    mimics = []
    for _ in range(rng.integers(0, 3)):
        radius = rng.uniform(90, 220) * max(scale, 0.5)
        centre = _place(rng, field, radius, taken)
        if centre is not None:
            taken.append((*centre, radius))
            mimics.append(_blob(rng, *centre, radius, points=24))
    return SlidePlan(name, label, split, width, height, seed, tuple(tumors), tuple(mimics))


# -- rendering ----------------------------------------------------------------------------
def _nucleus_sprites(rng: np.random.Generator, kind: str, count: int = 16) -> list[np.ndarray]:
    """Return haematoxylin-density sprites (float32, odd square) for one kind of nucleus."""
    sprites = []
    for _ in range(count):
        if kind == "stroma":
            a, b, irregular, strength = rng.uniform(2.2, 3.4), rng.uniform(5.0, 9.0), 0.05, rng.uniform(0.75, 1.0)
        elif kind == "tumor":
            a = rng.uniform(6.5, 11.0)
            b, irregular, strength = a * rng.uniform(0.8, 1.25), 0.12, rng.uniform(1.25, 1.7)
        else:  # lymphocyte-like
            a = rng.uniform(3.0, 4.2)
            b, irregular, strength = a * rng.uniform(0.9, 1.1), 0.04, rng.uniform(1.6, 1.95)
        half = int(np.ceil(max(a, b) * (1 + irregular) + 2))
        yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        u = xx * np.cos(angle) + yy * np.sin(angle)
        v = -xx * np.sin(angle) + yy * np.cos(angle)
        theta = np.arctan2(v, u)
        wobble = 1 + irregular * (np.sin(2 * theta + rng.uniform(0, 6)) + 0.5 * np.sin(3 * theta + rng.uniform(0, 6)))
        d = np.sqrt((u / a) ** 2 + (v / b) ** 2) / wobble
        edge = np.clip((1.0 - d) * max(a, b) / 1.5, 0, 1)  # ~1.5 px soft edge
        chromatin = 0.8 + 0.2 * rng.uniform(size=edge.shape)
        sprites.append((edge * chromatin * strength).astype(np.float32))
    return sprites


def _upsample(field: np.ndarray, scale: int, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """Return the bilinear upsampling of a low-resolution field over a level-0 window.

    Cell (r, c) of ``field`` covers level-0 pixels [c * scale, (c + 1) * scale) x [r * scale, ...);
    rows of the window above the slide (y < 0) repeat the first row.
    """
    skip = max(0, -y0)
    top = y0 + skip
    image = Image.fromarray(np.ascontiguousarray(field, dtype=np.float32))
    # Frame change: level-0 pixels -> field cells (PIL's box is in source-pixel units).
    box = (x0 / scale, top / scale, (x0 + width) / scale, (top + height - skip) / scale)
    values = np.array(image.resize((width, height - skip), Image.Resampling.BILINEAR, box=box), dtype=np.float32)
    if skip:
        values = np.concatenate([np.repeat(values[:1], skip, axis=0), values], axis=0)
    return values


def _rasterize(polygons: tuple[Polygon, ...], x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """Return a bool mask (height, width) of the polygons over a level-0 window."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    window = shapely.box(x0, y0, x0 + width, y0 + height)
    for polygon in polygons:
        if polygon.intersects(window):
            # Frame change: level-0 -> window pixels; PIL fills pixel centres inside the outline.
            draw.polygon([(x - x0 - 0.5, y - y0 - 0.5) for x, y in polygon.exterior.coords], fill=1)
    return np.asarray(canvas, dtype=bool)


class SlideRenderer:
    """Renders the RGB pixels of a planned slide, strip by strip."""

    def __init__(self, plan: SlidePlan):
        self.plan = plan
        self.tissue_field = _tissue_field(plan.seed, plan.width, plan.height)
        self.texture_field = _texture_field(plan.seed, plan.width, plan.height)
        rng = np.random.default_rng([*plan.seed, 3])
        self.sprites = {kind: _nucleus_sprites(rng, kind) for kind in ("stroma", "tumor", "lymph")}

    def _band_nuclei(self, band: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return candidate nuclei of a band of STRIP rows: x, y (level-0), acceptance u, variant."""
        rng = np.random.default_rng([*self.plan.seed, 100 + band])
        count = rng.poisson(DENSITY_MAX * STRIP * self.plan.width)
        x = rng.integers(0, self.plan.width, size=count)
        y = band * STRIP + rng.integers(0, STRIP, size=count)
        return x, y, rng.uniform(size=count), rng.integers(0, 1 << 30, size=count)

    def render_strip(self, row0: int, rows: int) -> np.ndarray:
        """Return RGB uint8 (rows, width, 3) of level-0 rows [row0, row0 + rows).

        The pixels depend only on the plan and the global row, never on how the slide is
        cut into strips (strips start on multiples of TILE rows).
        """
        plan = self.plan
        top = row0 - MARGIN
        height = rows + 2 * MARGIN
        width = plan.width
        tumor = _rasterize(plan.tumors, 0, top, width, height)
        mimic = _rasterize(plan.mimics, 0, top, width, height)
        tissue = (_upsample(self.tissue_field, FIELD_SCALE, 0, top, width, height) > 0) | tumor | mimic
        texture = _upsample(self.texture_field, TEXTURE_SCALE, 0, top, width, height)

        haem = np.zeros((height, width), dtype=np.float32)
        first_band, last_band = max(top, 0) // STRIP, min(top + height, plan.height) // STRIP
        for band in range(max(first_band - 1, 0), last_band + 2):
            if band * STRIP >= plan.height:
                break
            x, y, u, variant = self._band_nuclei(band)
            inside = (y >= top) & (y < top + height)
            x, y, u, variant = x[inside], y[inside], u[inside], variant[inside]
            r = y - top
            kind = np.full(x.shape, "", dtype="<U6")
            kind[tissue[r, x] & (u < DENSITY_STROMA / DENSITY_MAX)] = "stroma"
            kind[tumor[r, x] & (u < DENSITY_TUMOR / DENSITY_MAX)] = "tumor"
            kind[mimic[r, x] & (u < DENSITY_LYMPH / DENSITY_MAX)] = "lymph"
            for name, sprites in self.sprites.items():
                chosen = kind == name
                for index, sprite in enumerate(sprites):
                    pick = chosen & (variant % len(sprites) == index)
                    if pick.any():
                        self._stamp(haem, sprite, r[pick], x[pick])

        # Only the strip itself is coloured; the margin served the nuclei that cross its edges.
        keep = slice(MARGIN, MARGIN + rows)
        haem, tissue, tumor, eosin = haem[keep], tissue[keep], tumor[keep], texture[keep]
        tissue_density = tissue.astype(np.float32)
        eosin *= 0.55
        eosin *= tissue_density
        eosin[tumor] *= 0.85  # tumor stroma is scant: less eosin, more nuclei
        haem += 0.06 * tissue_density
        haem[tumor] += 0.10
        # Grain is drawn per block of TILE rows, so strips of any (tile-aligned) size agree.
        blocks = range(row0 // TILE, -(-(row0 + rows) // TILE))
        base = np.concatenate(
            [np.random.default_rng([*plan.seed, 7, b]).standard_normal((TILE, width), dtype=np.float32) for b in blocks]
        )[row0 - blocks[0] * TILE :][:rows]
        base *= 0.025
        base += OD_GLASS
        rgb = np.empty((rows, width, 3), dtype=np.uint8)
        optical_density = np.empty_like(haem)
        for channel in range(3):
            # Beer-Lambert: intensity = 255 * exp(-(sum of stain densities x stain vectors)).
            np.multiply(haem, OD_HAEMATOXYLIN[channel], out=optical_density)
            optical_density += eosin * OD_EOSIN[channel]
            optical_density += base
            np.maximum(optical_density, 0, out=optical_density)
            optical_density *= -1
            np.exp(optical_density, out=optical_density)
            optical_density *= 255
            rgb[:, :, channel] = optical_density
        return rgb

    @staticmethod
    def _stamp(canvas: np.ndarray, sprite: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
        """Draw ``sprite`` centred at each (row, col), keeping the max density where nuclei overlap."""
        half = sprite.shape[0] // 2
        dy, dx = np.mgrid[-half : half + 1, -half : half + 1]
        rr = rows[:, None, None] + dy[None]
        cc = cols[:, None, None] + dx[None]
        ok = (rr >= 0) & (rr < canvas.shape[0]) & (cc >= 0) & (cc < canvas.shape[1])
        values = np.broadcast_to(sprite, rr.shape)[ok]
        rr, cc = rr[ok], cc[ok]
        canvas[rr, cc] = np.maximum(canvas[rr, cc], values)


def _downsample2(image: np.ndarray) -> np.ndarray:
    """Return an RGB image halved by 2x2 area averaging (odd last row/column dropped)."""
    rows, cols = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    total = image[0:rows:2, 0:cols:2].astype(np.uint16)
    total += image[1:rows:2, 0:cols:2]
    total += image[0:rows:2, 1:cols:2]
    total += image[1:rows:2, 1:cols:2]
    total += 2
    total >>= 2
    return total.astype(np.uint8)


_worker_renderer: SlideRenderer | None = None


def _init_strip_worker(plan: SlidePlan) -> None:
    global _worker_renderer
    _worker_renderer = SlideRenderer(plan)


def _render_strip_job(row0: int) -> np.ndarray:
    rows = min(STRIP, _worker_renderer.plan.height - row0)
    return _worker_renderer.render_strip(row0, rows)


def write_slide(plan: SlidePlan, path: Path, *, quality: int = 85, workers: int = 1) -> None:
    """Render a planned slide and write it as a pyramidal tiled JPEG TIFF at ``path``.

    Level 0 is streamed strip by strip; level 1 is kept in memory (a quarter of level 0)
    and the smaller levels are derived from it.
    """
    renderer = SlideRenderer(plan) if workers <= 1 else None
    width, height = plan.width, plan.height
    level1 = np.empty((height // 2, width // 2, 3), dtype=np.uint8)

    def level0_tiles() -> Iterator[np.ndarray]:
        starts = range(0, height, STRIP)
        if workers > 1:  # strips rendered in parallel, written in order (a slide of 50,000 px and more)
            pool = multiprocessing.get_context("spawn").Pool(workers, _init_strip_worker, (plan,))
            strips = pool.imap(_render_strip_job, starts)
        else:
            pool, strips = None, (renderer.render_strip(row0, min(STRIP, height - row0)) for row0 in starts)
        for row0, strip in zip(starts, strips):
            rows = strip.shape[0]
            level1[row0 // 2 : (row0 + rows) // 2] = _downsample2(strip)[: (rows // 2)]
            for tile_row in range(0, rows, TILE):
                for col in range(0, width, TILE):
                    yield np.ascontiguousarray(strip[tile_row : tile_row + TILE, col : col + TILE])
        if pool is not None:
            pool.close()
            pool.join()

    description = f"{SYNTHETIC_NOTE}; slide={plan.name}; label={plan.label}; seed={list(plan.seed)}; mpp={DEMO_MPP}"
    common = dict(
        photometric="rgb",
        tile=(TILE, TILE),
        compression="jpeg",
        compressionargs={"level": quality},
        resolutionunit="CENTIMETER",
        metadata=None,
    )
    # parents=False: the folder is the caller's (make_demo_cohort creates slides/), as before.
    with atomic_write(path, parents=False) as handle, tifffile.TiffWriter(handle, bigtiff=width * height > 2**31) as tif:
        tif.write(
            level0_tiles(),
            shape=(height, width, 3),
            dtype=np.uint8,
            resolution=(1e4 / DEMO_MPP, 1e4 / DEMO_MPP),
            description=description,
            software="Pathology Explorer demo-data",
            **common,
        )
        level, image = 1, level1
        while True:
            mpp = DEMO_MPP * 2**level
            tif.write(image, subfiletype=1, resolution=(1e4 / mpp, 1e4 / mpp), **common)
            if max(image.shape[:2]) <= 1024:
                break
            image, level = _downsample2(image), level + 1


# -- the cohort ---------------------------------------------------------------------------
def cohort_layout(n_slides: int, seed: int) -> list[tuple[str, str, str]]:
    """Return (name, label, split) for each slide: ~60% tumor; train/val/test ~ 50/20/30
    within each label, every split holding both labels when n_slides >= 6."""
    if n_slides < 2:
        raise ValueError("a demo cohort needs at least 2 slides (one tumor, one normal)")
    rng = np.random.default_rng([seed, 99])
    n_tumor = max(1, int(round(n_slides * 0.6)))
    n_normal = n_slides - n_tumor
    rows = []
    for label, count in (("tumor", n_tumor), ("normal", n_normal)):
        n_val = max(1, int(round(count * 0.2))) if count >= 3 else 0
        n_test = max(1, int(round(count * 0.3))) if count >= 3 else 0
        n_train = count - n_val - n_test
        rows += [(label, split) for split, k in (("train", n_train), ("val", n_val), ("test", n_test)) for _ in range(k)]
    order = rng.permutation(len(rows))
    return [(f"demo_{i + 1:03d}", *rows[j]) for i, j in enumerate(order)]


def _write_one(job: tuple[SlidePlan, str]) -> str:
    plan, out = job
    out_dir = Path(out)
    write_slide(plan, out_dir / "slides" / f"{plan.name}.tiff")
    props = {"synthetic": True, "source": SYNTHETIC_NOTE, "slide": plan.name, "label": plan.label}
    write_geojson(out_dir / "annotations" / f"{plan.name}.geojson", list(plan.tumors), properties=props)
    write_asap_xml(out_dir / "annotations" / f"{plan.name}.xml", list(plan.tumors))
    return plan.name


def make_demo_cohort(
    out: str | os.PathLike,
    *,
    n_slides: int = 20,
    seed: int = 0,
    size: int = 6144,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a synthetic cohort under ``out`` and return the path of its cohort.csv.

    Writes ``out/slides/<name>.tiff``, ``out/annotations/<name>.geojson`` and ``.xml``
    (tumor outlines in level-0 px; empty for normal slides) and ``out/cohort.csv``
    (``slide,label,split``). ``size`` is the level-0 width of each slide in pixels.
    Deterministic for a seed. ``progress(done, total)`` is called after each slide.
    """
    out = Path(out)
    if size < 1024:
        raise ValueError("demo slides need a size of at least 1024 px")
    (out / "slides").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    layout = cohort_layout(n_slides, seed)
    plans = [plan_slide(name, label, split, size, (seed, i)) for i, (name, label, split) in enumerate(layout)]
    jobs = [(plan, str(out)) for plan in plans]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    started = time.perf_counter()
    done = 0
    if progress:
        progress(0, len(jobs))
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_one, jobs):
                done += 1
                if progress:
                    progress(done, len(jobs))
    else:
        for job in jobs:
            _write_one(job)
            done += 1
            if progress:
                progress(done, len(jobs))
    cohort = out / "cohort.csv"
    with atomic_write(cohort, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide", "label", "split"])
        writer.writerows(layout)
    with atomic_write(out / "README.txt", "w") as handle:
        handle.write(
            f"{SYNTHETIC_NOTE}.\nSynthetic demo cohort of {n_slides} slides (seed {seed}, {size} px wide, "
            f"{DEMO_MPP} um/px), made by `python -m core demo-data`.\n"
        )
    log.info("demo cohort of %d slides written in %.1f s", n_slides, time.perf_counter() - started)
    return cohort
