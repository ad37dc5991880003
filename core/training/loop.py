"""The training loop: three-step samples, augmented on the fly, RMSprop on binary cross-entropy.

One epoch = ``samples_per_epoch`` three-step draws (split across torchrun ranks), read by worker
threads while the model trains on the previous batch; then every validation patch (or a fixed
capped subset) gives the validation loss and ROC-AUC, which drive the recipe's schedule
(halve the rate, stop early, keep the best). Files in the run folder, written by rank 0 only:

- ``best.pt``: the epoch with the best validation AUC (``core.model`` checkpoint format).
- ``last.pt``: the latest epoch, same format.
- ``last-state.pt``: everything ``resume`` needs (weights, optimizer, schedule, history, epoch);
  plain tensors and numbers, readable with ``torch.load(weights_only=True)``.
- ``metrics.csv``: one row per epoch: epoch,train_loss,val_loss,val_auc,lr,seconds.
- ``summary.json``: the outcome (best epoch and AUC, test slide AUC, seconds, command).

Reproducibility: with a seed, a CPU run is repeatable: weights are initialised under
``torch.manual_seed(seed)``, the samples of epoch e on rank r come from
``numpy.random.default_rng([seed, e, r])`` and the augmentation from a torch generator seeded
the same way, so a resumed run draws exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.device import autocast_for, resolve_precision
from core.fileio import atomic_write
from core.inference import to_tensor
from core.model import atomic_torch_save, build_model, load_checkpoint, save_checkpoint
from core.tiling import TilingParams
from core.training.augment import ColorJitterRanges, augment_batch
from core.training.config import IDENTITY_FIELDS, TrainConfig, TrainingError
from core.training.data import (
    index_slides,
    prefetch,
    read_cohort_table,
    read_samples,
    read_slide_patches,
)
from core.training.distributed import (
    DistContext,
    all_gather_arrays,
    all_gather_objects,
    all_mean,
    broadcast_flag,
    broadcast_object,
    init_distributed,
)
from core.training.evaluate import (
    bce_from_logits,
    binary_auc,
    slide_auc,
    slide_max_scores,
)
from core.training.hard_negatives import (
    HardPool,
    hard_pool,
    mix_hard_negatives,
    train_negatives,
)
from core.training.sampler import ThreeStepSampler
from core.training.schedule import RecipeSchedule

__all__ = ["METRICS_COLUMNS", "STATE_FORMAT", "EpochMetrics", "TrainResult", "fetch_state", "load_state", "train", "train_precision"]

log = logging.getLogger(__name__)

METRICS_COLUMNS = ("epoch", "train_loss", "val_loss", "val_auc", "lr", "seconds")
STATE_FORMAT = "pathology-explorer/train-state"
STATE_VERSION = 1
RECIPE = (
    "three-step sampling (label, slide with that label, patch); random vertical/horizontal flips and "
    "per-patch colour jitter; binary cross-entropy on the logistic output; RMSprop (rho {rho}, momentum "
    "{momentum}, initial lr {lr:g}); lr x{lr_factor:g} after {lr_patience} epochs without val-loss "
    "improvement; stop after {stop_patience} epochs without val ROC-AUC improvement; best val AUC kept"
)
HARD_NEGATIVES = (
    "; hard-negative mining after epoch {hard_negative_after}: before each later epoch the train split's normal "
    "patches are scored and a normal draw is, with probability {hard_negatives:g}, one of the highest-scoring "
    "{hard_negative_top:.0%} of them"
)


def recipe_text(config: TrainConfig) -> str:
    """Return the recipe of a run in words, as recorded in its checkpoints (hard-negative mining when on)."""
    values = asdict(config)
    return RECIPE.format(**values) + (HARD_NEGATIVES.format(**values) if config.hard_negatives > 0 else "")

Progress = Callable[[int, int], None]


def validation_subset(labels: np.ndarray, cap: int) -> np.ndarray:
    """Return the sorted indices of at most ``cap`` validation patches, drawn per label in proportion.

    Stratified so that a val split whose tumour is small (a few patches among thousands) keeps
    at least one tumour patch, and a ROC-AUC; the same subset every epoch and for every training
    seed (a fixed generator), so validation numbers compare across runs.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(20240515)
    positive, negative = np.flatnonzero(labels == 1), np.flatnonzero(labels != 1)
    if labels.size <= cap:
        return np.arange(labels.size)
    n_positive = round(cap * positive.size / labels.size)
    n_positive = min(positive.size, max(n_positive, 1 if positive.size else 0), cap - min(1, negative.size))
    n_negative = min(negative.size, cap - n_positive)
    n_positive = min(positive.size, cap - n_negative)
    chosen = [rng.choice(positive, n_positive, replace=False), rng.choice(negative, n_negative, replace=False)]
    return np.sort(np.concatenate(chosen))


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch's numbers (a row of metrics.csv, plus the schedule's decisions)."""

    epoch: int
    train_loss: float
    val_loss: float
    val_auc: float
    lr: float  # the rate used during this epoch
    seconds: float
    best: bool = False
    lr_halved: bool = False

    def row(self) -> list:
        return [self.epoch, f"{self.train_loss:.6f}", f"{self.val_loss:.6f}", f"{self.val_auc:.6f}", f"{self.lr:.6g}", f"{self.seconds:.2f}"]


@dataclass(frozen=True)
class TrainResult:
    """The outcome of ``train``."""

    out: Path
    best_path: Path
    last_path: Path
    epochs: int  # epochs done, all sessions together
    best_epoch: int
    best_val_auc: float
    test_slide_auc: float | None
    seconds: float  # wall time of training, all sessions together
    stopped_early: bool
    model_id: str  # of best.pt
    history: list[EpochMetrics] = field(default_factory=list)


def train_precision(device: torch.device, precision: str) -> str:
    """Return the training precision: ``auto`` is bf16 (else fp16) on CUDA and fp32 on CPU.

    fp32 on CPU by default because bf16 autocast there changes results with the CPU model (with
    native bf16, as on this project's AVX512-BF16 machines, it trains ~1.9x faster but the run is
    then only repeatable on CPUs of the same kind); ask for ``bf16`` explicitly to trade that.
    """
    precision = str(precision).lower()
    if device.type != "cuda":
        if precision == "fp16":
            raise TrainingError("fp16 training needs a CUDA GPU (loss scaling); use --precision bf16 or fp32 on CPU")
        return "fp32" if precision == "auto" else resolve_precision(device, precision)
    return resolve_precision(device, precision)


def _nan_to_none(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_write(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def write_metrics(path: Path, history: list[EpochMetrics]) -> None:
    """Write metrics.csv (epoch,train_loss,val_loss,val_auc,lr,seconds) from the history, atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(METRICS_COLUMNS)
    for m in history:
        writer.writerow(m.row())
    _atomic_write_text(path, buffer.getvalue())


def load_state(out: Path) -> dict:
    """Return the resume state of a run folder (``last-state.pt``), read as data only.

    Raises:
        TrainingError: no state, or not a training state of this format.
    """
    path = out / "last-state.pt"
    if not path.is_file():
        raise TrainingError(f"nothing to resume in {out}: {path.name} not found")
    return _parse_state(path.read_bytes(), path)


def _parse_state(data: bytes, path: Path) -> dict:
    """Return the training state in ``data`` (the bytes of ``path``), loaded with ``weights_only=True``."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated / foreign file: one clear line
        raise TrainingError(f"{path} cannot be read as a training state ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
        raise TrainingError(f"{path} is not a training state of this program (format {STATE_FORMAT} v{STATE_VERSION})")
    return state


#: The files of a run folder that a resumed run continues from (copied to rank 0's machine when
#: another machine holds the newest state).
RUN_FILES = ("last-state.pt", "best.pt", "last.pt", "metrics.csv", "summary.json")


def fetch_state(ctx: DistContext, out: Path) -> dict:
    """Return the resume state of the run folder ``out`` on every rank, read from one machine's disk.

    Without torchrun: :func:`load_state`. Under torchrun each rank looks for ``out/last-state.pt``
    on its own machine; the rank holding the newest epoch (the lowest such rank) reads it and
    broadcasts its bytes over the process group, so the other machines need no copy (and the
    number of machines may differ from the run that wrote it). When that rank is not rank 0,
    its run folder's files are also copied to rank 0's ``out``, where the run continues.

    Raises:
        TrainingError: on every rank: no rank has a state, or the newest one cannot be read.
    """
    out = Path(out)
    if not ctx.distributed:
        return load_state(out)
    path = out / "last-state.pt"
    epoch, problem = -1, None
    if path.is_file():
        try:
            epoch = int(load_state(out)["epoch"])
        except TrainingError as exc:
            problem = str(exc)
    views = all_gather_objects(ctx, (epoch, problem))
    newest = max(e for e, _ in views)
    if newest < 0:
        problems = [p for _, p in views if p]
        raise TrainingError(problems[0] if problems else f"nothing to resume in {out} on any machine: {path.name} not found")
    holder = next(r for r, (e, _) in enumerate(views) if e == newest)
    data = broadcast_object(ctx, path.read_bytes() if ctx.rank == holder else None, src=holder)
    state = _parse_state(data, path)
    if holder != 0:
        files = broadcast_object(
            ctx, {n: (out / n).read_bytes() for n in RUN_FILES if (out / n).is_file()} if ctx.rank == holder else None, src=holder
        )
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
            for name, content in files.items():
                with atomic_write(out / name, "wb") as handle:
                    handle.write(content)
            log.info("resuming from rank %d's copy of %s (epoch %d), copied here", holder, out, newest)
    return state


def _check_resumable(config: TrainConfig, stored: TrainConfig) -> None:
    def norm(name: str, value):
        return str(Path(value).resolve()) if name == "cohort" and value else value

    changed = [
        f"{name} {getattr(stored, name)!r} -> {getattr(config, name)!r}"
        for name in IDENTITY_FIELDS
        if norm(name, getattr(config, name)) != norm(name, getattr(stored, name))
    ]
    if changed:
        raise TrainingError("cannot resume with other data or model settings: " + "; ".join(changed))


class _Trainer:
    """One run: holds the data index, model, optimizer and schedule; ``run`` does the epochs."""

    def __init__(self, config: TrainConfig, resume: bool, progress: Progress | None, on_epoch, state: dict | None = None) -> None:
        self.started = time.perf_counter()
        self.config = config
        self.progress = progress
        self.on_epoch = on_epoch
        self.out = Path(config.out)
        self.ctx, self.device = init_distributed(config.device)
        self.precision = train_precision(self.device, config.precision)
        self.patch_mpp: float | None = config.mpp
        self.tiling = TilingParams(
            level=config.level, patch_size=config.patch_size, tissue_threshold=config.tissue_threshold, mpp=config.mpp
        )
        self.state = self._initial_state(resume, state)

    # -- set-up ------------------------------------------------------------------------------
    def _initial_state(self, resume: bool, state: dict | None) -> dict | None:
        if resume:
            if state is None:
                state = fetch_state(self.ctx, self.out)
            _check_resumable(self.config, TrainConfig.from_dict(state["config"]))
            return state
        # Rank 0's folder decides (only it writes): every rank raises, or none does.
        taken = (self.out / "last-state.pt").exists() or (self.out / "last.pt").exists()
        if broadcast_flag(self.ctx, self.device, taken):
            raise TrainingError(
                f"{self.out} already holds a training run; pass --resume to continue it or choose another --out"
            )
        return None

    def _load_data(self) -> None:
        cfg = self.config
        slides = read_cohort_table(cfg.cohort)
        train = [s for s in slides if s.split == "train"]
        val = [s for s in slides if s.split == "val"]
        self.test_slides = [s for s in slides if s.split == "test"]
        if not train:
            raise TrainingError(f"{cfg.cohort}: no slide in split 'train'")
        if not val:
            raise TrainingError(f"{cfg.cohort}: no slide in split 'val' (the recipe validates every epoch)")
        index = index_slides(train + val, self.tiling, cfg.inner_fraction, cfg.workers)
        self.train_index, self.val_index = index[: len(train)], index[len(train):]
        # The checkpoint records the resolution its patches were cut at: the asked one, or,
        # cut by level, the one every slide shares (None when they differ or are unknown).
        resolutions = {round(e.plan.mpp, 6) if e.plan.mpp else None for e in index}
        self.patch_mpp = cfg.mpp or (resolutions.pop() if len(resolutions) == 1 else None)
        positives = sum(int(e.labels.sum()) for e in self.train_index)
        total = sum(len(e) for e in self.train_index)
        if positives == 0 or positives == total:
            which = "tumor" if positives == 0 else "normal"
            scale = f"{cfg.mpp:g} um/px" if cfg.mpp else f"level {cfg.level}"
            raise TrainingError(f"the train split has no {which} patch at {scale}, {cfg.patch_size} px: nothing to contrast")
        self.sampler = ThreeStepSampler([e.labels for e in self.train_index], classes=(0, 1))
        self.negatives = train_negatives([e.labels for e in self.train_index])
        self.samples_per_epoch = int(cfg.samples_per_epoch or total)
        self.per_rank = math.ceil(self.samples_per_epoch / self.ctx.world)
        self.steps_per_epoch = math.ceil(self.per_rank / cfg.batch_size)
        self._plan_validation()
        log.info(
            "train: %d slides, %d patches (%d tumor); val: %d slides, %d patches used; %d draws per epoch",
            len(train), total, positives, len(val), self.n_val, self.samples_per_epoch,
        )

    def _plan_validation(self) -> None:
        """Fix the validation patches once: all of them, or a seed-independent subset of the cap."""
        cfg = self.config
        owner = np.concatenate([np.full(len(e), s, dtype=np.int64) for s, e in enumerate(self.val_index)])
        row = np.concatenate([np.arange(len(e), dtype=np.int64) for e in self.val_index])
        labels = np.concatenate([e.labels for e in self.val_index]).astype(np.int64)
        keep = np.arange(owner.size)
        if cfg.val_max_patches is not None and owner.size > cfg.val_max_patches:
            keep = validation_subset(labels, cfg.val_max_patches)
        if labels[keep].min() == labels[keep].max():
            raise TrainingError("the val split needs patches of both labels (tumor and normal) for a ROC-AUC")
        self.n_val = int(keep.size)
        # This rank's share, in global order; global order is grouped by slide.
        mine = keep[self.ctx.rank :: self.ctx.world]
        self.val_ids, self.val_labels = mine, labels[mine]
        chunk = max(1, 2 * cfg.batch_size)
        self.val_jobs = []
        for s in np.unique(owner[mine]):
            rows = row[mine[owner[mine] == s]]
            for start in range(0, rows.size, chunk):
                self.val_jobs.append(
                    lambda e=self.val_index[s], r=rows[start : start + chunk]: read_slide_patches(e, r)
                )

    def _build(self) -> None:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        if self.state is None:
            model = build_model(cfg.arch, pretrained=cfg.pretrained_source, weights=cfg.weights)
        else:  # the stored weights replace any initial ones: nothing to download
            model = build_model(cfg.arch)
        self.schedule = RecipeSchedule(cfg.lr, cfg.lr_patience, cfg.lr_factor, cfg.stop_patience)
        if self.state is not None:
            model.load_state_dict(self.state["model"], strict=True)
        model.to(self.device)
        if self.device.type == "cuda":
            model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
        model.train()
        self.model = model
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(model, device_ids=ids)
        else:
            self.net = model
        self.optimizer = torch.optim.RMSprop(model.parameters(), lr=cfg.lr, alpha=cfg.rho, momentum=cfg.momentum)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.history: list[EpochMetrics] = []
        self.epoch = 0
        self.best_epoch = 0
        self.seconds_before = 0.0
        if self.state is not None:
            self.optimizer.load_state_dict(self.state["optimizer"])
            self.schedule.load_state_dict(self.state["schedule"])
            if self.scaler is not None and self.state.get("scaler"):
                self.scaler.load_state_dict(self.state["scaler"])
            self.epoch = int(self.state["epoch"])
            self.best_epoch = int(self.state["best_epoch"])
            self.seconds_before = float(self.state["seconds"])
            self.history = [EpochMetrics(**m) for m in self.state["history"]]
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule.lr
        self.color = ColorJitterRanges(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)

    # -- epochs ------------------------------------------------------------------------------
    def _epoch_seed(self, epoch: int) -> tuple[np.random.Generator, torch.Generator]:
        words = [self.config.seed, epoch, self.ctx.rank]
        rng = np.random.default_rng(words)
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence(words + [1]).generate_state(1, np.uint64)[0] >> 1))
        return rng, generator

    def _mines(self, epoch: int) -> bool:
        """Return True if ``epoch`` draws from a hard-negative pool (mining on, after its plain epochs)."""
        return self.config.hard_negatives > 0 and epoch > self.config.hard_negative_after

    @torch.no_grad()
    def _hard_pool(self, epoch: int) -> HardPool:
        """Score every normal train patch with the current weights (ranks share the work); return the hard pool."""
        cfg = self.config
        slide, patch = self.negatives
        mine = np.arange(slide.size, dtype=np.int64)[self.ctx.rank :: self.ctx.world]
        chunk = max(1, 2 * cfg.batch_size)
        jobs, ids = [], []
        for s in np.unique(slide[mine]):
            rows = mine[slide[mine] == s]
            for start in range(0, rows.size, chunk):
                part = rows[start : start + chunk]
                jobs.append(lambda e=self.train_index[s], r=patch[part]: read_slide_patches(e, r))
                ids.append(part)
        mine_ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        mine_probs = torch.sigmoid(torch.from_numpy(self._logits(jobs))).numpy()
        all_ids, all_probs = all_gather_arrays(self.ctx, mine_ids, mine_probs)
        prob = np.zeros(slide.size, dtype=np.float64)
        prob[all_ids] = all_probs  # every rank gets the same pool, whatever the world size
        pool = hard_pool(slide, patch, prob, cfg.hard_negative_top)
        log.info(
            "epoch %d: hard negatives: the %d highest-scoring of %d normal train patches (F(I) %.3f-%.3f)",
            epoch, len(pool), slide.size, pool.prob.min(), pool.prob.max(),
        )
        return pool

    def _train_epoch(self, epoch: int, done_before: int, total_steps: int) -> float:
        cfg = self.config
        pool = self._hard_pool(epoch) if self._mines(epoch) else None
        rng, generator = self._epoch_seed(epoch)
        samples = self.sampler.sample(self.per_rank, rng)
        if pool is not None:
            samples = mix_hard_negatives(samples, pool, cfg.hard_negatives, rng)
        batches = [samples[i : i + cfg.batch_size] for i in range(0, len(samples), cfg.batch_size)]
        jobs = [lambda b=b: read_samples(self.train_index, b.slide, b.patch) for b in batches]
        self.net.train()
        loss_sum, count = 0.0, 0
        for step, (batch, patches) in enumerate(zip(batches, prefetch(jobs, cfg.workers)), start=1):
            x = augment_batch(to_tensor(patches, self.device), generator, flips=cfg.flips, color=self.color)
            y = torch.from_numpy(batch.label.astype(np.float32)).to(self.device)
            with autocast_for(self.device, self.precision):
                logits = self.net(x)
            loss = F.binary_cross_entropy_with_logits(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingError(f"the training loss became {value} at epoch {epoch}, step {step}; lower the learning rate")
            loss_sum += value * len(batch)
            count += len(batch)
            if self.progress is not None:
                self.progress(done_before + step, total_steps)
        return all_mean(self.ctx, self.device, loss_sum, count)

    @torch.no_grad()
    def _logits(self, jobs: list) -> np.ndarray:
        """Return the model's logits (float32) for the patches ``jobs`` read, in their order (eval mode, then back to training)."""
        self.model.eval()
        logits = []
        for patches in prefetch(jobs, self.config.workers):
            with autocast_for(self.device, self.precision):
                out = self.model(to_tensor(patches, self.device))
            logits.append(out.float().cpu().numpy())
        self.model.train()
        return np.concatenate(logits) if logits else np.zeros(0, dtype=np.float32)

    def _validate(self) -> tuple[float, float]:
        mine = self._logits(self.val_jobs)
        ids, labels, values = all_gather_arrays(self.ctx, self.val_ids, self.val_labels, mine)
        order = np.argsort(ids, kind="stable")  # the same order on every rank and for any world size
        labels, values = labels[order], values[order]
        return bce_from_logits(labels, values), binary_auc(labels, values)

    # -- files -------------------------------------------------------------------------------
    def _metadata(self, epoch: int, val_loss: float, val_auc: float) -> dict:
        cfg = self.config
        seconds = self.seconds_before + time.perf_counter() - self.started
        best_auc = self.schedule.best_auc
        meta = {
            "patch_size": cfg.patch_size,
            "level": cfg.level,
            "tiling": self.tiling.to_dict(),
            **({"mpp": self.patch_mpp} if self.patch_mpp else {}),
            "inner_fraction": cfg.inner_fraction,
            "label": cfg.label or f"{cfg.arch} patch classifier trained on {Path(cfg.cohort).parent.name or cfg.cohort}",
            "demo": bool(cfg.demo),
            "training": {
                "epochs": epoch,
                "epoch": epoch,
                "val_loss": _nan_to_none(val_loss),
                "val_auc": _nan_to_none(val_auc),
                "best_epoch": self.best_epoch,
                "best_val_auc": _nan_to_none(best_auc),
                "test_slide_auc": None,
                "seconds": round(seconds, 1),
                "seed": cfg.seed,
                "command": cfg.command,
                "precision": self.precision,
                "device": str(self.device),
                "world_size": self.ctx.world,
                "samples_per_epoch": self.samples_per_epoch,
                "val_patches": self.n_val,
                "torch": torch.__version__,
                "recipe": recipe_text(cfg),
                "config": cfg.to_dict(),
            },
        }
        if cfg.note:
            meta["note"] = cfg.note
        return meta

    def _save_epoch(self, metrics: EpochMetrics) -> None:
        meta = self._metadata(metrics.epoch, metrics.val_loss, metrics.val_auc)
        if metrics.best:
            save_checkpoint(self.out / "best.pt", self.model, meta)
        state = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "epoch": metrics.epoch,
            "best_epoch": self.best_epoch,
            "seconds": meta["training"]["seconds"],
            "config": self.config.to_dict(),
            "model": {k: v.detach().to("cpu").contiguous() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "history": [asdict(m) for m in self.history],
        }
        # The state file alone is enough to resume (weights included): a crash between the
        # writes below never leaves an inconsistent pair.
        atomic_torch_save(state, self.out / "last-state.pt")
        save_checkpoint(self.out / "last.pt", self.model, meta)
        write_metrics(self.out / "metrics.csv", self.history)

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg = self.config
        self._load_data()
        self._build()
        start_epoch = self.epoch
        todo = 0 if self.schedule.stopped else max(0, cfg.epochs - start_epoch)
        total_steps = todo * self.steps_per_epoch
        if self.progress is not None:
            self.progress(0, total_steps)
        for epoch in range(start_epoch + 1, start_epoch + todo + 1):
            t0 = time.perf_counter()
            lr = self.schedule.lr
            train_loss = self._train_epoch(epoch, (epoch - start_epoch - 1) * self.steps_per_epoch, total_steps)
            val_loss, val_auc = self._validate()
            decision = self.schedule.step(val_loss, val_auc)
            for group in self.optimizer.param_groups:
                group["lr"] = decision.lr
            if decision.auc_improved:
                self.best_epoch = epoch
            metrics = EpochMetrics(epoch, train_loss, val_loss, val_auc, lr, time.perf_counter() - t0, decision.auc_improved, decision.lr_halved)
            self.history.append(metrics)
            self.epoch = epoch
            if self.ctx.is_main:
                self._save_epoch(metrics)
            log.info(
                "epoch %d: train loss %.4f, val loss %.4f, val AUC %.4f, lr %.3g, %.1f s%s%s",
                epoch, train_loss, val_loss, val_auc, lr, metrics.seconds,
                " (best)" if decision.auc_improved else "", ", lr halved" if decision.lr_halved else "",
            )
            if self.on_epoch is not None:
                self.on_epoch(metrics)
            if decision.stop:
                log.info("early stop after epoch %d: val AUC did not improve for %d epochs", epoch, cfg.stop_patience)
                break
        if self.progress is not None:
            self.progress(total_steps, total_steps)
        self.ctx.barrier()
        test_auc, model_id = None, ""
        if self.ctx.is_main:
            test_auc, model_id = self._finish()
        self.ctx.barrier()
        best = self.out / "best.pt"
        return TrainResult(
            out=self.out,
            best_path=best,
            last_path=self.out / "last.pt",
            epochs=self.epoch,
            best_epoch=self.best_epoch,
            best_val_auc=float(self.schedule.best_auc) if self.schedule.best_auc is not None else math.nan,
            test_slide_auc=test_auc,
            seconds=self.seconds_before + time.perf_counter() - self.started,
            stopped_early=self.schedule.stopped,
            model_id=model_id,
            history=list(self.history),
        )

    def _finish(self) -> tuple[float | None, str]:
        """Rank 0, after the last epoch: the run's outcome (and test-split slide AUC) into best.pt; summary.json."""
        cfg = self.config
        best = self.out / "best.pt"
        if not best.is_file():
            raise TrainingError(f"no best checkpoint in {self.out}: no epoch gave a validation AUC")
        model, meta = load_checkpoint(best)
        training = meta["training"]
        if cfg.test_slide_auc and training.get("test_slide_auc") is None:
            training.update(self._test_slide_auc(model))
        seconds = round(self.seconds_before + time.perf_counter() - self.started, 1)
        # "epochs" is what the run did; "epoch" stays the epoch these weights come from.
        training.update(epochs=self.epoch, stopped_early=self.schedule.stopped, seconds=seconds)
        meta.pop("model_id", None)
        model_id = save_checkpoint(best, model, meta)  # same weights, so the same model id
        summary = {
            "best": str(best),
            "model_id": model_id,
            "epochs": self.epoch,
            "best_epoch": self.best_epoch,
            "best_val_auc": _nan_to_none(self.schedule.best_auc),
            "test_slide_auc": training.get("test_slide_auc"),
            "test_slide_scores": training.get("test_slide_scores"),
            "stopped_early": self.schedule.stopped,
            "seconds": seconds,
            "command": cfg.command,
            "demo": cfg.demo,
        }
        _atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2) + "\n")
        return training.get("test_slide_auc"), model_id

    def _test_slide_auc(self, model) -> dict:
        """Return the test split's slide AUC (max F(I) per slide), the scores and how they were computed."""
        cfg = self.config
        labels = np.array([s.label for s in self.test_slides], dtype=np.int64)
        if labels.size == 0 or labels.min() == labels.max():
            log.warning("the test split lacks tumor or normal slides: no slide AUC")
            return {}
        # Scored as `predict` would score them: inference precision "auto" on this device.
        precision = resolve_precision(self.device, "auto")
        index = index_slides(self.test_slides, self.tiling, cfg.inner_fraction, cfg.workers)
        scores = slide_max_scores(
            model, index, device=str(self.device), precision=precision,
            batch_size=2 * cfg.batch_size, workers=cfg.workers,
        )
        return {
            "test_slide_auc": _nan_to_none(slide_auc(labels, scores)),
            "test_slide_scores": {s.name: round(float(v), 6) for s, v in zip(self.test_slides, scores)},
            "test_slides": int(labels.size),
            "test_precision": precision,
        }


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: Progress | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    state: dict | None = None,
) -> TrainResult:
    """Train a patch classifier by the recipe and return the outcome (files in ``config.out``).

    Args:
        config: the settings (recipe defaults).
        resume: continue the run in ``config.out`` from its last epoch (``last-state.pt``);
            data and model settings must be unchanged, ``epochs`` may grow.
        progress: ``progress(done, total)`` after each optimizer step of this session
            (total = the steps of the epochs still allowed; early stopping may end sooner).
        on_epoch: called with each epoch's metrics.
        state: with ``resume``, the state already fetched (:func:`fetch_state`); None: fetch it.

    Under torchrun the call joins the process group (and leaves it at the end if it started
    it); every rank must call it; only rank 0 writes files and gets ``model_id`` filled in.
    On one machine or several: a resumed run's state is read on one machine and broadcast
    (:func:`fetch_state`), so only rank 0's machine needs the run folder.

    Raises:
        TrainingError: bad cohort or splits, a run already in ``out`` without ``resume``,
            inconsistent resume settings, a loss that is no longer finite.
        CheckpointError: ImageNet weights unreachable (pass ``weights`` or ``pretrained="none"``).
    """
    trainer = _Trainer(config, resume, progress, on_epoch, state)
    try:
        return trainer.run()
    finally:
        trainer.ctx.shutdown()
