"""The command line: ``python -m core SUBCOMMAND``.

Each subcommand is a pair (``_add_<name>`` declares its arguments, ``_run_<name>`` does the
work). Heavy modules (torch) are imported inside the runner, so ``info`` and ``demo-data``
start fast. A failure prints one line ``error: ...`` on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from core.errors import CommandError, PathologyError

EXIT_ERROR = 2



def _progress_bar(total: int | None, desc: str, unit: str = "it"):
    """Return a tqdm bar on stderr and a ``(done, total)`` callback that advances it."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, disable=None)

    def update(done: int, total_now: int) -> None:
        if bar.total != total_now:
            bar.total = total_now
            bar.refresh()
        bar.update(done - bar.n)

    return bar, update


# -- info -------------------------------------------------------------------------------------
def _add_info(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("slide", type=Path, help="slide file (any format OpenSlide reads, or PNG/JPEG)")
    parser.add_argument("--properties", action="store_true", help="also print every OpenSlide property")


def _run_info(args: argparse.Namespace) -> int:
    from core.slide_io import open_slide

    slide = open_slide(args.slide)
    data = slide.info.to_dict()
    if args.properties:
        data["properties"] = slide.properties
    print(json.dumps(data, indent=2))
    return 0


# -- demo-data --------------------------------------------------------------------------------
def _add_demo_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="folder to write slides/, annotations/ and cohort.csv into")
    parser.add_argument("--slides", type=int, default=20, help="number of slides (default 20: 12 tumor, 8 normal)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same cohort")
    parser.add_argument("--size", type=int, default=6144, help="level-0 width of each slide in px (default 6144)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU core)")


def _run_demo_data(args: argparse.Namespace) -> int:
    from core.demo import make_demo_cohort

    if args.slides < 2:
        raise CommandError("--slides must be at least 2")
    started = time.perf_counter()
    bar, update = _progress_bar(args.slides, "demo slides", "slide")
    try:
        cohort = make_demo_cohort(args.out, n_slides=args.slides, seed=args.seed, size=args.size, workers=args.workers, progress=update)
    finally:
        bar.close()
    size = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
    print(
        f"wrote synthetic demo cohort: {args.slides} slides, {size / 1e6:.1f} MB, "
        f"{time.perf_counter() - started:.1f} s -> {cohort}",
        file=sys.stderr,
    )
    return 0


COMMANDS = {
    "info": ("print a slide's format, levels, dimensions, downsamples and mpp as JSON", _add_info, _run_info),
    "demo-data": ("write the synthetic demo cohort (slides, annotations, cohort.csv)", _add_demo_data, _run_demo_data),
}


def register(name: str, help_text: str, add_arguments, run) -> None:
    """Add a subcommand (used by modules that extend the command line)."""
    COMMANDS[name] = (help_text, add_arguments, run)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m core",
        description="Pathology Explorer command line: whole-slide images, a VGG16 patch classifier, evaluation and explanations.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def _load_extensions() -> None:
    """Import the modules that register further subcommands (predict, train, ...), if present."""
    import importlib

    for module in ("core.cli_model", "core.cli_eval", "core.cli_explain", "core.cli_export", "core.cli_train"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 2 error)."""
    _load_extensions()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _, _, run = COMMANDS[args.command]
    try:
        return int(run(args) or 0)
    except PathologyError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
    return EXIT_ERROR
