"""Where data lives, and the rule that only files under the configured folders are opened.

The data folders are the demo cohort (``PATHEX_DEMO_DIR``, default ``demo/`` beside the
code), any folders listed in ``PATHEX_DATA_DIRS`` (os.pathsep-separated), and the private
upload folder of the app. ``resolve_within`` is the one gate every user-supplied path goes
through before a file is opened.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import DataPathError

REPO_ROOT = Path(__file__).resolve().parents[1]


def demo_dir() -> Path:
    """Return the folder of the demo cohort (it may not exist yet)."""
    return Path(os.environ.get("PATHEX_DEMO_DIR", REPO_ROOT / "demo")).resolve()


def data_dirs() -> list[Path]:
    """Return the configured data folders: the demo folder, then ``PATHEX_DATA_DIRS``."""
    extra = [Path(p).expanduser().resolve() for p in os.environ.get("PATHEX_DATA_DIRS", "").split(os.pathsep) if p]
    return [demo_dir(), *extra]


def resolve_within(path: str | os.PathLike, roots: list[Path]) -> Path:
    """Return ``path`` resolved (symlinks followed) if it lies inside one of ``roots``.

    Raises:
        DataPathError: the path escapes every root (``..``, an absolute path elsewhere, a
            symlink pointing outside).
    """
    candidate = Path(path)
    resolved = candidate.resolve()
    for root in roots:
        root = Path(root).resolve()
        if resolved == root or root in resolved.parents:
            return resolved
    raise DataPathError(f"{candidate} is outside the data folders ({', '.join(str(r) for r in roots)}); it will not be opened")
