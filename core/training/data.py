"""Training data: the cohort table, each slide's tissue grid with inner-square labels, and patch reading.

Each slide is indexed once per run (tissue grid + labels, kept in memory); patches are then read
on demand by a pool of threads with a bounded number of batches in flight, as in inference
(OpenSlide releases the GIL while it decodes, and its handles are thread-safe).
"""

from __future__ import annotations

import csv
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.annotations import load_tumors
from core.errors import PathologyError
from core.inference import read_patches
from core.slide_io import open_slide
from core.tiling import TilingParams, label_grid, tile_grid
from core.training.config import TrainingError

__all__ = [
    "CohortSlide",
    "SlidePatches",
    "read_cohort_table",
    "index_slides",
    "read_samples",
    "read_slide_patches",
    "prefetch",
]

log = logging.getLogger(__name__)

SLIDE_SUFFIXES = (".tiff", ".tif", ".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".svslide", ".bif", ".dcm", ".czi", ".png", ".jpg", ".jpeg")
LABELS = {"tumor": 1, "tumour": 1, "1": 1, "normal": 0, "0": 0}


@dataclass(frozen=True)
class CohortSlide:
    """One row of the cohort: slide name, label (1 tumor, 0 normal), split and files."""

    name: str
    label: int
    split: str
    path: Path
    annotations: Path | None


@dataclass(frozen=True)
class SlidePatches:
    """A slide's tissue patches: level-0 top-left corners, level-0 side and inner-square labels."""

    slide: CohortSlide
    x: np.ndarray
    y: np.ndarray
    size0: int
    labels: np.ndarray  # bool, True = the inner square touches a tumor

    def __len__(self) -> int:
        return int(self.x.size)

    @property
    def name(self) -> str:
        return self.slide.name


def _find_slide(folder: Path, name: str) -> Path | None:
    for suffix in SLIDE_SUFFIXES:
        for candidate in (folder / "slides" / f"{name}{suffix}", folder / f"{name}{suffix}"):
            if candidate.is_file():
                return candidate
    return None


def _find_annotations(folder: Path, name: str) -> Path | None:
    for suffix in (".geojson", ".json", ".xml"):
        candidate = folder / "annotations" / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_cohort_table(path: str | os.PathLike) -> list[CohortSlide]:
    """Return the slides of a ``cohort.csv`` (``slide,label,split[,path]``) with their files.

    Slides are looked up as ``slides/<slide>.<ext>`` beside the table (or the ``path`` column,
    relative to the table's folder); annotations as ``annotations/<slide>.geojson`` or ``.xml``.

    Raises:
        TrainingError: missing file or column, a bad label, a slide file not found, or a tumor
            slide without annotations (its patches could not be labelled).
    """
    table = Path(path)
    if not table.is_file():
        raise TrainingError(f"cohort file not found: {table}")
    folder = table.parent
    try:
        with open(table, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TrainingError(f"cannot read cohort file {table}: {exc}") from None
    if not rows or not {"slide", "label", "split"} <= {(k or "").strip().lower() for k in rows[0]}:
        raise TrainingError(f"{table}: a training cohort needs the columns slide,label,split (and rows)")
    slides = []
    for line, raw in enumerate(rows, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
        name, label_text, split = row["slide"], row["label"].lower(), row["split"].lower()
        if label_text not in LABELS:
            raise TrainingError(f"{table}, line {line}: label {row['label']!r} is not tumor or normal")
        if row.get("path"):
            slide_path = (folder / row["path"]).resolve()
            if not slide_path.is_file():
                raise TrainingError(f"{table}, line {line}: slide file {slide_path} not found")
        else:
            slide_path = _find_slide(folder, name)
            if slide_path is None:
                raise TrainingError(f"{table}, line {line}: no slide file for {name!r} in {folder / 'slides'}")
        annotations = _find_annotations(folder, name)
        label = LABELS[label_text]
        if label == 1 and annotations is None and split in ("train", "val"):
            raise TrainingError(
                f"{name} is labelled tumor but has no annotations/{name}.geojson or .xml: its patches cannot be labelled"
            )
        slides.append(CohortSlide(name, label, split, slide_path, annotations))
    return slides


# Slide indexes of this process, keyed by the files' identity and the tiling: a second run on the
# same cohort (resume, a notebook, the tests) skips the tissue masks. Entries are small arrays.
_INDEX_CACHE: OrderedDict[tuple, SlidePatches] = OrderedDict()
_INDEX_CACHE_SIZE = 1024
_index_lock = threading.Lock()


def _file_key(path: Path | None) -> tuple:
    if path is None:
        return ()
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _index_one(slide: CohortSlide, tiling: TilingParams, inner_fraction: float) -> SlidePatches:
    key = (_file_key(slide.path), _file_key(slide.annotations), tiling, float(inner_fraction))
    with _index_lock:
        cached = _INDEX_CACHE.get(key)
    if cached is not None:
        # The cohort row (name, label, split) may differ between tables that share a slide.
        return SlidePatches(slide, cached.x, cached.y, cached.size0, cached.labels)
    entry = _compute_index(slide, tiling, inner_fraction)
    with _index_lock:
        _INDEX_CACHE[key] = entry
        while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
            _INDEX_CACHE.popitem(last=False)
    return entry


def _compute_index(slide: CohortSlide, tiling: TilingParams, inner_fraction: float) -> SlidePatches:
    handle = open_slide(slide.path)
    grid = tile_grid(handle, tiling)
    tumors = load_tumors(slide.annotations) if slide.annotations is not None else []
    labels = label_grid(grid, tumors, inner_fraction)
    return SlidePatches(slide, grid.x, grid.y, grid.size0, labels)


def index_slides(
    slides: Sequence[CohortSlide], tiling: TilingParams, inner_fraction: float, workers: int = 2
) -> list[SlidePatches]:
    """Return each slide's tissue grid and inner-square labels, in the order given (threads)."""
    if not slides:
        return []
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="slide-index") as pool:
        futures = [pool.submit(_index_one, s, tiling, inner_fraction) for s in slides]
        result = []
        for slide, future in zip(slides, futures):
            try:
                result.append(future.result())
            except PathologyError as exc:
                raise TrainingError(f"cannot index slide {slide.name}: {exc}") from None
    return result


def read_samples(
    index: Sequence[SlidePatches], slide: np.ndarray, patch: np.ndarray, level: int, patch_size: int
) -> np.ndarray:
    """Return the patches (slide[k], patch[k]) as uint8 (N, patch_size, patch_size, 3) RGB."""
    out = np.empty((len(slide), patch_size, patch_size, 3), dtype=np.uint8)
    for k, (s, p) in enumerate(zip(slide.tolist(), patch.tolist())):
        entry = index[s]
        handle = open_slide(entry.slide.path)
        out[k] = handle.read_region((int(entry.x[p]), int(entry.y[p])), level, (patch_size, patch_size))
    return out


def read_slide_patches(entry: SlidePatches, rows: np.ndarray, level: int, patch_size: int) -> np.ndarray:
    """Return the patches ``rows`` (sorted indices) of one slide; side-by-side ones are read together."""
    handle = open_slide(entry.slide.path)
    return read_patches(handle, entry.x[rows], entry.y[rows], level, patch_size, entry.size0)


def prefetch(jobs: Sequence[Callable[[], np.ndarray]], workers: int, ahead: int | None = None) -> Iterator[np.ndarray]:
    """Yield ``job()`` for each job, in order, computed by ``workers`` threads ahead of the consumer.

    At most ``ahead`` (default workers + 1) results are in flight: memory stays bounded.
    """
    if not jobs:
        return
    ahead = max(1, ahead or workers + 1)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="patch-reader") as pool:
        pending: dict[int, Future] = {i: pool.submit(jobs[i]) for i in range(min(ahead, len(jobs)))}
        try:
            for i in range(len(jobs)):
                result = pending.pop(i).result()
                if i + ahead < len(jobs):
                    pending[i + ahead] = pool.submit(jobs[i + ahead])
                yield result
        finally:
            for future in pending.values():
                future.cancel()
