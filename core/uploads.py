"""Where uploaded files live: one folder per server, one per browser session inside it, a quota, a sweep.

Streamlit keeps an upload in memory only while its widget holds it; the app writes it here and
keeps the path (never the bytes) in session state. Nothing here imports streamlit.

* **Layout.** ``<root>/server-<pid>-<start>/<session>/{slides,models}/NAME`` where ``root`` is
  ``PATHEX_UPLOAD_DIR`` (default ``<system temp>/pathex-uploads``).
* **Quota.** All uploads under ``root`` together stay below ``PATHEX_UPLOAD_QUOTA_GB``
  (default 4 GiB); an upload that would pass it is refused with a message saying so, before
  anything is written.
* **Sweep.** Streamlit has no public hook for the end of a session, so folders are removed
  by age instead: at server start (:func:`sweep`), every server folder of a process that no
  longer runs is removed, and every session folder not touched for ``PATHEX_UPLOAD_MAX_AGE_H``
  hours (default 24) — also swept on every new upload.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from core.errors import UploadError
from core.fileio import atomic_write
from core.processes import pid_alive

__all__ = ["UploadError", "UploadStore", "quota_bytes", "upload_root"]

log = logging.getLogger(__name__)

_SERVER_FOLDER = re.compile(r"^server-(\d+)-\d+$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ +()-]")


def upload_root() -> Path:
    """Return the folder holding every server's uploads (``PATHEX_UPLOAD_DIR`` or the system temp)."""
    return Path(os.environ.get("PATHEX_UPLOAD_DIR") or Path(tempfile.gettempdir()) / "pathex-uploads").absolute()


def quota_bytes() -> int:
    """Return the quota of all uploads together in bytes (``PATHEX_UPLOAD_QUOTA_GB``, default 4 GiB)."""
    try:
        gib = float(os.environ.get("PATHEX_UPLOAD_QUOTA_GB", "4"))
    except ValueError:
        gib = 4.0
    return int(max(gib, 0) * 2**30)


def max_age_seconds() -> float:
    """Return how long an untouched session folder is kept (``PATHEX_UPLOAD_MAX_AGE_H``, default 24 h)."""
    try:
        return max(float(os.environ.get("PATHEX_UPLOAD_MAX_AGE_H", "24")), 0.0) * 3600
    except ValueError:
        return 24 * 3600.0


def _size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            continue
    return total


def _newest_mtime(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for path in folder.rglob("*"):
        try:
            newest = max(newest, path.stat().st_mtime)
        except OSError:
            continue
    return newest


#: One value per process, so every UploadStore of a server names the same server folder.
_PROCESS_STARTED = int(time.time())


class UploadStore:
    """The uploads of one server process: session folders under its own server folder."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else upload_root()
        self.folder = self.root / f"server-{os.getpid()}-{_PROCESS_STARTED}"

    def sweep(self, now: float | None = None) -> int:
        """Remove the folders of servers that no longer run and session folders older than the max age; return how many."""
        now = time.time() if now is None else now
        removed = 0
        if not self.root.is_dir():
            return 0
        for server in self.root.iterdir():
            match = _SERVER_FOLDER.match(server.name)
            if not server.is_dir() or server.is_symlink() or match is None:
                continue
            if server != self.folder and not pid_alive(int(match.group(1))):
                shutil.rmtree(server, ignore_errors=True)
                removed += 1
                continue
            for session in server.iterdir():
                try:
                    stale = session.is_dir() and now - _newest_mtime(session) > max_age_seconds()
                except OSError:
                    continue
                if stale:
                    shutil.rmtree(session, ignore_errors=True)
                    removed += 1
        if removed:
            log.info("upload sweep: removed %d folder(s) under %s", removed, self.root)
        return removed

    def new_session(self, session_id: str | None = None) -> Path:
        """Return a new, empty, private folder for one browser session's uploads.

        Named by the server's ``session_id`` when given (so the server can remove it once the
        session is gone, app.housekeeping), else by a random name.
        """
        name = session_id if session_id and re.fullmatch(r"[A-Za-z0-9-]{1,64}", session_id) else None
        folder = self.folder / (name or secrets.token_hex(8))
        folder.mkdir(parents=True, mode=0o700, exist_ok=True)
        return folder

    def used_bytes(self) -> int:
        """Return the bytes every server's uploads take together."""
        return _size(self.root) if self.root.is_dir() else 0

    def save(self, session: Path, subfolder: str, name: str, data: bytes | memoryview) -> Path:
        """Write an upload into a session folder (atomically, once per content); return its path.

        Raises:
            UploadError: the quota would be passed (the message gives sizes and the setting),
                an empty name, or the folder cannot be written.
        """
        clean = _SAFE_NAME.sub("_", Path(str(name)).name).strip(" .")  # never trust a client-side path
        if not clean:
            raise UploadError(f"the upload's file name {name!r} is empty once cleaned")
        folder = Path(session) / subfolder
        path = folder / clean
        size = len(data)
        if path.is_file() and path.stat().st_size == size:
            return path  # the widget hands the same file to every rerun: write it once
        self.sweep()
        used, quota = self.used_bytes(), quota_bytes()
        if used + size > quota:
            raise UploadError(
                f"{clean} ({size / 2**20:.1f} MiB) does not fit in the upload quota: {used / 2**20:.1f} of "
                f"{quota / 2**20:.0f} MiB used (set PATHEX_UPLOAD_QUOTA_GB, or put large slides in a data folder)"
            )
        try:
            with atomic_write(path) as handle:
                handle.write(data)
        except OSError as exc:
            raise UploadError(f"cannot store the upload {clean}: {exc.strerror or exc}") from None
        return path
