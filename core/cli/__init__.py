"""The command line: ``python -m core SUBCOMMAND`` (also ``torchrun -m core SUBCOMMAND``).

    python -m core info slide.tiff
    python -m core demo-data data/demo
    python -m core predict data/demo/slides --model models/demo-tiny.pt --db results.sqlite
    python -m core evaluate --db results.sqlite --cohort data/demo/cohort.csv --annotations data/demo/annotations
    python -m core SUBCOMMAND --help

One module per subcommand, named in :data:`COMMANDS`; each has ``HELP`` (one line for the
list of subcommands), ``add_arguments(parser)`` and ``run(args) -> int``. Options that several
subcommands share, the progress bar and the error report live in :mod:`core.cli.common`.

Import cost: building the parser imports each subcommand's module for its ``HELP`` only; a
subcommand's ``add_arguments`` runs when that subcommand is parsed or its help shown, so it
may read defaults from their owners (some of which import torch), and heavy work is imported
inside ``run``. ``info``, ``demo-data`` and ``--help`` therefore never import torch.

A failure prints one line ``error: ...`` on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from types import ModuleType

from core.cli.common import run_command

__all__ = ["COMMANDS", "build_parser", "command_module", "main"]

#: Subcommand -> the module that declares and runs it, in the order ``--help`` lists them.
COMMANDS: dict[str, str] = {
    "info": "core.cli.info",
    "demo-data": "core.cli.demo_data",
    "predict": "core.cli.predict",
    "evaluate": "core.cli.evaluate",
    "explain": "core.cli.explain",
    "export": "core.cli.export",
    "report": "core.cli.report",
    "train": "core.cli.train",
    "store": "core.cli.store",
}


def command_module(name: str) -> ModuleType:
    """Return the module of subcommand ``name`` (a key of :data:`COMMANDS`)."""
    return importlib.import_module(COMMANDS[name])


class _SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser that declares its arguments (``add_arguments``) on first use."""

    def __init__(self, *args, command: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._command = command

    def _declare(self) -> None:
        if self._command is not None:
            command, self._command = self._command, None
            command_module(command).add_arguments(self)

    def parse_known_args(self, args=None, namespace=None):
        self._declare()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._declare()
        return super().format_usage()

    def format_help(self) -> str:
        self._declare()
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m core`` with one subparser per entry of :data:`COMMANDS`.

    Returns:
        The parser; a subparser declares its options when it is first used (parsing or help).
    """
    parser = argparse.ArgumentParser(
        prog="python -m core",
        description="Pathology Explorer command line: whole-slide images, a VGG16 patch classifier, evaluation and explanations.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True, parser_class=_SubcommandParser)
    for name in COMMANDS:
        text = command_module(name).HELP
        sub.add_parser(name, help=text, description=text, command=name)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: the arguments after ``python -m core`` (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 ok, 2 error (one ``error: ...`` line on stderr). A usage error
        exits through argparse's ``SystemExit(2)``.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_command(command_module(args.command).run, args)
