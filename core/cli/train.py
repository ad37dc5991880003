"""``python -m core train``: the recipe on a cohort, or ``--preset demo`` for the demo model.

    python -m core train --cohort data/cohort.csv --arch vgg16 --out runs/vgg16
    python -m core train --preset demo                       # tiny arch on the demo cohort
    python -m core train --out runs/vgg16 --resume --epochs 40
    torchrun --nproc-per-node 4 -m core train --cohort ... --out ...   # DistributedDataParallel
    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \
        -m core train --cohort cohort.csv --data-root /local/slides --out runs/vgg16 [--resume]

Options left out take the preset's value (with ``--preset``), the stored run's (with
``--resume``) or the recipe's default (:class:`core.training.config.TrainConfig`, whose
defaults the help shows). Only rank 0 prints progress and writes files (on its own machine);
with ``--resume`` the state is read on the machine that holds it and broadcast to the others,
which need a copy of the slides (``--data-root``) but not of the run folder.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from pathlib import Path

from core.cli import common
from core.errors import CommandError

HELP = "train the patch classifier by the recipe (or --preset demo); torchrun for several GPUs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``train``; each option but ``--preset``/``--resume`` is a TrainConfig field."""
    from core.model import ARCHS
    from core.training.config import TrainConfig as C
    from core.training.demo import DEMO_PRESET

    fields: list[argparse.Action] = []

    def option(flag: str, **kwargs) -> None:
        fields.append(parser.add_argument(flag, default=None, **kwargs))

    halved = "halved" if C.lr_factor == 0.5 else f"multiplied by {C.lr_factor:g}"
    parser.description = (
        f"Train the patch classifier by the source recipe: three-step sampling, flips and colour jitter, "
        f"binary cross-entropy, RMSprop (rho {C.rho:g}, momentum {C.momentum:g}, lr {common.number_text(C.lr)}), lr {halved} after "
        f"{C.lr_patience} epochs without val-loss improvement, early stop after {C.stop_patience} without val ROC-AUC "
        "improvement. Writes best.pt, last.pt, last-state.pt, metrics.csv and summary.json in --out. "
        "Under torchrun: DistributedDataParallel."
    )
    parser.add_argument(
        "--preset", choices=["demo"],
        help=(
            "demo: the tiny arch on the synthetic demo cohort (generated if absent) at "
            f"{DEMO_PRESET['mpp']:g} um/px, {DEMO_PRESET['patch_size']} px, learning rate {DEMO_PRESET['lr']:g} (higher than the "
            f"recipe's {common.number_text(C.lr)}, to train in minutes on a CPU), at most {DEMO_PRESET['epochs']} epochs of "
            f"{DEMO_PRESET['samples_per_epoch']} draws, hard-negative mining after epoch {DEMO_PRESET['hard_negative_after']}, "
            "test-split slide AUC at the end; writes runs/demo"
        ),
    )
    option("--cohort", type=str, help="cohort.csv (slide,label,split); slides in slides/, annotations in annotations/ beside it")
    option("--out", type=str, help="run folder for checkpoints and metrics (runs/NAME)")
    option("--arch", choices=list(ARCHS), help=f"network (default {C.arch})")
    option("--pretrained", choices=["imagenet", "none", "auto"], help=f"trunk weights: imagenet (vgg16; fails clearly if unreachable), none, auto (default {C.pretrained}: imagenet for vgg16, none for tiny)")
    option("--weights", type=str, help="local torchvision VGG16 state dict (vgg16-397923af.pth) for the trunk")
    fields += common.add_patch_grid(parser, shown_level=C.level, shown_patch_size=C.patch_size)
    option(
        "--patch-mpp", dest="mpp", type=float, metavar="UM_PER_PX",
        help="cut every slide at this resolution in microns per patch pixel (best level at or finer, then resized; "
        "recorded in the checkpoint); slides need resolution metadata or the cohort's mpp column (default: by --level)",
    )
    fields.append(common.add_tissue_threshold(parser, default=None, shown=C.tissue_threshold))
    fields.append(common.add_inner_fraction(parser, default=None, shown=C.inner_fraction))
    option("--epochs", type=int, help=f"maximum epochs (default {C.epochs}; early stopping usually ends sooner)")
    option("--samples-per-epoch", type=int, help="three-step draws per epoch, all ranks together (default: number of train patches)")
    fields.append(common.add_batch_size(parser, default=None, shown=C.batch_size, per="step and rank"))
    option("--lr", type=float, help=f"initial learning rate (default {common.number_text(C.lr)})")
    option(
        "--hard-negatives", type=float, metavar="SHARE",
        help="hard-negative mining (Wang et al. 2016): the probability that a normal draw is one of the hard pool's "
        f"patches, after --hard-negative-after epochs (default {C.hard_negatives:g}: off)",
    )
    option(
        "--hard-negative-after", type=int, metavar="EPOCHS",
        help=f"plain epochs before mining; before each later epoch the train split's normal patches are scored (default {C.hard_negative_after})",
    )
    option(
        "--hard-negative-top", type=float, metavar="SHARE",
        help=f"the hard pool: this share of the normal train patches, the highest-scoring (default {C.hard_negative_top:g})",
    )
    option("--val-max-patches", type=int, help=f"cap on validation patches, a fixed subset (default {C.val_max_patches})")
    fields.append(common.add_workers(parser, default=None, shown=C.workers))
    fields.append(common.add_device(parser, default=None, shown=C.device))
    fields.append(common.add_precision(parser, default=None, choices=True, note=f"default {C.precision}: bf16 (else fp16 + loss scaling) on CUDA, fp32 on CPU"))
    option("--seed", type=int, help=f"random seed; a CPU run with the same seed repeats exactly (default {C.seed})")
    option("--test-slide-auc", action=argparse.BooleanOptionalAction, help="after training, score the test-split slides (max F(I)) and record their ROC-AUC")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch (epochs may grow)")
    common.add_data_root(parser)
    # (dest, flag) of the TrainConfig options, in --help order: what _given and _command read.
    parser.set_defaults(config_options=tuple((a.dest, a.option_strings[0]) for a in fields))


def _given(args: argparse.Namespace) -> dict:
    """Return the TrainConfig fields given on the command line."""
    return {dest: getattr(args, dest) for dest, _ in args.config_options if getattr(args, dest, None) is not None}


def _command(args: argparse.Namespace, world: int) -> str:
    """Return the command line that reproduces this run (options as given, canonical order)."""
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if world <= 1:
        parts = ["python", "-m", "core", "train"]
    elif per_node >= world:
        parts = ["torchrun", "--nproc-per-node", str(world), "-m", "core", "train"]
    else:
        parts = ["torchrun", "--nnodes", str(world // max(per_node, 1)), "--nproc-per-node", str(per_node), "-m", "core", "train"]
    if args.preset:
        parts += ["--preset", args.preset]
    for dest, flag in args.config_options:
        value = getattr(args, dest, None)
        if value is None:
            continue
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def _build_config(args: argparse.Namespace, world: int, state: dict | None = None):
    """Return the TrainConfig of this run: the stored one (--resume: ``state``), the demo preset's or the recipe's, with the options given."""
    from core.paths import demo_dir
    from core.training import TrainConfig, demo_config

    given = _given(args)
    command = _command(args, world)
    if args.resume:
        stored = TrainConfig.from_dict(state["config"])
        extra = {k: v for k, v in given.items() if k != "out"}
        resumed_command = stored.command or ""
        if extra:
            resumed_command = f"{resumed_command} then {command}".strip()
        # This machine's --out (the state may come from another machine's copy of the folder).
        return stored.replace(**extra, out=str(given.get("out") or stored.out), command=resumed_command)
    if args.preset == "demo":
        cohort = given.pop("cohort", None) or str(demo_dir() / "cohort.csv")
        return demo_config(cohort=cohort, **{**given, "command": command})
    if "cohort" not in given:
        raise CommandError("train needs --cohort cohort.csv (or --preset demo)")
    if "out" not in given:
        raise CommandError("train needs --out runs/NAME")
    return TrainConfig(**given, command=command)


def _ensure_demo_cohort(cohort: Path) -> None:
    """Generate the demo cohort if ``cohort`` is the demo folder's and absent, or finish it if half-written."""
    from core.demo import cohort_in_progress, make_demo_cohort
    from core.paths import demo_dir

    if cohort.resolve() != (demo_dir() / "cohort.csv").resolve():
        return
    if cohort.is_file() and not cohort_in_progress(demo_dir()):
        return  # complete (a half-written cohort is finished first: never train on part of it)
    print(f"generating the synthetic demo cohort in {demo_dir()} (a few minutes on 2 cores)", file=sys.stderr)
    bar, update = common.progress_bar(None, "demo slides", "slide")
    try:
        make_demo_cohort(demo_dir(), progress=update)
    finally:
        bar.close()


def run(args: argparse.Namespace) -> int:
    """Train (joining torchrun's process group when there is one) and report; return 0."""
    import time

    from core.cohort import DATA_ROOT_ENV, data_root
    from core.training.distributed import DistContext, init_distributed
    from core.training.loop import fetch_state

    started = time.perf_counter()
    rank, world, _ = common.distributed_context()
    if args.data_root is not None:
        # Training reads the cohort deep inside; the environment carries this node's root there.
        os.environ[DATA_ROOT_ENV] = str(data_root(args.data_root))
    if args.resume and not args.out and not args.preset:
        raise CommandError("--resume needs --out (the run folder to continue)")
    main = rank == 0
    ctx = None
    if world > 1:
        # Joined here (not only inside train) so the ranks can share the resume state and wait
        # for rank 0's demo cohort. The device is the one asked for (else the default's).
        ctx, _ = init_distributed(args.device or "auto")
    try:
        state = fetch_state(ctx or DistContext(), Path(args.out or "runs/demo")) if args.resume else None
        config = _build_config(args, world, state)
        if args.preset == "demo" and main:
            _ensure_demo_cohort(Path(config.cohort))
        if ctx is not None:
            ctx.barrier()
        return _train_and_report(args, config, main, world, started, state)
    finally:
        if ctx is not None:
            ctx.shutdown()


def _train_and_report(args: argparse.Namespace, config, main: bool, world: int, started: float, state: dict | None = None) -> int:
    """Run the training loop with a progress bar and one line per epoch; print the result (rank 0)."""
    import time

    from core.training import DEMO_TARGETS, EpochMetrics, train

    bar = update = None
    if main:
        bar, update = common.progress_bar(None, "training" + (f" [{world} ranks]" if world > 1 else ""), "step")

    def on_epoch(m: EpochMetrics) -> None:
        if bar is None:
            return
        flags = (" best" if m.best else "") + (" (lr halved)" if m.lr_halved else "")
        bar.write(
            f"epoch {m.epoch}: train loss {m.train_loss:.4f}, val loss {m.val_loss:.4f}, "
            f"val AUC {m.val_auc:.4f}, lr {m.lr:.3g}, {m.seconds:.1f} s{flags}",
            file=sys.stderr,
        )

    try:
        result = train(config, resume=args.resume, progress=update, on_epoch=on_epoch, state=state)
    finally:
        if bar is not None:
            bar.close()
    if not main:
        return 0
    test = "n/a" if result.test_slide_auc is None else f"{result.test_slide_auc:.4f}"
    print(
        f"trained {result.epochs} epochs ({'early stop' if result.stopped_early else 'epoch limit'}), "
        f"best epoch {result.best_epoch}: val AUC {result.best_val_auc:.4f}, test slide AUC {test}; "
        f"{result.seconds:.1f} s training, {time.perf_counter() - started:.1f} s in all -> {result.best_path}",
        file=sys.stderr,
    )
    if config.demo:
        met = result.best_val_auc >= DEMO_TARGETS["val_auc"] and (
            result.test_slide_auc is not None and not math.isnan(result.test_slide_auc)
            and result.test_slide_auc >= DEMO_TARGETS["test_slide_auc"]
        )
        print(
            f"demo targets (val AUC >= {DEMO_TARGETS['val_auc']}, test slide AUC >= {DEMO_TARGETS['test_slide_auc']:g}): "
            f"{'met' if met else 'NOT met'}; to make it the app's demo model: cp {result.best_path} models/demo-tiny.pt",
            file=sys.stderr,
        )
    return 0
