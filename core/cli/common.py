"""What the subcommands share: the error report, the progress bar, torchrun's ranks and the options
that mean the same thing in several subcommands.

Each shared option is one ``add_*`` function that declares it on a parser (or an argument group)
and returns the argparse action. Its default comes from the module that owns the concept
(``core.tiling``, ``core.evaluation``, ``core.device``, ...); those are imported inside the
function, which runs only when that subcommand is parsed (see :mod:`core.cli`), so building the
command line stays free of torch.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import CommandError, PathologyError, StoreError

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_THRESHOLD",
    "EXIT_ERROR",
    "add_allow_missing",
    "add_annotations",
    "add_batch_size",
    "add_cohort_table",
    "add_data_root",
    "add_db",
    "add_device",
    "add_inner_fraction",
    "add_mode",
    "add_model_id",
    "add_nms_radius_um",
    "add_patch_grid",
    "add_precision",
    "add_split",
    "add_threshold",
    "add_tissue_threshold",
    "add_workers",
    "check_threshold",
    "distributed_context",
    "keyword_default",
    "number_text",
    "open_store",
    "print_error",
    "progress_bar",
    "run_command",
    "size_text",
]

#: Exit status of a failed command (argparse's usage errors exit with 2 as well).
EXIT_ERROR = 2
#: The results store the subcommands read and write when ``--db`` is not given.
DEFAULT_DB = Path("results.sqlite")
#: The decision threshold t of ``evaluate``, ``export`` and ``report`` when ``--threshold`` is not given.
DEFAULT_THRESHOLD = 0.5


# -- running a command -------------------------------------------------------------------------
def print_error(message: str) -> None:
    """Print ``error: message`` as one line on stderr."""
    print(f"error: {message}", file=sys.stderr)


def run_command(run: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a subcommand and return its exit status.

    An expected failure (a :class:`~core.errors.PathologyError`, a missing or unreadable file,
    a bad value, Ctrl-C) is reported as one ``error: ...`` line on stderr.

    Returns:
        ``run(args)`` (None counts as 0), or :data:`EXIT_ERROR` after a reported failure.
    """
    try:
        return int(run(args) or 0)
    except PathologyError as exc:
        print_error(str(exc))
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print_error(f"{exc.strerror or exc}: {exc.filename}")
    except (ValueError, OSError) as exc:
        print_error(str(exc))
    except KeyboardInterrupt:
        print_error("interrupted")
    return EXIT_ERROR


def progress_bar(total: int | None, desc: str, unit: str = "it"):
    """Return a tqdm bar on stderr and a ``(done, total)`` callback that advances it.

    Returns:
        ``(bar, update)``: close ``bar`` when done; ``update(done, total_now)`` sets the count
        (and the total, which may grow while the work is found).
    """
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, disable=None)

    def update(done: int, total_now: int) -> None:
        if bar.total != total_now:
            bar.total = total_now
            bar.refresh()
        bar.update(done - bar.n)

    return bar, update


def distributed_context() -> tuple[int, int, int]:
    """Return ``(rank, world_size, local_rank)`` from torchrun's environment ((0, 1, 0) when absent)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))


def check_threshold(threshold: float) -> float:
    """Return ``threshold`` if it lies in [0, 1]; raise CommandError naming ``--threshold`` otherwise."""
    if not 0 <= threshold <= 1:
        raise CommandError(f"--threshold must be in [0, 1], got {threshold}")
    return threshold


def open_store(path: Path):
    """Return the results store at ``path`` opened, for commands that only read it.

    Raises:
        StoreError: there is no file at ``path`` (opening would create an empty store).
    """
    from core.store import ResultStore

    if not Path(path).is_file():
        raise StoreError(f"results store not found: {path}")
    return ResultStore(path)


def size_text(path: Path) -> str:
    """Return the size of the file at ``path`` for a message: ``"1.2 MB"`` or ``"3.4 kB"``."""
    size = Path(path).stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


def number_text(value: float) -> str:
    """Return a number as help texts show it: ``0.25``, ``10``, ``5e-5`` (``:g`` without the exponent's padding)."""
    text = f"{value:g}"
    mantissa, sep, exponent = text.partition("e")
    return f"{mantissa}e{int(exponent)}" if sep else text


def keyword_default(function: Callable[..., Any], name: str) -> Any:
    """Return the default value of ``function``'s parameter ``name`` (for help texts that show it)."""
    return inspect.signature(function).parameters[name].default


# -- options shared by several subcommands -----------------------------------------------------
# ``parser`` is an ArgumentParser or an argument group; each function returns the action.
def add_device(parser, *, default: str | None = "auto", shown: str = "auto") -> argparse.Action:
    """Declare ``--device``: auto | cpu | cuda | cuda:N (``shown`` is the default named in the help); return the action."""
    return parser.add_argument("--device", default=default, help=f"auto | cpu | cuda | cuda:N (default {shown})")


def add_precision(parser, *, default: str | None = "auto", note: str | None = None, choices: bool = False) -> argparse.Action:
    """Declare ``--precision``, one of :data:`core.device.PRECISIONS`; return the action.

    ``note`` replaces "default ..." in the help; ``choices`` lets argparse check the name (else
    the code that resolves it reports a bad one).
    """
    from core.device import PRECISIONS

    names = ("auto", *(p for p in PRECISIONS if p != "auto"))
    text = f"{' | '.join(names)} ({note or f'default {default}'})"
    return parser.add_argument("--precision", default=default, choices=list(names) if choices else None, help=text)


def add_db(parser, *, default: Path | None = DEFAULT_DB, help: str = "results store written by `predict`") -> argparse.Action:
    """Declare ``--db SQLITE``, the results store (default :data:`DEFAULT_DB`, or none for ``default=None``); return the action."""
    text = help if default is None else f"{help} (default {default})"
    return parser.add_argument("--db", type=Path, default=default, metavar="SQLITE", help=text)


def add_model_id(parser) -> argparse.Action:
    """Declare ``--model ID``: a model id in the results store (not a checkpoint file); return the action."""
    return parser.add_argument("--model", metavar="ID", help="model id in the store (default: its only model)")


def add_threshold(parser) -> argparse.Action:
    """Declare ``--threshold``, the decision threshold t (check it with :func:`check_threshold`); return the action."""
    return parser.add_argument(
        "--threshold", type=float, default=DEFAULT_THRESHOLD, help=f"threshold t in [0, 1] (default {DEFAULT_THRESHOLD:g})"
    )


def add_cohort_table(parser, *, required: bool = True, help: str = "") -> argparse.Action:
    """Declare ``--cohort CSV``, the cohort table (required by ``evaluate`` and ``report``; ``help`` is appended); return the action."""
    text = "cohort table: slide,label[,split][,mpp][,path], label tumor/normal" + (f"; {help}" if help else "")
    return parser.add_argument("--cohort", type=Path, required=required, metavar="CSV", help=text)


def add_data_root(parser) -> argparse.Action:
    """Declare ``--data-root DIR``: this node's folder that relative slide paths resolve under; return the action.

    Default: ``$PATHEX_DATA_ROOT`` (read by :func:`core.cohort.data_root` when the option is absent).
    """
    from core.cohort import DATA_ROOT_ENV

    return parser.add_argument(
        "--data-root", type=Path, metavar="DIR",
        help=f"this node's copy of the slides: relative slide paths and the cohort's path column resolve under it, "
        f"and may not leave it (default ${DATA_ROOT_ENV}, else paths as written)",
    )


def add_annotations(parser, *, required: bool, help: str = "") -> argparse.Action:
    """Declare ``--annotations DIR``, the folder of tumor annotation files (``help`` is appended); return the action."""
    text = "folder of <slide>.geojson / <slide>.xml tumor annotations" + (f" ({help})" if help else "")
    return parser.add_argument("--annotations", type=Path, required=required, metavar="DIR", help=text)


def add_split(parser, *, verb: str = "evaluate") -> argparse.Action:
    """Declare ``--split``: ``verb`` only the cohort's slides of one split; return the action."""
    return parser.add_argument("--split", help=f"{verb} only the cohort's slides of this split (e.g. test)")


def add_mode(parser) -> argparse.Action:
    """Declare ``--mode``, one of :data:`core.evaluation.MODES` (default: ``evaluate_cohort``'s); return the action."""
    from core.evaluation import MODES, evaluate_cohort

    return parser.add_argument(
        "--mode", choices=MODES, default=keyword_default(evaluate_cohort, "mode"),
        help="FROC of the source material (patch) or of the official Camelyon16 evaluation",
    )


def add_nms_radius_um(parser, *, applies_to: str = "camelyon16") -> argparse.Action:
    """Declare ``--nms-radius-um``, the Camelyon16 NMS radius (default: the evaluation's, in patch sides); return the action."""
    from core.evaluation import NMS_RADIUS_PATCH_SIDES

    return parser.add_argument(
        "--nms-radius-um", type=float,
        help=f"{applies_to}: non-maximum suppression radius in um (default {NMS_RADIUS_PATCH_SIDES:g} patch sides, as the evaluation)",
    )


def add_allow_missing(parser) -> argparse.Action:
    """Declare ``--allow-missing``: cohort slides without predictions score 0; return the action."""
    return parser.add_argument(
        "--allow-missing", action="store_true", help="count cohort slides without predictions as slides without tissue (score 0)"
    )


def add_inner_fraction(parser, *, default: float | None, shown: float) -> argparse.Action:
    """Declare ``--inner-fraction``: side of the labelling inner square relative to the patch side; return the action."""
    return parser.add_argument(
        "--inner-fraction", type=float, default=default, help=f"side of the labelling inner square / patch side (default {shown:g})"
    )


def add_tissue_threshold(parser, *, default: float | None, shown: float) -> argparse.Action:
    """Declare ``--tissue-threshold``: minimum tissue fraction of a patch; return the action."""
    return parser.add_argument(
        "--tissue-threshold", type=float, default=default, help=f"minimum tissue fraction of a patch (default {shown:g})"
    )


def add_patch_grid(parser, *, shown_level: object, shown_patch_size: object) -> tuple[argparse.Action, argparse.Action]:
    """Declare ``--level`` and ``--patch-size`` of the patch grid; return the two actions.

    They have no argparse default: the caller fills them in.

    ``shown_*``: the default the help names, a number or a phrase ("the model's").
    """

    def shown(value: object) -> str:
        return f"default: {value}" if isinstance(value, str) else f"default {value}"

    level = parser.add_argument(
        "--level", type=int,
        help=f"cut patches at this pyramid level instead of by resolution in um/px (for cohorts without resolution metadata; {shown(shown_level)})",
    )
    size = parser.add_argument("--patch-size", type=int, help=f"patch side in pixels of that level ({shown(shown_patch_size)})")
    return level, size


def add_slide_mpp(parser) -> argparse.Action:
    """Declare ``--mpp``: microns per level-0 pixel of the slides, for those without (usable) resolution metadata."""
    return parser.add_argument(
        "--mpp", type=float, metavar="UM_PER_PX",
        help="microns per level-0 pixel of the slides: PNG, JPEG and TIFFs without resolution metadata need it "
        "when patches are cut by resolution; it overrides the slides' metadata",
    )


def add_batch_size(parser, *, default: int | None, shown: int, per: str = "forward pass") -> argparse.Action:
    """Declare ``--batch-size``: patches per forward pass (per ``per``); return the action."""
    return parser.add_argument("--batch-size", type=int, default=default, help=f"patches per {per} (default {shown})")


def add_workers(parser, *, default: int | None, shown: int) -> argparse.Action:
    """Declare ``--workers``: patch-reading threads; return the action."""
    return parser.add_argument("--workers", type=int, default=default, help=f"patch-reading threads (default {shown})")
