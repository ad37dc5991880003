"""Whole-slide prediction: the tissue grid through the model, in batches, into the store.

Patches are read by a pool of threads while the model runs on the previous batch (OpenSlide
releases the GIL while it decodes, and its handles are thread-safe); horizontally adjacent
patches of a batch are read as one region, so each JPEG tile is decoded once. Results are
committed to the SQLite store batch by batch: a run stopped at any point (kill -9 included)
resumes where it stopped, and a finished run is returned from the store without recomputing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from core.device import autocast_for, prepare_model, resolve_device, resolve_precision
from core.errors import InferenceError, PathologyError
from core.model import PatchClassifier, model_id_of
from core.slide_io import Slide, open_slide
from core.store import PatchPredictions, ResultStore, RunRecord
from core.tiling import PatchGrid, TilingParams, read_patches, read_plan, slide_resolution, tile_grid

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

DEFAULT_BATCH_SIZE = 32
DEFAULT_WORKERS = 2



@dataclass(frozen=True)
class SlideResult:
    """The outcome of ``predict_slide``: the stored run and its patch predictions."""

    slide: str
    run: RunRecord
    predictions: PatchPredictions
    reused: bool  # True when every patch came from the store (nothing computed)
    computed: int  # patches computed by this call
    seconds: float


def to_tensor(patches: np.ndarray, device: torch.device) -> torch.Tensor:
    """Return float (N, 3, H, W) in [0, 1] on ``device``, channels_last, from uint8 NHWC patches."""
    batch = torch.from_numpy(patches).permute(0, 3, 1, 2)  # a channels_last view, no copy
    if device.type == "cuda":
        batch = batch.pin_memory().to(device, non_blocking=True)
    return batch.float().div_(255.0)


def run_params(tiling: TilingParams, slide_mpp: float | None = None) -> dict:
    """Return the parameters that identify a prediction run besides slide and model.

    ``slide_mpp`` is the slide's microns per level-0 pixel when the user gave it (not read
    from the slide): with resolution-based tiling it decides which pixels a patch covers, so
    a run made with another given value is another run.
    """
    params: dict = {"tiling": tiling.to_dict()}
    if tiling.by_resolution and slide_mpp is not None:
        params["slide_mpp"] = float(slide_mpp)
    return params


def model_tiling(metadata: dict, *, level: int | None = None, patch_size: int | None = None, **overrides) -> TilingParams:
    """Return the tiling a checkpoint asks for: by its recorded resolution (``mpp``), else its level.

    Args:
        metadata: the checkpoint's metadata (``patch_size``, ``mpp`` and/or ``level``).
        level: cut by this pyramid level instead (the fallback for slides without resolution).
        patch_size: another patch side (default the checkpoint's).
        overrides: ``stride``, ``tissue_threshold``.
    """
    size = int(patch_size or metadata.get("patch_size", 512))
    mpp = metadata.get("mpp")
    if level is None and mpp:
        return TilingParams(patch_size=size, mpp=float(mpp), **overrides)
    return TilingParams(level=int(level if level is not None else metadata.get("level", 0) or 0), patch_size=size, **overrides)


def adopt_level_run(store: ResultStore, slide_id: int, model_id: str, slide: Slide, tiling: TilingParams, slide_mpp: float | None = None) -> RunRecord | None:
    """Re-key a level-based run that read exactly the patches of a resolution-based tiling; return it or None.

    A store written before the checkpoint recorded its resolution holds its runs under
    level-based params. When, on this slide, the resolution-based plan reads the same level
    with no resize and the same grid, those runs are the same patches: their params are
    rewritten to the new ones (a migration, nothing recomputed, nothing lost).
    """
    if not tiling.by_resolution or slide_mpp is not None:
        return None
    try:
        plan = read_plan(slide, tiling)
    except PathologyError:
        return None
    legacy = TilingParams(level=plan.level, patch_size=tiling.patch_size, stride=tiling.stride, tissue_threshold=tiling.tissue_threshold)
    old_plan = read_plan(slide, legacy)
    same = (old_plan.level, old_plan.read_size, old_plan.size0, old_plan.step0) == (plan.level, plan.read_size, plan.size0, plan.step0)
    if plan.resized or not same:
        return None
    old = store.find_run(slide_id, model_id, run_params(legacy))
    if old is None or store.find_run(slide_id, model_id, run_params(tiling)) is not None:
        return None
    log.info("%s: run %d (level %d) re-keyed to %s um/px patches", slide.name, old.id, plan.level, tiling.mpp)
    return store.rekey_run(old.id, run_params(tiling))


class PredictionRunner:
    """Holds a prepared model and predicts slides into a store.

    Args:
        model: the classifier; it is put in eval mode on ``device`` (shared use is safe:
            inference never changes its weights).
        model_id: the checkpoint's id (``model_id_of(model)`` if None).
        metadata: checkpoint metadata, recorded in the store with the model.
        device: "auto" | "cpu" | "cuda" | "cuda:N".
        precision: "auto" | "fp32" | "bf16" | "fp16"; "auto" is bf16 where the hardware has
            it (about 4x faster than fp32 on a bf16 CPU, probabilities within ~1e-2).
    """

    def __init__(
        self,
        model: PatchClassifier,
        *,
        model_id: str | None = None,
        metadata: dict | None = None,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        workers: int = DEFAULT_WORKERS,
        commit_rows: int = 512,
        commit_seconds: float = 1.0,
    ):
        self.device = resolve_device(device)
        # Results are committed in transactions of up to commit_rows patches or commit_seconds
        # of work, whichever comes first: a kill loses at most that much, and small batches
        # of a fast model do not pay one SQLite commit each.
        self.commit_rows = max(1, int(commit_rows))
        self.commit_seconds = float(commit_seconds)
        self.precision = resolve_precision(self.device, precision)
        self.model = prepare_model(model, self.device, self.precision)
        self.model_id = model_id or model_id_of(model)
        self.metadata = dict(metadata or {})
        self.batch_size = max(1, int(batch_size))
        self.workers = max(1, int(workers))
        self.wait_seconds = 0.5  # poll interval while another process owns the run

    def forward(self, patches: np.ndarray) -> np.ndarray:
        """Return F(I) in [0, 1] (float32, N) for uint8 NHWC patches."""
        return self.forward_tensor(to_tensor(patches, self.device))

    @torch.inference_mode()
    def forward_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """Return F(I) in [0, 1] (float32, N) for a float (N, 3, H, W) batch in [0, 1] on the device."""
        with autocast_for(self.device, self.precision):
            logits = self.model(batch)
        return torch.sigmoid(logits.float()).cpu().numpy()

    def predict_slide(
        self,
        path: str | os.PathLike,
        store: ResultStore,
        tiling: TilingParams | None = None,
        *,
        progress: Progress | None = None,
        recompute: bool = False,
        slide_mpp: float | None = None,
    ) -> SlideResult:
        """Predict every tissue patch of a slide into ``store`` and return the run.

        A complete run for the same slide, model and tiling is returned as stored; a run
        left incomplete (interrupted) or failed resumes with only its missing patches.
        ``progress(done, total)`` is called after each commit (``done`` = patches stored).
        ``tiling`` defaults to the checkpoint's (:func:`model_tiling`); ``slide_mpp`` is the
        slide's microns per level-0 pixel given by the user (None: its metadata).

        Raises:
            SlideError: the slide cannot be read or cut (e.g. no resolution metadata for a
                resolution-based tiling); the run is marked failed with that reason.
            InferenceError: anything else failed; the run is marked failed.
        """
        started = time.perf_counter()
        tiling = tiling or model_tiling(self.metadata)
        slide = open_slide(path)
        record = store.register_slide(path, width=slide.dimensions[0], height=slide.dimensions[1], mpp=slide_resolution(slide, slide_mpp))
        store.register_model(self.model_id, arch=getattr(self.model, "arch", "unknown"), metadata=self.metadata)
        adopt_level_run(store, record.id, self.model_id, slide, tiling, slide_mpp)
        run = store.get_or_create_run(record.id, self.model_id, run_params(tiling, slide_mpp))
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # One owner computes a run: another process on the same slide waits for it, then
        # reuses its result (or takes the run over when the owner's lease expires).
        while not (run.status == "complete" and not recompute):
            if store.claim_run(run.id, owner):
                break
            if progress:
                progress(run.n_done, run.n_total or run.n_done)
            time.sleep(self.wait_seconds)
            run = store.run(run.id)
        else:
            if progress:
                progress(run.n_done, run.n_done)
            return SlideResult(slide.name, run, store.read_predictions(run.id), True, 0, time.perf_counter() - started)
        try:
            return self._compute_run(slide, store, run, tiling, owner, progress, recompute, slide_mpp, started)
        finally:
            store.release_run(run.id, owner)

    def _compute_run(
        self, slide: Slide, store: ResultStore, run: RunRecord, tiling: TilingParams, owner: str,
        progress: Progress | None, recompute: bool, slide_mpp: float | None, started: float,
    ) -> SlideResult:
        """Compute (or finish) a run this call owns; see :meth:`predict_slide`."""
        if recompute:
            store.reset_run(run.id)
            run = store.run(run.id)
        elif run.status == "failed":
            run = store.resume_run(run.id)  # a retry: what it stored is kept
        if run.status == "complete":  # finished by the previous owner while we waited
            if progress:
                progress(run.n_done, run.n_done)
            return SlideResult(slide.name, run, store.read_predictions(run.id), True, 0, time.perf_counter() - started)
        try:
            # Inside the try: a slide the tiling cannot cut (no resolution, no such level,
            # unreadable tissue) ends as a failed run with its reason, never 'running' forever.
            grid = tile_grid(slide, tiling, slide_mpp=slide_mpp)
            store.set_total(run.id, len(grid))
            done = store.done_locations(run.id)
            if done:
                pending = np.array([(int(x), int(y)) not in done for x, y in zip(grid.x, grid.y)], dtype=bool)
                log.info("%s: resuming run %d, %d of %d patches already stored", slide.name, run.id, len(done), len(grid))
                todo = grid.subset(pending)
            else:
                todo = grid
            computed = self._predict_grid(slide, todo, store, run.id, len(grid) - len(todo), len(grid), progress, owner)
            store.finish_run(run.id)
        except BaseException as exc:
            message = str(exc) if isinstance(exc, PathologyError) else f"{type(exc).__name__}: {exc}"
            store.fail_run(run.id, message)
            if isinstance(exc, PathologyError):
                raise
            if isinstance(exc, Exception):
                raise InferenceError(f"prediction over {slide.name} failed: {message}") from exc
            raise
        run = store.run(run.id)
        return SlideResult(slide.name, run, store.read_predictions(run.id), computed == 0, computed, time.perf_counter() - started)

    def _predict_grid(
        self, slide: Slide, grid: PatchGrid, store: ResultStore, run_id: int, already: int, total: int, progress: Progress | None,
        owner: str | None = None,
    ) -> int:
        """Read, forward and store ``grid`` batch by batch; return the number of patches computed."""
        plan, size0 = grid.plan, grid.size0
        starts = list(range(0, len(grid), self.batch_size))
        if progress:
            progress(already, total)
        if not starts:
            return 0
        done = already
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="patch-reader") as pool:

            def submit(i: int) -> Future:
                sl = slice(starts[i], starts[i] + self.batch_size)
                return pool.submit(read_patches, slide, grid.x[sl], grid.y[sl], plan)

            # Keep a bounded number of batches in flight: memory does not grow with the slide.
            ahead = self.workers + 1
            pending = {i: submit(i) for i in range(min(ahead, len(starts)))}
            buffered: list[np.ndarray] = []
            first = 0  # grid index of the first uncommitted patch
            last_commit = time.perf_counter()
            for i, start in enumerate(starts):
                patches = pending.pop(i).result()
                if i + ahead < len(starts):
                    pending[i + ahead] = submit(i + ahead)
                buffered.append(self.forward(patches))
                end = start + len(patches)
                if end - first >= self.commit_rows or time.perf_counter() - last_commit >= self.commit_seconds or end == len(grid):
                    sl = slice(first, end)
                    n = end - first
                    store.add_predictions(run_id, grid.x[sl], grid.y[sl], np.full(n, size0), np.full(n, size0), np.concatenate(buffered))
                    if owner is not None:
                        store.renew_lease(run_id, owner)  # the heartbeat: this run is alive
                    done += n
                    first, buffered, last_commit = end, [], time.perf_counter()
                    if progress:
                        progress(done, total)
        return len(grid)


def predict_slide(
    path: str | os.PathLike,
    model: PatchClassifier,
    store: ResultStore,
    tiling: TilingParams | None = None,
    *,
    model_id: str | None = None,
    metadata: dict | None = None,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = DEFAULT_WORKERS,
    commit_rows: int = 512,
    progress: Progress | None = None,
    recompute: bool = False,
    slide_mpp: float | None = None,
) -> SlideResult:
    """Predict every tissue patch of one slide into ``store``; see ``PredictionRunner``.

    Returns the stored run and its predictions: x, y, width, height in level-0 pixels,
    prob = F(I) in [0, 1].
    """
    runner = PredictionRunner(
        model, model_id=model_id, metadata=metadata, device=device, precision=precision, batch_size=batch_size,
        workers=workers, commit_rows=commit_rows,
    )
    return runner.predict_slide(path, store, tiling, progress=progress, recompute=recompute, slide_mpp=slide_mpp)


