"""The synthetic demo cohort: H&E-like pyramidal TIFF slides, tumor annotations, a cohort table.

Every file written here is synthetic and says so (TIFF ImageDescription, GeoJSON
properties, the slide names start with ``demo_``). Level 0 is 0.5 µm per pixel (a 20x scan).

What a slide holds (sizes in level-0 pixels, 2 px = 1 µm):

- **Tissue** with an irregular outline on glass: collagenous stroma (wavy eosin fibres,
  looser pale areas, spindle-shaped stromal nuclei), scattered lymphocytes (small, round,
  dense nuclei), fat lobules (empty adipocytes ~55 µm across with thin membranes).
- **Nuclei** drawn from per-slide sprite sets: irregular outlines (a few Fourier harmonics of
  the radius), chromatin texture (smoothed noise), size and shape by cell type. Tumor nuclei
  are larger and pleomorphic (7-14 µm, uneven outlines and darkness), vesicular with a dark
  membrane, coarse chromatin and one or two nucleoli, on scant purple cytoplasm; a slide's
  tumor is high or low grade (low: smaller, darker, less pleomorphic nuclei, a nucleolus in
  half of them, close to the hyperchromatic mimic) and of its own cellularity. Part of a
  slide's tumor (30-60% of its area, in patches ~0.2-0.4 mm across) is desmoplastic stroma:
  fibrous stroma with scattered tumor cells (4-12% of the cells of the sheet), inside the
  annotation as a pathologist draws it; the hard positives of the demo.
- **Tumors** (annotated): isolated tumor cell clusters (< 0.2 mm), micrometastases
  (0.2-2 mm) and macrometastases (about 2 mm, the largest a 3 mm wide slide holds). A
  tumor slide is "macro" (a large focus, maybe satellites), "micro" (one or two
  micrometastases) or "small" (its only tumor is ITC-sized or a small micrometastasis).
- **Mimics** (never annotated, on tumor and normal slides alike): dense lymphoid aggregates,
  hyperchromatic benign regions (crowded, dark, fairly regular nuclei, a reactive nucleolus in
  some), crushed cells (smeared, streaky haematoxylin).
- **Stain and artefacts**: per-slide H&E optical-density vectors (hue) and concentrations,
  as between labs; tissue folds (a band of doubled tissue), pen marks, out-of-focus patches,
  air bubbles (a dark refractile rim).

A slide is rendered in horizontal strips, each a deterministic function of the slide's seed
and the global pixel coordinates: every strip is drawn with ``MARGIN`` extra rows on both
sides (nuclei and blur that cross its edge are whole), so the pixels do not depend on the
strip size and there are no seams. The pyramid is written with tifffile, one page per level,
``subfiletype=1`` on reduced levels, 256 px JPEG tiles: the layout OpenSlide opens as
``generic-tiff``.
"""

from __future__ import annotations

import csv
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

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
MARGIN = 48  # rows rendered beyond a strip: nuclei (<= 22 px), blur (<= 14 px) and fibre waves that cross its edge are whole
FIELD_SCALE = 16  # level-0 pixels per cell of the low-resolution tissue / fat / region fields
TEXTURE_SCALE = 8  # level-0 pixels per cell of the stroma texture fields
FAT_CELL = 110  # level-0 pixels between adipocyte centres (55 µm)
TUMOR_CELL = 26  # level-0 pixels between tumor cell centres (13 µm): a cohesive sheet
FAT_PERIOD = 20  # adipocytes per period of the fat cells' jitter pattern (1.1 mm)
DESMOPLASIA_MIN_AREA = 200_000  # level-0 px² (0.05 mm², ~0.25 mm across): smaller tumors are all sheet
TUMOR_PERIOD = 48  # epithelial cells per period of their jitter pattern (0.62 mm; fill and look are not periodic)

SYNTHETIC_NOTE = "Pathology Explorer synthetic demo slide: generated, not real tissue"

# Stain optical-density vectors (R, G, B); haematoxylin after Ruifrok & Johnston, eosin
# adjusted so that stroma renders pink rather than magenta. Each slide perturbs both.
OD_HAEMATOXYLIN = np.array([0.65, 0.70, 0.29], dtype=np.float32)
OD_EOSIN = np.array([0.05, 0.90, 0.35], dtype=np.float32)
OD_GLASS = 0.03
PEN_INKS = {  # optical density per unit of ink (R, G, B)
    "green": (0.85, 0.25, 0.65),
    "blue": (0.95, 0.55, 0.10),
    "black": (0.90, 0.90, 0.85),
}

# Nuclei per level-0 square pixel, by kind (where the kind's region is).
DENSITY = {  # tumor nuclei sit on the tumor cell grid instead (TUMOR_CELL)
    "lymph_aggregate": 1 / 125,
    "crushed": 1 / 170,
    "stroma": 1 / 2000,
    "lymph": 1 / 3200,
    "fat": 1 / 30000,
}
DENSITY_MAX = 1 / 115  # candidates per px; every pixel's densities sum to less
# Sprite sets: which sprites each kind of nucleus draws from.
SPRITE_KIND = {
    "tumor": "tumor", "lymph_aggregate": "lymph", "lymph": "lymph", "hyperchromatic": "hyperchromatic",
    "crushed": "crushed", "stroma": "stroma", "fat": "stroma",
}
MIMIC_KINDS = ("lymphoid", "hyperchromatic", "crushed")


@dataclass(frozen=True)
class Stain:
    """One slide's staining: unit OD vectors and concentration factors (as between labs)."""

    haematoxylin: tuple[float, float, float]
    eosin: tuple[float, float, float]
    h_scale: float
    e_scale: float
    glass: float


@dataclass(frozen=True)
class Artefact:
    """A slide artefact in level-0 px: ``fold`` and ``pen`` follow ``points`` (a polyline) with
    width ``size``; ``blur`` and ``bubble`` are discs of radius ``size`` at ``points[0]``.
    ``value``: fold darkening factor, pen ink concentration, blur sigma in px; ``ink``: pen colour."""

    kind: str
    points: tuple[tuple[float, float], ...]
    size: float
    value: float
    ink: str = ""


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
    tumor_sizes: tuple[str, ...] = ()  # "itc" | "micro" | "macro", one per tumor
    mimic_kinds: tuple[str, ...] = ()  # one of MIMIC_KINDS per mimic
    scenario: str = "normal"  # "macro" | "micro" | "small" for tumor slides
    stain: Stain | None = None
    artefacts: tuple[Artefact, ...] = ()
    grade: str = "high"  # "high" | "low": the tumor cells' look (low grade resembles the hyperchromatic mimic)
    cellularity: float = 0.88  # share of tumor (and hyperchromatic) cells whose nucleus is in the section
    stroma_share: float = 0.0  # share of the tumor area that is desmoplastic stroma with scattered tumor cells
    stroma_fill: float = 0.18  # share of the sheet's filled cells that remain in that stroma


# -- planning -----------------------------------------------------------------------------
def _blob(rng: np.random.Generator, cx: float, cy: float, radius: float, points: int = 48, stretch: tuple[float, float] = (0.7, 1.0)) -> Polygon:
    """Return an irregular star-shaped polygon (level-0 px) around (cx, cy)."""
    theta = np.linspace(0, 2 * np.pi, points, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 7):
        r += rng.uniform(0.0, 0.16 / (k - 1) ** 0.5) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r *= radius
    squeeze = rng.uniform(*stretch)
    angle = rng.uniform(0, np.pi)
    px, py = r * np.cos(theta), r * np.sin(theta) * squeeze
    xs = cx + px * np.cos(angle) - py * np.sin(angle)
    ys = cy + px * np.sin(angle) + py * np.cos(angle)
    return Polygon(np.round(np.stack([xs, ys], axis=1), 1))


def _noise_field(rng: np.random.Generator, rows: int, cols: int, sigma) -> np.ndarray:
    """Return smoothed Gaussian noise normalised to unit standard deviation (float32)."""
    field = ndimage.gaussian_filter(rng.standard_normal((rows, cols)).astype(np.float32), sigma=sigma)
    return (field / (field.std() + 1e-6)).astype(np.float32)


def _tissue_field(seed: tuple[int, int], width: int, height: int) -> np.ndarray:
    """Return the low-resolution tissue field (> 0 is tissue), one cell per FIELD_SCALE px."""
    rng = np.random.default_rng([*seed, 1])
    rows, cols = height // FIELD_SCALE + 8, width // FIELD_SCALE + 8
    noise = ndimage.gaussian_filter(rng.standard_normal((rows, cols)).astype(np.float32), sigma=max(rows, cols) / 24)
    noise /= np.abs(noise).max() + 1e-6
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cx, cy = cols * rng.uniform(0.42, 0.58), rows * rng.uniform(0.42, 0.58)
    ax, ay = cols * rng.uniform(0.38, 0.45), rows * rng.uniform(0.36, 0.43)
    envelope = 1 - ((xx - cx) / ax) ** 2 - ((yy - cy) / ay) ** 2
    return (envelope + 0.55 * noise).astype(np.float32)


def _fat_field(seed: tuple[int, int], width: int, height: int) -> np.ndarray:
    """Return the low-resolution fat field (> 0 is fat where there is tissue)."""
    rng = np.random.default_rng([*seed, 4])
    rows, cols = height // FIELD_SCALE + 8, width // FIELD_SCALE + 8
    return _noise_field(rng, rows, cols, sigma=max(rows, cols) / 28) - rng.uniform(0.9, 1.6)


def _desmoplasia_field(seed: tuple[int, int], width: int, height: int, share: float) -> np.ndarray:
    """Return the low-resolution desmoplasia field: < 0 where a tumor is desmoplastic stroma
    (about ``share`` of the area, in patches ~0.2-0.4 mm across), one cell per FIELD_SCALE px."""
    rng = np.random.default_rng([*seed, 5])
    rows, cols = height // FIELD_SCALE + 8, width // FIELD_SCALE + 8
    field = _noise_field(rng, rows, cols, sigma=12)
    return (field - np.quantile(field, share)).astype(np.float32) if share > 0 else np.full_like(field, 1.0)


def _texture_fields(seed: tuple[int, int], width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return low-resolution stroma fields: eosin density multiplier (~1), fibre-phase warp, looseness."""
    rng = np.random.default_rng([*seed, 2])
    rows, cols = height // TEXTURE_SCALE + 16, width // TEXTURE_SCALE + 16
    patches = 1.0 + 0.12 * _noise_field(rng, rows, cols, 10)
    warp = _noise_field(rng, rows, cols, 5)
    loose = _noise_field(rng, rows, cols, 7)
    return patches, warp, loose


def _place(rng, field: np.ndarray, radius: float, taken: list[tuple[float, float, float]], tries: int = 200, gap: float = 150):
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
        if all((cx - x) ** 2 + (cy - y) ** 2 > (radius + r + gap) ** 2 for x, y, r in taken):
            return cx, cy
    return None


def _stain(rng: np.random.Generator) -> Stain:
    """Return a slide's staining: vectors turned a little (hue), concentrations scaled (lab to lab)."""

    def turn(vector: np.ndarray, spread: float) -> tuple[float, float, float]:
        v = np.clip(vector + rng.normal(0, spread, 3), 0.02, None)
        v *= np.linalg.norm(vector) / np.linalg.norm(v)
        return tuple(round(float(c), 4) for c in v)

    return Stain(
        haematoxylin=turn(OD_HAEMATOXYLIN, 0.08),
        eosin=turn(OD_EOSIN, 0.08),
        h_scale=round(float(rng.uniform(0.68, 1.33)), 4),
        e_scale=round(float(rng.uniform(0.6, 1.4)), 4),
        glass=round(float(rng.uniform(0.015, 0.05)), 4),
    )


def _path(rng: np.random.Generator, start: tuple[float, float], length: float, steps: int, bend: float) -> tuple[tuple[float, float], ...]:
    """Return a smooth random polyline (level-0 px, rounded to 0.5 px) of about ``length`` px."""
    angle = rng.uniform(0, 2 * np.pi)
    turns = np.cumsum(rng.normal(0, bend, steps))
    step = length / steps
    xs = start[0] + np.concatenate([[0], np.cumsum(step * np.cos(angle + turns))])
    ys = start[1] + np.concatenate([[0], np.cumsum(step * np.sin(angle + turns))])
    return tuple((round(float(x) * 2) / 2, round(float(y) * 2) / 2) for x, y in zip(xs, ys))


def _artefacts(rng: np.random.Generator, field: np.ndarray, width: int, height: int) -> tuple[Artefact, ...]:
    """Return a slide's artefacts: maybe a fold, a pen mark, blur patches, bubbles."""
    scale = width / 6144
    rows, cols = np.nonzero(field > 0.1)
    if rows.size == 0:
        return ()

    def somewhere() -> tuple[float, float]:
        i = rng.integers(rows.size)
        return float((cols[i] + 0.5) * FIELD_SCALE), float((rows[i] + 0.5) * FIELD_SCALE)

    out = []
    if rng.uniform() < 0.35:
        out.append(Artefact("fold", _path(rng, somewhere(), rng.uniform(900, 2200) * scale, 12, 0.12), rng.uniform(40, 110), rng.uniform(1.6, 2.1)))
    if rng.uniform() < 0.3:
        corner = (rng.uniform(0.05, 0.95) * width, rng.choice([0.06, 0.94]) * height)
        ink = str(rng.choice(list(PEN_INKS)))
        out.append(Artefact("pen", _path(rng, corner, rng.uniform(600, 1600) * scale, 16, 0.25), rng.uniform(14, 34), rng.uniform(0.5, 1.1), ink))
    for _ in range(rng.choice([0, 0, 1, 2])):
        out.append(Artefact("blur", (somewhere(),), rng.uniform(180, 480) * scale, rng.uniform(2.0, 3.4)))
    for _ in range(rng.choice([0, 0, 0, 1, 2])):
        out.append(Artefact("bubble", (somewhere(),), rng.uniform(90, 320) * scale, 0.35))
    return tuple(out)


def plan_slide(name: str, label: str, split: str, size: int, seed: tuple[int, int], *, height: int | None = None) -> SlidePlan:
    """Return the random layout of one demo slide (size = level-0 width in px; height random
    at 68-80% of it unless given).

    Tumor sizes are absolute for ITCs (35-65 px radius: clusters 70-170 µm across) and follow the
    slide size otherwise (on the default 6144 px slide: micrometastases 0.2-1.1 mm across,
    macrometastases about 2 mm).
    """
    rng = np.random.default_rng([*seed, 0])
    width = int(size) // TILE * TILE
    drawn = int(round(size * rng.uniform(0.68, 0.8)))
    height = int(height or drawn) // TILE * TILE
    field = _tissue_field(seed, width, height)
    scale = size / 6144
    taken: list[tuple[float, float, float]] = []
    tumors: list[Polygon] = []
    sizes: list[str] = []
    scenario = "normal"
    if label == "tumor":
        scenario = str(rng.choice(["macro", "micro", "small"], p=[0.35, 0.3, 0.35]))
        wanted: list[tuple[str, float]] = []
        if scenario == "macro":
            wanted.append(("macro", rng.uniform(1000, 1150) * scale))
            wanted += [("micro", r * scale) for r in rng.uniform(120, 300, size=rng.integers(0, 3))]
        elif scenario == "micro":
            wanted += [("micro", r * scale) for r in rng.uniform(150, 550, size=rng.integers(1, 3))]
        else:
            if rng.uniform() < 0.5:
                wanted.append(("micro", rng.uniform(105, 150)))  # 0.2-0.3 mm across
        if scenario == "small" or rng.uniform() < 0.4:
            wanted += [("itc", r) for r in rng.uniform(35, 65, size=rng.integers(1, 4))]
        for kind, radius in wanted:
            centre = None
            for shrink in (1.0, 0.9, 0.8, 0.7):  # a macrometastasis shrinks until it fits the tissue
                centre = _place(rng, field, radius * shrink, taken)
                if centre is not None:
                    radius *= shrink
                    break
            if centre is not None:
                taken.append((*centre, radius))
                points = 48 if radius > 100 else 20
                tumors.append(_blob(rng, *centre, radius, points=points))
                sizes.append(kind)
    mimics, mimic_kinds = [], []
    kinds = ["lymphoid"] * rng.integers(1, 4) + ["hyperchromatic"] * rng.integers(1, 4) + ["crushed"] * rng.integers(0, 2)
    for kind in kinds:
        radius = {"lymphoid": rng.uniform(110, 330), "hyperchromatic": rng.uniform(140, 400), "crushed": rng.uniform(90, 220)}[kind]
        centre = _place(rng, field, radius, taken)
        if centre is not None:
            taken.append((*centre, radius))
            stretch = (0.3, 0.5) if kind == "crushed" else (0.6, 1.0)
            mimics.append(_blob(rng, *centre, radius, points=28, stretch=stretch))
            mimic_kinds.append(kind)
    return SlidePlan(
        name, label, split, width, height, seed, tuple(tumors), tuple(mimics),
        tumor_sizes=tuple(sizes), mimic_kinds=tuple(mimic_kinds), scenario=scenario,
        stain=_stain(rng), artefacts=_artefacts(rng, field, width, height),
        grade=str(rng.choice(["high", "low"], p=[0.55, 0.45])), cellularity=round(float(rng.uniform(0.6, 0.92)), 3),
        # Drawn last, so that the layout above is that of the cohorts before desmoplasia was drawn.
        stroma_share=round(float(rng.uniform(0.3, 0.6)), 3) if label == "tumor" else 0.0,
        stroma_fill=round(float(rng.uniform(0.04, 0.12)), 3),
    )


# -- rendering ----------------------------------------------------------------------------
def _nucleus(rng: np.random.Generator, kind: str) -> np.ndarray:
    """Return one haematoxylin-density sprite (float32, odd square, 0 at its border)."""
    if kind == "tumor":  # high grade: large, pleomorphic, vesicular, nucleoli
        a = rng.uniform(7.0, 13.5)
        b, wobble, strength = a * rng.uniform(0.72, 1.3), rng.uniform(0.05, 0.13), rng.uniform(0.75, 1.5)
    elif kind == "tumor_low":  # low grade: smaller, darker, less pleomorphic; close to the hyperchromatic mimic
        a = rng.uniform(6.8, 10.5)
        b, wobble, strength = a * rng.uniform(0.75, 1.15), rng.uniform(0.05, 0.10), rng.uniform(1.0, 1.5)
    elif kind == "lymph":
        a = rng.uniform(4.6, 6.4)
        b, wobble, strength = a * rng.uniform(0.88, 1.12), 0.03, rng.uniform(1.6, 2.0)
    elif kind == "hyperchromatic":  # benign but dark and crowded: larger than lymphocytes, fairly regular, reactive nucleoli in some
        a = rng.uniform(6.3, 9.5)
        b, wobble, strength = a * rng.uniform(0.8, 1.05), rng.uniform(0.035, 0.07), rng.uniform(1.25, 1.8)
    elif kind == "crushed":
        a = rng.uniform(2.2, 4.0)
        b, wobble, strength = rng.uniform(9.0, 20.0), 0.08, rng.uniform(1.1, 1.6)
    else:  # stromal (fibroblast): spindle
        a = rng.uniform(2.0, 3.0)
        b, wobble, strength = rng.uniform(7.0, 13.0), 0.06, rng.uniform(0.8, 1.15)
    half = int(np.ceil(max(a, b) * (1 + 2.9 * wobble) + 3))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    theta = np.arctan2(v / b, u / a)
    radius = np.ones_like(theta)
    for k in range(2, 6):  # an irregular outline: a few harmonics of the radius
        radius += wobble * rng.uniform(0.3, 1.0) / (k - 1) ** 0.5 * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    d = np.sqrt((u / a) ** 2 + (v / b) ** 2) / radius  # 1 on the outline
    inside = np.clip((1.0 - d) * min(a, b) + 0.5, 0, 1)  # about 1 px of anti-aliased edge
    grain = ndimage.gaussian_filter(rng.standard_normal(d.shape).astype(np.float32), 0.9)
    grain /= grain.std() + 1e-6
    if kind in ("tumor", "tumor_low"):
        # Vesicular: a dark membrane, pale centre, coarse chromatin clumps, one or two nucleoli
        # (low grade: less vesicular, a nucleolus in half of the nuclei).
        rim = np.exp(-(((1 - d) * min(a, b)) / 1.3) ** 2)
        pale = 0.45 if kind == "tumor" else 0.68
        density = pale + (1 - pale) * rim + 0.35 * np.clip(grain, 0, None)
        nucleoli = rng.integers(1, 3) if kind == "tumor" else int(rng.uniform() < 0.5)
        for _ in range(nucleoli):
            ny, nx = rng.uniform(-0.4, 0.4) * a, rng.uniform(-0.4, 0.4) * a
            r2 = rng.uniform(1.3, 2.4)
            density += 1.3 * np.exp(-((xx - nx) ** 2 + (yy - ny) ** 2) / (2 * (r2 / 1.6) ** 2))
    elif kind == "crushed":
        density = 0.8 + 0.2 * grain
    else:
        density = 0.82 + 0.14 * grain
        if kind == "hyperchromatic" and rng.uniform() < 0.3:  # a reactive nucleolus
            ny, nx = rng.uniform(-0.3, 0.3) * a, rng.uniform(-0.3, 0.3) * a
            density += 0.9 * np.exp(-((xx - nx) ** 2 + (yy - ny) ** 2) / (2 * (rng.uniform(1.1, 1.8) / 1.6) ** 2))
    sprite = inside * np.clip(density, 0.2, 2.2) * strength
    if kind == "crushed":
        sprite = ndimage.gaussian_filter(sprite, 1.2)  # smeared
    sprite[[0, -1], :] = 0
    sprite[:, [0, -1]] = 0
    return sprite.astype(np.float32)


def _upsample(field: np.ndarray, scale: int, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """Return the bilinear upsampling of a low-resolution field over a level-0 window.

    Cell (r, c) of ``field`` covers level-0 pixels [c * scale, (c + 1) * scale) x [r * scale, ...)
    and is its value at the cell centre; beyond the first and last centres the edge values
    repeat. The weights come from global coordinates only, so a pixel's value is bit-for-bit
    the same in every window (strips have no seams).
    """

    # Rows first, on the field's few columns (small); then columns, by broadcasting (no gathers).
    at = np.clip((np.arange(y0, y0 + height, dtype=np.float64) + 0.5) / scale - 0.5, 0, field.shape[0] - 1)
    r0 = np.minimum(at.astype(np.intp), field.shape[0] - 2)
    fr = (at - r0).astype(np.float32)[:, None]
    f = field.astype(np.float32, copy=False)
    rows = f[r0] * (1 - fr) + f[r0 + 1] * fr  # (height, cells)
    # Level-0 column x = j * scale + scale / 2 + k (0 <= k < scale, scale even) lies between the
    # centres of cells j and j + 1, at the fraction (k + 0.5) / scale; before the first centre
    # and after the last the edge cells repeat.
    assert scale % 2 == 0, scale
    half = scale // 2
    frac = ((np.arange(scale) + 0.5) / scale).astype(np.float32)
    middle = rows[:, :-1, None] * (1 - frac) + rows[:, 1:, None] * frac
    cells = field.shape[1]
    full = np.empty((height, half + (cells - 1) * scale + (scale - half)), dtype=np.float32)
    full[:, :half] = rows[:, :1]
    full[:, half : half + (cells - 1) * scale] = middle.reshape(height, -1)
    full[:, half + (cells - 1) * scale :] = rows[:, -1:]
    return full[:, x0 : x0 + width]


def _rasterize(polygons: Sequence[Polygon], x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """Return a bool mask (height, width) of the polygons over a level-0 window."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    window = shapely.box(x0, y0, x0 + width, y0 + height)
    for polygon in polygons:
        if polygon.intersects(window):
            # Frame change: level-0 -> window pixels; PIL fills pixel centres inside the outline.
            draw.polygon([(x - x0 - 0.5, y - y0 - 0.5) for x, y in polygon.exterior.coords], fill=1)
    return np.asarray(canvas, dtype=bool)


def _polyline_distance(points: Sequence[tuple[float, float]], reach: float, y0: int, height: int, width: int):
    """Return (rows slice, cols slice, distance) from the polyline, over the part of a window
    (level-0 rows [y0, y0 + height), all columns) within ``reach`` px of it; None if none.

    Computed from global coordinates, so the distance at a pixel never depends on the window.
    """
    pts = np.asarray(points, dtype=np.float64)
    lo_x, hi_x = int(max(pts[:, 0].min() - reach, 0)), int(min(pts[:, 0].max() + reach + 1, width))
    lo_y, hi_y = int(max(pts[:, 1].min() - reach, y0)), int(min(pts[:, 1].max() + reach + 1, y0 + height))
    if lo_x >= hi_x or lo_y >= hi_y:
        return None
    best = np.full((hi_y - lo_y, hi_x - lo_x), np.inf)
    for (ax, ay), (bx, by) in zip(pts[:-1], pts[1:]):
        # Only the segment's own neighbourhood is measured (the rest is farther than reach).
        sx0, sx1 = int(max(min(ax, bx) - reach, lo_x)), int(min(max(ax, bx) + reach + 1, hi_x))
        sy0, sy1 = int(max(min(ay, by) - reach, lo_y)), int(min(max(ay, by) + reach + 1, hi_y))
        if sx0 >= sx1 or sy0 >= sy1:
            continue
        yy, xx = np.mgrid[sy0:sy1, sx0:sx1].astype(np.float64)
        dx, dy = bx - ax, by - ay
        t = np.clip(((xx - ax) * dx + (yy - ay) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
        block = best[sy0 - lo_y : sy1 - lo_y, sx0 - lo_x : sx1 - lo_x]
        np.minimum(block, np.hypot(xx - ax - t * dx, yy - ay - t * dy), out=block)
    return slice(lo_y - y0, hi_y - y0), slice(lo_x, hi_x), best


def _disc(centre: tuple[float, float], radius: float, y0: int, height: int, width: int):
    """Return (rows slice, cols slice, distance to the centre) over the window part within ``radius``."""
    return _polyline_distance([centre, centre], radius, y0, height, width)


def _voronoi_tile(jitter: np.ndarray, cell: int, width: float) -> np.ndarray:
    """Return one period (``n * cell`` px square) of the border weight of a periodic jittered grid.

    Seed (gy, gx) sits at level-0 ``((gy, gx) + jitter[gy % n, gx % n]) * cell`` (jitter in cell
    units, shape (n, n, 2)); the weight is 1 on the borders of the seeds' Voronoi cells (the 3x3
    nearest seeds compared) and fades out ``width`` px away from them. Computed cell block by cell
    block with broadcasting (no per-pixel gathers): pixel (y, x) of the tile is (gy * cell + a, gx * cell + b).
    """
    n = jitter.shape[0]
    a = np.arange(cell, dtype=np.float32)
    best = np.full((n, cell, n, cell), np.inf, dtype=np.float32)
    second = np.full_like(best, np.inf)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = np.roll(jitter, (-dy, -dx), axis=(0, 1)).astype(np.float32)  # the neighbour's jitter at each cell
            ry = (dy + shifted[..., 0]) * cell  # (n, n): the seed's row offset from the cell's corner
            rx = (dx + shifted[..., 1]) * cell
            d = np.square(ry[:, None, :, None] - a[None, :, None, None]) + np.square(rx[:, None, :, None] - a[None, None, None, :])
            np.minimum(second, np.maximum(best, d), out=second)
            np.minimum(best, d, out=best)
    gap = np.sqrt(second) - np.sqrt(best)
    return np.clip(1.0 + width / 2 - gap / width, 0, 1).astype(np.float32).reshape(n * cell, n * cell)


class _PeriodicBorder:
    """Voronoi cell borders of a periodic jittered grid, looked up by global level-0 row and column
    (one period computed once, repeated across the slide's width: a row of a window is a copy)."""

    def __init__(self, jitter: np.ndarray, cell: int, width: float, slide_width: int):
        tile = _voronoi_tile(jitter, cell, width)
        self.period = tile.shape[0]
        self.wide = np.tile(tile, (1, -(-slide_width // self.period)))[:, :slide_width]

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """Return the weights (len(rows), slide width) of the given level-0 rows."""
        return self.wide[np.mod(rows, self.period)]


class SlideRenderer:
    """Renders the RGB pixels of a planned slide, strip by strip."""

    def __init__(self, plan: SlidePlan):
        self.plan = plan
        self.stain = plan.stain or Stain(tuple(OD_HAEMATOXYLIN), tuple(OD_EOSIN), 1.0, 1.0, OD_GLASS)
        self.tissue_field = _tissue_field(plan.seed, plan.width, plan.height)
        self.fat_field = _fat_field(plan.seed, plan.width, plan.height)
        patches, self.warp, loose = _texture_fields(plan.seed, plan.width, plan.height)
        # Eosin density of stroma at low resolution: patchy (~1) and paler where the stroma is loose, oedematous.
        self.stroma = (patches * np.clip(1.45 - 0.5 * loose, 0.55, 1.0)).astype(np.float32)
        # White noise for the grain and the collagen fibres: blocks cut from one pool at random
        # offsets (per block, from the seed); white noise pieced together has no seams.
        self.noise = np.random.default_rng([*plan.seed, 9]).standard_normal((TILE, min(plan.width, 8192) + 509), dtype=np.float32)
        rng = np.random.default_rng([*plan.seed, 3])
        tumor_kind = "tumor" if plan.grade == "high" else "tumor_low"
        self.sprites = {kind: [_nucleus(rng, kind) for _ in range(24)] for kind in (tumor_kind, "lymph", "hyperchromatic", "crushed", "stroma")}
        self.sprites["tumor"] = self.sprites.pop(tumor_kind)
        self.fibre_warp = rng.uniform(12, 20)  # px of row offset per unit of the warp field
        # Adipocyte and epithelial cell centres: one per FAT_CELL / TUMOR_CELL square, jittered by a
        # periodic pattern (FAT_PERIOD / TUMOR_PERIOD cells: its borders are computed once per slide).
        self.fat_border = _PeriodicBorder(rng.uniform(0.1, 0.9, (FAT_PERIOD, FAT_PERIOD, 2)), FAT_CELL, 1.6, plan.width)
        jitter = rng.uniform(0.15, 0.85, (TUMOR_PERIOD, TUMOR_PERIOD, 2))
        self.cell_border = _PeriodicBorder(jitter, TUMOR_CELL, 1.2, plan.width)
        rows, cols = plan.height // TUMOR_CELL + 8, plan.width // TUMOR_CELL + 4
        grid = np.stack(np.mgrid[0:rows, 0:cols], axis=-1) - np.array([2, 0])  # grid rows start 2 cells above the slide
        self.cell_seeds = ((grid + jitter[grid[..., 0] % TUMOR_PERIOD, grid[..., 1] % TUMOR_PERIOD]) * TUMOR_CELL).astype(np.float32)
        fill = rng.uniform(size=(rows, cols))
        self.cell_fill = fill < plan.cellularity
        # Tumor cells: fewer where the tumor is desmoplastic stroma (the field at each cell's seed,
        # ramping over 0.25 of its standard deviation to plan.stroma_fill of the sheet's cells).
        self.desmoplasia = _desmoplasia_field(plan.seed, plan.width, plan.height, plan.stroma_share)
        at = np.clip(self.cell_seeds // FIELD_SCALE, 0, np.array(self.desmoplasia.shape) - 1).astype(np.intp)
        ramp = np.clip(self.desmoplasia[at[..., 0], at[..., 1]] / 0.25 + 0.5, 0, 1)
        self.tumor_fill = fill < plan.cellularity * (plan.stroma_fill + (1 - plan.stroma_fill) * ramp)
        # Isolated tumor cell clusters are drawn with every cell: a handful of cells, never none.
        self.itcs = tuple(t for t, size in zip(plan.tumors, plan.tumor_sizes) if size == "itc")
        # Only tumors of at least DESMOPLASIA_MIN_AREA have desmoplastic stroma: a small one that
        # fell in it whole would keep almost no tumor cells.
        self.desmoplastic_tumors = tuple(t for t, size in zip(plan.tumors, plan.tumor_sizes) if size != "itc" and t.area >= DESMOPLASIA_MIN_AREA)
        self.cell_variant = rng.integers(0, 1 << 30, size=(rows, cols))
        self.mimic_groups = {kind: [p for p, k in zip(plan.mimics, plan.mimic_kinds or ("lymphoid",) * len(plan.mimics)) if k == kind] for kind in MIMIC_KINDS}

    # - regions and nuclei -
    def regions(self, top: int, height: int) -> dict[str, np.ndarray]:
        """Return bool masks (height, width) of a window of level-0 rows [top, top + height):
        tissue, fat, tumor (annotated), desmoplastic (the tumor's stroma with scattered tumor
        cells), desmoplastic_tumor (the tumors that may hold such stroma, whole) and one per
        mimic kind (fat only where no tumor or mimic is)."""
        plan, width = self.plan, self.plan.width
        masks = {"tumor": _rasterize(plan.tumors, 0, top, width, height)}
        masks["desmoplastic_tumor"] = _rasterize(self.desmoplastic_tumors, 0, top, width, height)
        masks["desmoplastic"] = masks["desmoplastic_tumor"] & (_upsample(self.desmoplasia, FIELD_SCALE, 0, top, width, height) < 0)
        for kind, polygons in self.mimic_groups.items():
            masks[kind] = _rasterize(polygons, 0, top, width, height)
        special = masks["tumor"] | masks["lymphoid"] | masks["hyperchromatic"] | masks["crushed"]
        masks["tissue"] = (_upsample(self.tissue_field, FIELD_SCALE, 0, top, width, height) > 0) | special
        masks["fat"] = (_upsample(self.fat_field, FIELD_SCALE, 0, top, width, height) > 0) & masks["tissue"] & ~special
        return masks

    def _band_nuclei(self, band: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return candidate nuclei of a band of STRIP rows: x, y (level-0), acceptance u, variant."""
        rng = np.random.default_rng([*self.plan.seed, 100 + band])
        count = rng.poisson(DENSITY_MAX * STRIP * self.plan.width)
        x = rng.integers(0, self.plan.width, size=count)
        y = band * STRIP + rng.integers(0, STRIP, size=count)
        return x, y, rng.uniform(size=count), rng.integers(0, 1 << 30, size=count)

    def nuclei(self, top: int, height: int, masks: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return the nuclei centred in level-0 rows [top, top + height): x, y, kind, variant.

        ``kind`` is a key of DENSITY; a nucleus is drawn from candidates by thinning (its kind
        chosen by the densities of the regions at its centre), so it depends only on the plan.
        """
        masks = masks if masks is not None else self.regions(top, height)
        xs, ys, kinds, variants = [], [], [], []
        first_band, last_band = max(top, 0) // STRIP, min(top + height, self.plan.height) // STRIP
        for band in range(first_band, last_band + 1):
            if band * STRIP >= self.plan.height:
                break
            x, y, u, variant = self._band_nuclei(band)
            keep = (y >= top) & (y < top + height)
            x, y, u, variant = x[keep], y[keep], u[keep], variant[keep]
            r = y - top
            at = {name: mask[r, x] for name, mask in masks.items()}
            sheet = at["tumor"] & ~at["desmoplastic"]
            plain = at["tissue"] & ~at["fat"] & ~sheet & ~at["lymphoid"] & ~at["hyperchromatic"] & ~at["crushed"]
            density = {
                "lymph_aggregate": at["lymphoid"],
                "crushed": at["crushed"],
                "stroma": plain,
                "lymph": at["tissue"] & ~at["fat"] & ~at["lymphoid"],
                "fat": at["fat"],
            }
            kind = np.full(x.shape, "", dtype="<U15")
            level = u * DENSITY_MAX
            low = np.zeros(x.shape, dtype=np.float64)
            for name, where in density.items():
                high = low + where * DENSITY[name]
                kind[(level >= low) & (level < high)] = name
                low = high
            chosen = kind != ""
            xs.append(x[chosen]), ys.append(y[chosen]), kinds.append(kind[chosen]), variants.append(variant[chosen])
        # Tumor cells and the hyperchromatic benign epithelium that mimics them: one nucleus per
        # cell of a jittered grid (global), most cells filled.
        seeds = np.round(self.cell_seeds).astype(np.int64)
        inside = (seeds[..., 0] >= top) & (seeds[..., 0] < top + height) & (seeds[..., 1] >= 0) & (seeds[..., 1] < self.plan.width)
        ty, tx = seeds[..., 0][inside], seeds[..., 1][inside]
        tumor_fill = self.cell_fill[inside]
        where = masks["desmoplastic_tumor"][ty - top, tx]
        tumor_fill[where] = self.tumor_fill[inside][where]
        if self.itcs:
            tumor_fill |= _rasterize(self.itcs, 0, top, self.plan.width, height)[ty - top, tx]
        variant = self.cell_variant[inside]
        for name, filled in (("tumor", tumor_fill), ("hyperchromatic", self.cell_fill[inside])):
            on = filled & masks[name][ty - top, tx]
            xs.append(tx[on]), ys.append(ty[on]), kinds.append(np.full(int(on.sum()), name, dtype="<U15"))
            variants.append(variant[on])
        return np.concatenate(xs), np.concatenate(ys), np.concatenate(kinds), np.concatenate(variants)

    # - stroma, fat, artefacts -
    def _fibres(self, top: int, height: int) -> np.ndarray:
        """Return collagen bundles over a window (unit-variance streaks along x, wavy).

        Drawn at half resolution (noise per block of TILE / 2 half-rows, so strips agree; the
        window top is even), smeared along x, sampled along wavy rows (a smooth row offset of
        at most 20 half-rows, inside the MARGIN), then interpolated back to level 0.
        """
        width = self.plan.width
        half_tile = TILE // 2
        htop, hrows, hcols = top // 2, height // 2 + 2, width // 2 + 2
        first = htop // half_tile
        blocks = range(first, -(-(htop + hrows) // half_tile))
        noise = np.concatenate([self._noise_block((8, b + 1000), half_tile, hcols) for b in blocks])[htop - first * half_tile :][:hrows]
        streaks = ndimage.gaussian_filter(noise, (0.6, 3.5), mode="nearest")
        streaks *= np.float32(np.sqrt(4 * np.pi * 0.6 * 3.5))  # unit variance, whatever the window
        warp = _upsample(self.warp, TEXTURE_SCALE // 2, 0, htop, hcols, hrows)
        offset = np.clip(warp * np.float32(self.fibre_warp / 2), -20, 20)
        whole = np.floor(offset)
        offset -= whole  # the fraction, computed from the offset alone: the same in every window
        r0 = np.clip(np.arange(hrows)[:, None] + whole.astype(np.intp), 0, hrows - 2)
        rows_f = offset
        cols = np.arange(hcols)[None, :]
        fibre = streaks[r0, cols]
        fibre += (streaks[r0 + 1, cols] - fibre) * rows_f
        # Frame change: half-resolution (row j = level-0 row 2j) -> level 0, linear.
        full = np.empty((2 * hrows - 1, 2 * hcols - 1), dtype=np.float32)
        full[::2, ::2] = fibre
        full[1::2, ::2] = (fibre[:-1] + fibre[1:]) / 2
        full[:, 1::2] = (full[:, :-1:2] + full[:, 2::2]) / 2
        return full[:height, :width]

    def _eosin(self, masks: dict[str, np.ndarray], top: int, height: int) -> np.ndarray:
        """Return the eosin density of a window: fibrous stroma, cytoplasm, fat membranes."""
        width = self.plan.width
        stroma = _upsample(self.stroma, TEXTURE_SCALE, 0, top, width, height)
        fibre = self._fibres(top, height)
        eosin = 0.2 * fibre
        eosin += 0.62
        eosin *= stroma
        eosin *= np.clip((fibre + 1.5) / 0.8, 0.2, 1.0)  # thin clefts between bundles
        epithelium = (masks["tumor"] & ~masks["desmoplastic"]) | masks["hyperchromatic"]
        eosin[epithelium] = 0.30 + 0.1 * stroma[epithelium]  # scant cytoplasm
        eosin[masks["lymphoid"]] *= 0.45
        eosin *= masks["tissue"]
        lines = np.flatnonzero(epithelium.any(axis=1))
        if lines.size:  # cell borders between epithelial cells, faint
            eosin[lines] += (0.22 * self.cell_border.rows(lines + top)) * epithelium[lines]
        fat = masks["fat"]
        lines = np.flatnonzero(fat.any(axis=1))
        if lines.size:  # thin membranes between adipocytes, empty inside
            eosin[lines] = np.where(fat[lines], 0.75 * self.fat_border.rows(lines + top), eosin[lines])
        return eosin

    def _artefacts(self, haem: np.ndarray, eosin: np.ndarray, ink: np.ndarray, grey: np.ndarray, top: int, height: int, tissue: np.ndarray) -> None:
        """Apply the plan's artefacts to a window's density fields, in place."""
        width = self.plan.width
        for art in self.plan.artefacts:
            if art.kind == "blur":
                hit = _disc(art.points[0], art.size + 4 * art.value + 2, top, height, width)
                if hit is None:
                    continue
                rows, cols, d = hit
                weight = np.clip((art.size - d) / (0.3 * art.size), 0, 1).astype(np.float32)
                # Rows of the whole window are blurred, so a pixel's blur never sees a window edge
                # nearer than MARGIN - blur radius.
                for field in (haem, eosin):
                    block = field[:, cols]
                    blurred = ndimage.gaussian_filter(block, art.value, mode="nearest")
                    field[rows, cols] = block[rows] * (1 - weight) + blurred[rows] * weight
            elif art.kind == "fold":
                hit = _polyline_distance(art.points, art.size / 2 + 2, top, height, width)
                if hit is None:
                    continue
                rows, cols, d = hit
                band = np.clip((art.size / 2 - d) / 3 + 0.5, 0, 1).astype(np.float32) * tissue[rows, cols]
                edge = np.exp(-((d - art.size / 2) / 2.5) ** 2).astype(np.float32) * tissue[rows, cols]
                factor = 1 + (art.value - 1) * band
                haem[rows, cols] *= factor
                eosin[rows, cols] *= factor
                eosin[rows, cols] += 0.35 * edge
            elif art.kind == "pen":
                hit = _polyline_distance(art.points, art.size / 2 + 2, top, height, width)
                if hit is None:
                    continue
                rows, cols, d = hit
                stroke = np.clip((art.size / 2 - d) / 1.5 + 0.5, 0, 1).astype(np.float32)
                ink[rows, cols] = np.maximum(ink[rows, cols], stroke * art.value)
            elif art.kind == "bubble":
                hit = _disc(art.points[0], art.size + 4, top, height, width)
                if hit is None:
                    continue
                rows, cols, d = hit
                rim = np.exp(-((d - art.size) / 2.2) ** 2).astype(np.float32)
                inner = (d < art.size).astype(np.float32)
                grey[rows, cols] += art.value * rim
                haem[rows, cols] *= 1 - 0.12 * inner
                eosin[rows, cols] *= 1 - 0.12 * inner

    def render_strip(self, row0: int, rows: int) -> np.ndarray:
        """Return RGB uint8 (rows, width, 3) of level-0 rows [row0, row0 + rows).

        The pixels depend only on the plan and the global row, never on how the slide is
        cut into strips (strips start on multiples of TILE rows).
        """
        plan, stain = self.plan, self.stain
        top = row0 - MARGIN
        height = rows + 2 * MARGIN
        width = plan.width
        # Regions over the window plus MARGIN more rows each side: nuclei centred there reach in.
        wide = self.regions(top - MARGIN, height + 2 * MARGIN)
        x, y, kind, variant = self.nuclei(top - MARGIN, height + 2 * MARGIN, wide)
        masks = {name: mask[MARGIN:-MARGIN] for name, mask in wide.items()}
        tissue = masks["tissue"]

        haem = np.zeros((height, width), dtype=np.float32)
        r = y - top
        pick_all = variant % 24
        for name, sprite_kind in SPRITE_KIND.items():
            chosen = kind == name
            if not chosen.any():
                continue
            for index, sprite in enumerate(self.sprites[sprite_kind]):
                pick = chosen & (pick_all == index)
                if pick.any():
                    self._stamp(haem, sprite, r[pick], x[pick])

        eosin = self._eosin(masks, top, height)
        haem += 0.05 * tissue
        haem[(masks["tumor"] & ~masks["desmoplastic"]) | masks["hyperchromatic"]] += 0.09  # amphophilic cytoplasm
        haem[masks["fat"]] *= 0.3
        ink = np.zeros_like(haem)
        grey = np.zeros_like(haem)
        self._artefacts(haem, eosin, ink, grey, top, height, tissue)

        # Only the strip itself is coloured; the margin served the nuclei and blur that cross its edges.
        keep = slice(MARGIN, MARGIN + rows)
        haem, eosin, ink, grey = haem[keep], eosin[keep], ink[keep], grey[keep]
        haem *= np.float32(stain.h_scale)
        eosin *= np.float32(0.55 * stain.e_scale)
        # Grain is drawn per block of TILE rows, so strips of any (tile-aligned) size agree.
        blocks = range(row0 // TILE, -(-(row0 + rows) // TILE))
        base = np.concatenate([self._noise_block((7, b), TILE, width) for b in blocks])[row0 - blocks[0] * TILE :][:rows]
        base *= 0.02
        base += np.float32(stain.glass)
        base += grey
        pen = PEN_INKS.get(next((a.ink for a in plan.artefacts if a.kind == "pen"), ""), (0.0, 0.0, 0.0))
        rgb = np.empty((rows, width, 3), dtype=np.uint8)
        optical_density = np.empty_like(haem)
        for channel in range(3):
            # Beer-Lambert: intensity = 255 * exp(-(sum of stain densities x stain vectors)).
            np.multiply(haem, np.float32(stain.haematoxylin[channel]), out=optical_density)
            optical_density += eosin * np.float32(stain.eosin[channel])
            optical_density += ink * np.float32(pen[channel])
            optical_density += base
            np.maximum(optical_density, 0, out=optical_density)
            optical_density *= -1
            np.exp(optical_density, out=optical_density)
            optical_density *= 255
            rgb[:, :, channel] = optical_density
        return rgb

    def _noise_block(self, stream: tuple[int, int], rows: int, cols: int) -> np.ndarray:
        """Return white noise (rows, cols), unit variance: the pool from a random (row, column)
        offset drawn from the slide's seed and ``stream``, wrapped around its edges."""
        pool = self.noise
        offset = np.random.default_rng([*self.plan.seed, *stream]).integers(0, pool.shape, size=2)
        picked = np.take(pool, np.arange(offset[0], offset[0] + rows), axis=0, mode="wrap")
        return np.take(picked, np.arange(offset[1], offset[1] + cols), axis=1, mode="wrap")

    @staticmethod
    def _stamp(canvas: np.ndarray, sprite: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
        """Draw ``sprite`` centred at each (row, col), keeping the max density where nuclei overlap."""
        half = sprite.shape[0] // 2
        dy, dx = np.mgrid[-half : half + 1, -half : half + 1]
        rr = rows[:, None, None] + dy[None]
        cc = cols[:, None, None] + dx[None]
        # Only the nucleus itself, not its sprite's empty square: a square drawn over a
        # neighbour would cut it along a straight line.
        ok = (rr >= 0) & (rr < canvas.shape[0]) & (cc >= 0) & (cc < canvas.shape[1]) & (sprite > 0)[None]
        values = np.broadcast_to(sprite, rr.shape)[ok]
        # np.maximum.at: where nuclei overlap, the darker wins whatever the order.
        np.maximum.at(canvas, (rr[ok], cc[ok]), values)


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


def _render_plan_strip(job: tuple[SlidePlan, int]) -> np.ndarray:
    """A strip of any plan, in a shared worker pool (the worker keeps the last plan's renderer)."""
    global _worker_renderer
    plan, row0 = job
    if _worker_renderer is None or _worker_renderer.plan != plan:
        _worker_renderer = SlideRenderer(plan)
    return _worker_renderer.render_strip(row0, min(STRIP, plan.height - row0))


def write_slide(plan: SlidePlan, path: Path, *, quality: int = 85, workers: int = 1, pool=None) -> None:
    """Render a planned slide and write it as a pyramidal tiled JPEG TIFF at ``path``.

    Level 0 is streamed strip by strip; level 1 is kept in memory (a quarter of level 0)
    and the smaller levels are derived from it. Strips are rendered in parallel by ``workers``
    new processes, or by ``pool`` (a multiprocessing pool the caller owns), when given.
    """
    renderer = SlideRenderer(plan) if workers <= 1 and pool is None else None
    width, height = plan.width, plan.height
    level1 = np.empty((height // 2, width // 2, 3), dtype=np.uint8)

    def level0_tiles() -> Iterator[np.ndarray]:
        starts = range(0, height, STRIP)
        if pool is not None:
            own, strips = None, pool.imap(_render_plan_strip, [(plan, row0) for row0 in starts])
        elif workers > 1:  # strips rendered in parallel, written in order (a slide of 50,000 px and more)
            own = multiprocessing.get_context("spawn").Pool(workers, _init_strip_worker, (plan,))
            strips = own.imap(_render_strip_job, starts)
        else:
            own, strips = None, (renderer.render_strip(row0, min(STRIP, height - row0)) for row0 in starts)
        for row0, strip in zip(starts, strips):
            rows = strip.shape[0]
            level1[row0 // 2 : (row0 + rows) // 2] = _downsample2(strip)[: (rows // 2)]
            for tile_row in range(0, rows, TILE):
                for col in range(0, width, TILE):
                    yield np.ascontiguousarray(strip[tile_row : tile_row + TILE, col : col + TILE])
        if own is not None:
            own.close()
            own.join()

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
    within each label, every split holding both labels when n_slides >= 6 (the default 24
    slides: 12 train, 5 val, 7 test, so that val and test together hold 12 held-out slides)."""
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


GENERATING = ".generating"  # marker file in a cohort folder while make_demo_cohort writes it


def _write_one(job: tuple[SlidePlan, str], pool=None) -> str:
    plan, out = job
    out_dir = Path(out)
    props = {"synthetic": True, "source": SYNTHETIC_NOTE, "slide": plan.name, "label": plan.label}
    # Annotations first: a slide file that exists (written atomically) always has its annotations.
    write_geojson(out_dir / "annotations" / f"{plan.name}.geojson", list(plan.tumors), properties=props)
    write_asap_xml(out_dir / "annotations" / f"{plan.name}.xml", list(plan.tumors))
    write_slide(plan, out_dir / "slides" / f"{plan.name}.tiff", pool=pool)
    return plan.name


def _lower_priority(nice: int) -> None:
    """Pool initializer: add ``nice`` to this worker process's niceness (0: unchanged)."""
    if nice:
        os.nice(nice)


def cohort_in_progress(out: str | os.PathLike) -> bool:
    """Return True while ``out`` is a demo cohort being written (or one whose writing was
    interrupted: calling :func:`make_demo_cohort` again with the same arguments finishes it)."""
    return (Path(out) / GENERATING).exists()


def _write_table(path: Path, rows: Sequence[tuple[str, str, str]]) -> None:
    with atomic_write(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide", "label", "split"])
        writer.writerows(rows)


def _first_start_order(plans: Sequence[SlidePlan]) -> list[SlidePlan]:
    """Return the plans in the order they are written: first the first tumor slide with a
    macrometastasis (else the first tumor slide), so that the first slide a user sees on first
    start has a tumor on it; then the rest in layout order."""
    tumor = [plan for plan in plans if plan.label == "tumor"]
    first = next((plan for plan in tumor if plan.scenario == "macro"), tumor[0] if tumor else None)
    return ([first] if first else []) + [plan for plan in plans if plan is not first]


def make_demo_cohort(
    out: str | os.PathLike,
    *,
    n_slides: int = 24,
    seed: int = 0,
    size: int = 6144,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    splits: Sequence[str] | None = None,
    on_slide: Callable[[str], None] | None = None,
    nice: int = 0,
) -> Path:
    """Write a synthetic cohort under ``out`` and return the path of its cohort.csv.

    Writes ``out/slides/<name>.tiff``, ``out/annotations/<name>.geojson`` and ``.xml``
    (tumor outlines in level-0 px; empty for normal slides) and ``out/cohort.csv``
    (``slide,label,split``). ``size`` is the level-0 width of each slide in pixels.
    Deterministic for a seed: a slide is the same whatever ``splits`` or ``workers``.

    Slides are usable as they are written: each appears atomically with its annotations,
    and cohort.csv is rewritten after each one, listing the slides written so far (layout
    order). While writing, ``out/.generating`` exists (:func:`cohort_in_progress`); a call
    with the same arguments after an interruption keeps the slides already written.

    Args:
        progress: ``progress(done, total)`` after each slide (and ``(0, total)`` first).
        splits: only the slides of these splits are written (and listed in cohort.csv),
            e.g. ``("val", "test")`` for the held-out slides; None: all.
        on_slide: ``on_slide(name)`` after each slide is complete on disk, in the order
            they finish (a tumor slide with a macrometastasis is started first).
        nice: niceness added to the worker processes (the app's first start passes 10, so
            that the server draws its first page before the generation gets the CPU).
    """
    out = Path(out)
    if size < 1024:
        raise ValueError("demo slides need a size of at least 1024 px")
    (out / "slides").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    layout = cohort_layout(n_slides, seed)
    plans = [plan_slide(name, label, split, size, (seed, i)) for i, (name, label, split) in enumerate(layout)]
    if splits is not None:
        plans = [plan for plan in plans if plan.split in splits]
        layout = [row for row in layout if row[2] in splits]
    marker = out / GENERATING
    what = f"n_slides={n_slides} seed={seed} size={size} splits={sorted(splits) if splits is not None else 'all'}\n"
    resuming = marker.is_file() and marker.read_text() == what
    with atomic_write(marker, "w") as handle:
        handle.write(what)
    written = {p.name for p in plans if resuming and (out / "slides" / f"{p.name}.tiff").is_file()}
    jobs = [(plan, str(out)) for plan in _first_start_order(plans) if plan.name not in written]
    workers = workers or min(max(len(jobs), 1), os.cpu_count() or 1)
    started = time.perf_counter()
    cohort = out / "cohort.csv"
    total = len(plans)

    def finished(name: str) -> None:
        written.add(name)
        _write_table(cohort, [row for row in layout if row[0] in written])
        if on_slide:
            on_slide(name)
        if progress:
            progress(len(written), total)

    if progress:
        progress(len(written), total)
    if workers > 1 and len(jobs) > 1:
        with multiprocessing.get_context("spawn").Pool(workers, _lower_priority, (nice,)) as pool:
            # The first slide (a tumor slide) with every worker on its strips, so that it is also
            # the first written; then one slide per worker.
            finished(_write_one(jobs[0], pool=pool))
            for name in pool.imap_unordered(_write_one, jobs[1:]):
                finished(name)
    else:
        for job in jobs:
            finished(_write_one(job))
    _write_table(cohort, layout)
    with atomic_write(out / "README.txt", "w") as handle:
        handle.write(
            f"{SYNTHETIC_NOTE}.\nSynthetic demo cohort of {len(layout)} slides (seed {seed}, {size} px wide, "
            f"{DEMO_MPP} um/px), made by `python -m core demo-data`.\n"
        )
    marker.unlink()
    log.info("demo cohort of %d slides written in %.1f s", len(layout), time.perf_counter() - started)
    return cohort
