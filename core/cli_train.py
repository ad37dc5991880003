"""Command-line subcommand ``train``: the recipe on a cohort, or ``--preset demo`` for the demo model.

    python -m core train --cohort data/cohort.csv --arch vgg16 --out runs/vgg16
    python -m core train --preset demo                       # tiny arch on the demo cohort
    python -m core train --out runs/vgg16 --resume --epochs 40
    torchrun --nproc-per-node 4 -m core train --cohort ... --out ...   # DistributedDataParallel

Options left out take the preset's value (with ``--preset``), the stored run's (with
``--resume``) or the recipe's default. Only rank 0 prints progress and writes files.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

from core import cli

# (dest, flag) of every option that maps onto a TrainConfig field, in --help order.
_FIELDS: list[tuple[str, str]] = []


def _option(parser: argparse.ArgumentParser, flag: str, **kwargs) -> None:
    action = parser.add_argument(flag, default=None, **kwargs)
    _FIELDS.append((action.dest, flag))


def _add_train(parser: argparse.ArgumentParser) -> None:
    from core.training.demo import DEMO_PRESET

    _FIELDS.clear()  # the parser may be built more than once in a process
    parser.description = (
        "Train the patch classifier by the source recipe: three-step sampling, flips and colour jitter, "
        "binary cross-entropy, RMSprop (rho 0.9, momentum 0.9, lr 5e-5), lr halved after 3 epochs without "
        "val-loss improvement, early stop after 5 without val ROC-AUC improvement. Writes best.pt, last.pt, "
        "last-state.pt, metrics.csv and summary.json in --out. Under torchrun: DistributedDataParallel."
    )
    parser.add_argument(
        "--preset", choices=["demo"],
        help=(
            "demo: the tiny arch on the synthetic demo cohort (generated if absent) at level "
            f"{DEMO_PRESET['level']}, {DEMO_PRESET['patch_size']} px, learning rate {DEMO_PRESET['lr']:g} (higher than the "
            f"recipe's 5e-5, to train in minutes on a CPU), at most {DEMO_PRESET['epochs']} epochs of "
            f"{DEMO_PRESET['samples_per_epoch']} draws, test-split slide AUC at the end; writes runs/demo"
        ),
    )
    _option(parser, "--cohort", type=str, help="cohort.csv (slide,label,split); slides in slides/, annotations in annotations/ beside it")
    _option(parser, "--out", type=str, help="run folder for checkpoints and metrics (runs/NAME)")
    _option(parser, "--arch", choices=["vgg16", "tiny"], help="network (default vgg16)")
    _option(parser, "--pretrained", choices=["imagenet", "none", "auto"], help="trunk weights: imagenet (vgg16; fails clearly if unreachable), none, auto (default: imagenet for vgg16, none for tiny)")
    _option(parser, "--weights", type=str, help="local torchvision VGG16 state dict (vgg16-397923af.pth) for the trunk")
    _option(parser, "--level", type=int, help="pyramid level of the patches (default 0)")
    _option(parser, "--patch-size", type=int, help="patch side in pixels of that level (default 512)")
    _option(parser, "--tissue-threshold", type=float, help="minimum tissue fraction of a patch (default 0.25)")
    _option(parser, "--inner-fraction", type=float, help="side of the labelling inner square / patch side (default 0.5)")
    _option(parser, "--epochs", type=int, help="maximum epochs (default 100; early stopping usually ends sooner)")
    _option(parser, "--samples-per-epoch", type=int, help="three-step draws per epoch, all ranks together (default: number of train patches)")
    _option(parser, "--batch-size", type=int, help="patches per step and rank (default 32)")
    _option(parser, "--lr", type=float, help="initial learning rate (default 5e-5)")
    _option(parser, "--val-max-patches", type=int, help="cap on validation patches, a fixed subset (default 20000)")
    _option(parser, "--workers", type=int, help="patch-reading threads (default 4)")
    _option(parser, "--device", type=str, help="auto | cpu | cuda | cuda:N (default auto)")
    _option(parser, "--precision", choices=["auto", "fp32", "bf16", "fp16"], help="auto: bf16 (else fp16 + loss scaling) on CUDA, fp32 on CPU")
    _option(parser, "--seed", type=int, help="random seed; a CPU run with the same seed repeats exactly (default 0)")
    _option(parser, "--test-slide-auc", action=argparse.BooleanOptionalAction, help="after training, score the test-split slides (max F(I)) and record their ROC-AUC")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch (epochs may grow)")


def _given(args: argparse.Namespace) -> dict:
    return {dest: getattr(args, dest) for dest, _ in _FIELDS if getattr(args, dest, None) is not None}


def _command(args: argparse.Namespace, world: int) -> str:
    """Return the command line that reproduces this run (options as given, canonical order)."""
    parts = ["python", "-m", "core", "train"] if world <= 1 else ["torchrun", "--nproc-per-node", str(world), "-m", "core", "train"]
    if args.preset:
        parts += ["--preset", args.preset]
    for dest, flag in _FIELDS:
        value = getattr(args, dest, None)
        if value is None:
            continue
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def _build_config(args: argparse.Namespace, world: int):
    from core.paths import demo_dir
    from core.training import TrainConfig, demo_config, load_state

    given = _given(args)
    command = _command(args, world)
    if args.resume:
        if not args.out and not args.preset:
            raise cli.CommandError("--resume needs --out (the run folder to continue)")
        out = Path(given.get("out") or "runs/demo")
        stored = TrainConfig.from_dict(load_state(out)["config"])
        extra = {k: v for k, v in given.items() if k != "out"}
        resumed_command = stored.command or ""
        if extra:
            resumed_command = f"{resumed_command} then {command}".strip()
        return stored.replace(**extra, command=resumed_command)
    if args.preset == "demo":
        cohort = given.pop("cohort", None) or str(demo_dir() / "cohort.csv")
        return demo_config(cohort=cohort, **{**given, "command": command})
    if "cohort" not in given:
        raise cli.CommandError("train needs --cohort cohort.csv (or --preset demo)")
    if "out" not in given:
        raise cli.CommandError("train needs --out runs/NAME")
    return TrainConfig(**given, command=command)


def _ensure_demo_cohort(cohort: Path) -> None:
    from core.demo import make_demo_cohort
    from core.paths import demo_dir

    if cohort.is_file() or cohort.resolve() != (demo_dir() / "cohort.csv").resolve():
        return
    print(f"generating the synthetic demo cohort in {demo_dir()} (about a minute)", file=sys.stderr)
    bar, update = cli._progress_bar(None, "demo slides", "slide")
    try:
        make_demo_cohort(demo_dir(), progress=update)
    finally:
        bar.close()


def _run_train(args: argparse.Namespace) -> int:
    import os
    import time

    started = time.perf_counter()
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    config = _build_config(args, world)
    main = rank == 0
    ctx = None
    if world > 1:
        from core.training.distributed import init_distributed

        # Joined here (not only inside train) so the ranks can wait for rank 0's demo cohort.
        ctx, _ = init_distributed(config.device)
    try:
        if args.preset == "demo" and main:
            _ensure_demo_cohort(Path(config.cohort))
        if ctx is not None:
            ctx.barrier()
        return _train_and_report(args, config, main, world, started)
    finally:
        if ctx is not None:
            ctx.shutdown()


def _train_and_report(args: argparse.Namespace, config, main: bool, world: int, started: float) -> int:
    import time

    from core.training import DEMO_TARGETS, EpochMetrics, train

    bar = update = None
    if main:
        bar, update = cli._progress_bar(None, "training" + (f" [{world} ranks]" if world > 1 else ""), "step")

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
        result = train(config, resume=args.resume, progress=update, on_epoch=on_epoch)
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
            f"demo targets (val AUC >= {DEMO_TARGETS['val_auc']}, test slide AUC = {DEMO_TARGETS['test_slide_auc']:g}): "
            f"{'met' if met else 'NOT met'}; to make it the app's demo model: cp {result.best_path} models/demo-tiny.pt",
            file=sys.stderr,
        )
    return 0


cli.register("train", "train the patch classifier by the recipe (or --preset demo); torchrun for several GPUs", _add_train, _run_train)
