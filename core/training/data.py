"""Training data: the cohort table, each slide's tissue grid with inner-square labels, and patch reading.

Each slide is indexed once per run (tissue grid + labels, kept in memory); patches are then read
on demand by a pool of threads with a bounded number of batches in flight, as in inference
(OpenSlide releases the GIL while it decodes, and its handles are thread-safe).
"""

from __future__ import annotations

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
from core.cohort import ANNOTATION_SUFFIXES, read_cohort_rows, slides_dir
from core.errors import PathologyError
from core.slide_io import open_slide
from core.tiling import ReadPlan, TilingParams, label_grid, read_patches, tile_grid
from core.errors import TrainingError

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

@dataclass(frozen=True)
class CohortSlide:
    """One row of the cohort: slide name, label (1 tumor, 0 normal), split and files."""

    name: str
    label: int
    split: str
    path: Path
    annotations: Path | None
    mpp: float | None = None  # microns per level-0 pixel from the cohort table (None: the slide's metadata)


@dataclass(frozen=True)
class SlidePatches:
    """A slide's tissue patches: level-0 top-left corners, level-0 side and inner-square labels."""

    slide: CohortSlide
    x: np.ndarray
    y: np.ndarray
    plan: ReadPlan  # how the slide is read: level, region size, resize, level-0 side
    labels: np.ndarray  # bool, True = the inner square touches a tumor

    @property
    def size0(self) -> int:
        """Side of a patch in level-0 pixels."""
        return self.plan.size0

    def __len__(self) -> int:
        return int(self.x.size)

    @property
    def name(self) -> str:
        return self.slide.name


def read_cohort_table(path: str | os.PathLike) -> list[CohortSlide]:
    """Return the slides of a training ``cohort.csv`` (``slide,label,split[,mpp][,path]``) with their files.

    The table, its labels and the lookup of slide and annotation files are
    :mod:`core.cohort`'s; training adds its own needs: a split for every slide, a label for
    every slide, every slide file present, and annotations for tumor slides of the train and
    val splits (their patches could not be labelled otherwise).

    Raises:
        CohortError: the table is malformed (see :func:`core.cohort.read_cohort_rows`).
        TrainingError: no split column, a slide without label or file, or a train/val tumor
            slide without annotations.
    """
    table = Path(path)
    rows = read_cohort_rows(table)
    slides = []
    for row in rows:
        if row.split is None:
            raise TrainingError(f"{table}: a training cohort needs a split (train, val, test) for every slide; {row.slide!r} has none")
        if row.label is None:
            raise TrainingError(f"{table}: slide {row.slide!r} has no label; training needs tumor or normal for every slide")
        if row.path is None:
            raise TrainingError(f"{table}: no slide file for {row.slide!r} in {slides_dir(table.parent)}")
        split = row.split.lower()
        label = 1 if row.label == "tumor" else 0
        if label == 1 and row.annotations is None and split in ("train", "val"):
            raise TrainingError(
                f"{row.slide} is labelled tumor but has no annotations/{row.slide}"
                f"{{{','.join(ANNOTATION_SUFFIXES)}}}: its patches cannot be labelled"
            )
        slides.append(CohortSlide(row.slide, label, split, row.path, row.annotations, row.mpp))
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
    key = (_file_key(slide.path), _file_key(slide.annotations), slide.mpp, tiling, float(inner_fraction))
    with _index_lock:
        cached = _INDEX_CACHE.get(key)
    if cached is not None:
        # The cohort row (name, label, split) may differ between tables that share a slide.
        return SlidePatches(slide, cached.x, cached.y, cached.plan, cached.labels)
    entry = _compute_index(slide, tiling, inner_fraction)
    with _index_lock:
        _INDEX_CACHE[key] = entry
        while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
            _INDEX_CACHE.popitem(last=False)
    return entry


def _compute_index(slide: CohortSlide, tiling: TilingParams, inner_fraction: float) -> SlidePatches:
    handle = open_slide(slide.path)
    grid = tile_grid(handle, tiling, slide_mpp=slide.mpp)
    tumors = load_tumors(slide.annotations) if slide.annotations is not None else []
    labels = label_grid(grid, tumors, inner_fraction)
    return SlidePatches(slide, grid.x, grid.y, grid.plan, labels)


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


def read_samples(index: Sequence[SlidePatches], slide: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """Return the patches (slide[k], patch[k]) as uint8 (N, patch_size, patch_size, 3) RGB, each read by its slide's plan."""
    size = index[0].plan.patch_size if len(index) else 0
    out = np.empty((len(slide), size, size, 3), dtype=np.uint8)
    for k, (s, p) in enumerate(zip(slide.tolist(), patch.tolist())):
        entry = index[s]
        out[k] = read_patches(open_slide(entry.slide.path), entry.x[p : p + 1], entry.y[p : p + 1], entry.plan)[0]
    return out


def read_slide_patches(entry: SlidePatches, rows: np.ndarray) -> np.ndarray:
    """Return the patches ``rows`` (sorted indices) of one slide; side-by-side ones are read together."""
    return read_patches(open_slide(entry.slide.path), entry.x[rows], entry.y[rows], entry.plan)


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
