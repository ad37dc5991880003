"""What a training run is: every setting of the recipe in one plain dataclass.

The defaults are the recipe of the source material (VGG16 pretrained on ImageNet, RMSprop with
rho 0.9 and momentum 0.9, initial learning rate 5e-5, halve the rate after 3 epochs without
validation-loss improvement, stop after 5 epochs without validation ROC-AUC improvement).
Every value can be overridden; a config round-trips through plain JSON data, so it is stored in
the checkpoints and the resume state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields

from core.errors import TrainingError

__all__ = ["TrainConfig", "TrainingError", "IDENTITY_FIELDS"]



# Fields that define what is learned from what: a resumed run must keep them.
IDENTITY_FIELDS = (
    "cohort", "arch", "pretrained", "weights", "level", "patch_size", "mpp", "tissue_threshold", "inner_fraction",
    "samples_per_epoch", "batch_size", "seed", "hard_negatives", "hard_negative_after", "hard_negative_top",
)


@dataclass
class TrainConfig:
    """Settings of one training run (recipe defaults).

    Attributes:
        cohort: the ``cohort.csv`` (``slide,label,split``); slides are found in ``slides/``
            beside it (or by a ``path`` column), annotations in ``annotations/<slide>.geojson``
            or ``.xml``. Patches of the ``train`` split are learned, ``val`` validates.
        out: the run folder (``best.pt``, ``last.pt``, ``last-state.pt``, ``metrics.csv``).
        arch: ``"vgg16"`` or ``"tiny"``.
        pretrained: ``"imagenet"``, ``"none"`` or ``"auto"`` (ImageNet for vgg16, none for tiny).
            ImageNet weights that cannot be found or downloaded fail the run clearly.
        weights: a local torchvision VGG16 state dict for the trunk (instead of downloading).
        level, patch_size: the patch grid (patch side in pixels of that level).
        mpp: microns per patch pixel: when given, every slide is cut at this resolution
            (best level at or finer, then resized) and ``level`` is not used; slides need
            resolution metadata or the cohort's ``mpp`` column.
        tissue_threshold: minimum tissue fraction of a patch.
        inner_fraction: side of the labelling inner square relative to the patch.
        epochs: maximum number of epochs (early stopping usually ends the run first).
        samples_per_epoch: three-step draws per epoch, all ranks together
            (None: the number of train patches).
        batch_size: patches per optimizer step on each rank.
        lr, rho, momentum: RMSprop (rho is torch's ``alpha``).
        lr_patience, lr_factor: multiply the rate by ``lr_factor`` after ``lr_patience``
            epochs without validation-loss improvement.
        stop_patience: stop after that many epochs without validation ROC-AUC improvement.
        hard_negatives: hard-negative mining (Wang et al. 2016; :mod:`core.training.hard_negatives`):
            the probability that a normal draw of a mining epoch is replaced by one of the hard
            pool's patches. 0 (the default): off, plain three-step draws.
        hard_negative_after: epochs of plain draws before mining starts; before each later
            epoch the train split's normal patches are scored with the current weights.
        hard_negative_top: the hard pool: this share of the train split's normal patches, the
            highest-scoring (F(I)) ones.
        flips: random vertical and horizontal flips.
        brightness, contrast, saturation, hue: colour perturbation ranges (torchvision's
            ColorJitter meaning: factors in [1 - v, 1 + v], hue shift in [-hue, hue] turns).
        val_max_patches: cap on validation patches (a fixed subset, the same every epoch and
            for every seed); None: all of them.
        workers: patch-reading threads.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        precision: ``"auto"`` (bf16, else fp16 with loss scaling, on CUDA; fp32 on CPU),
            ``"fp32"``, ``"bf16"``, ``"fp16"``.
        seed: makes a CPU run reproducible (initialisation, sampling, augmentation).
        test_slide_auc: after training, score every test-split slide (max F(I) over its tissue
            grid) with the best model and record the slide ROC-AUC in ``best.pt``.
        demo, label, note, command: recorded in the checkpoint metadata.
    """

    cohort: str = ""
    out: str = "runs/train"
    arch: str = "vgg16"
    pretrained: str = "auto"
    weights: str | None = None
    level: int = 0
    patch_size: int = 512
    mpp: float | None = None
    tissue_threshold: float = 0.25
    inner_fraction: float = 0.5
    epochs: int = 100
    samples_per_epoch: int | None = None
    batch_size: int = 32
    lr: float = 5e-5
    rho: float = 0.9
    momentum: float = 0.9
    lr_patience: int = 3
    lr_factor: float = 0.5
    stop_patience: int = 5
    hard_negatives: float = 0.0
    hard_negative_after: int = 2
    hard_negative_top: float = 0.1
    flips: bool = True
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    hue: float = 0.04
    val_max_patches: int | None = 20000
    workers: int = 4
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    test_slide_auc: bool = False
    demo: bool = False
    label: str | None = None
    note: str | None = None
    command: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise TrainingError naming the first setting that is out of range."""
        checks = [
            (self.arch in ("vgg16", "tiny"), f"arch must be vgg16 or tiny, got {self.arch!r}"),
            (str(self.pretrained).lower() in ("auto", "imagenet", "none"),
             f"pretrained must be imagenet, none or auto, got {self.pretrained!r}"),
            (self.level >= 0, f"level must be >= 0, got {self.level}"),
            (self.mpp is None or self.mpp > 0, f"the patch resolution (mpp) must be > 0 microns per pixel, got {self.mpp}"),
            (self.patch_size >= 16, f"patch size must be >= 16 px, got {self.patch_size}"),
            (0 <= self.tissue_threshold < 1, f"tissue threshold must be in [0, 1), got {self.tissue_threshold}"),
            (0 < self.inner_fraction <= 1, f"inner fraction must be in (0, 1], got {self.inner_fraction}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.samples_per_epoch is None or self.samples_per_epoch >= 1,
             f"samples per epoch must be >= 1, got {self.samples_per_epoch}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (0 <= self.rho < 1 and 0 <= self.momentum < 1, "rho and momentum must be in [0, 1)"),
            (self.lr_patience >= 1 and self.stop_patience >= 1, "patiences must be >= 1 epoch"),
            (0 <= self.hard_negatives <= 1, f"the hard-negative share must be in [0, 1], got {self.hard_negatives}"),
            (self.hard_negative_after >= 0, f"hard-negative mining must start after >= 0 epochs, got {self.hard_negative_after}"),
            (0 < self.hard_negative_top <= 1, f"the hard pool's share of normal patches must be in (0, 1], got {self.hard_negative_top}"),
            (0 < self.lr_factor < 1, f"lr factor must be in (0, 1), got {self.lr_factor}"),
            (all(0 <= v <= 1 for v in (self.brightness, self.contrast, self.saturation)),
             "brightness, contrast and saturation ranges must be in [0, 1]"),
            (0 <= self.hue <= 0.5, f"hue range must be in [0, 0.5], got {self.hue}"),
            (self.val_max_patches is None or self.val_max_patches >= 2, "val max patches must be >= 2"),
            (self.workers >= 1, f"workers must be >= 1, got {self.workers}"),
            (str(self.precision).lower() in ("auto", "fp32", "bf16", "fp16"),
             f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainingError(message)
        if self.arch == "tiny" and str(self.pretrained).lower() == "imagenet":
            raise TrainingError("ImageNet weights exist only for arch vgg16; use --pretrained none with tiny")

    @property
    def pretrained_source(self) -> str | None:
        """Return what ``build_model`` gets: ``"imagenet"`` or None."""
        value = str(self.pretrained).lower()
        if value == "auto":
            value = "imagenet" if self.arch == "vgg16" and self.weights is None else "none"
        return None if value == "none" else value

    def to_dict(self) -> dict:
        """Return the settings as plain JSON-able data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Return a config from ``to_dict`` output; unknown keys are ignored (older/newer runs)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def replace(self, **changes) -> TrainConfig:
        """Return a copy with some settings changed (validated)."""
        return dataclasses.replace(self, **changes)
