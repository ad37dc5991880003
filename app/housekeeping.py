"""Server housekeeping: give back what closed browser sessions held (their uploads, in memory and on disk).

Why by hand: Streamlit keeps a disconnected session in a TTL cache (``server.
disconnectedSessionTTL``, 120 s by default) so that a reload can resume it, but when the cache
drops an expired session it does not shut it down, so ``remove_session_files`` never runs and
the session's uploaded bytes stay in the uploaded-file manager for the life of the server
(measured: a 300 MiB upload kept ~340 MiB of server memory after its browser closed, see
``bench/bench_upload_memory.py``). There is no public session-end hook; this module compares,
every ``INTERVAL_S``, the sessions Streamlit still holds (active or resumable) with the
sessions that own uploads, and releases the others: their records in Streamlit's uploaded-file
manager and their folder in this server's upload folder (core.uploads). Every private
Streamlit attribute is reached defensively: if a future version moves it, the sweep logs once
and does nothing (uploads are then still removed by age, core.uploads).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)
log.setLevel(logging.INFO)  # its lines are rare and worth seeing in the server's log

INTERVAL_S = 30.0
_warned = False


def _runtime():
    from streamlit.runtime import Runtime

    return Runtime.instance() if Runtime.exists() else None


def live_session_ids() -> set[str] | None:
    """Return the ids of the sessions Streamlit still holds (connected, or stored for a reload); None if unknown."""
    global _warned
    runtime = _runtime()
    manager = getattr(runtime, "_session_mgr", None)
    if manager is None or not hasattr(manager, "list_sessions"):
        if runtime is not None and not _warned:
            log.warning("housekeeping: this Streamlit has no session list; uploads are removed by age only")
            _warned = True
        return None
    # list_sessions reads the TTL store, which drops expired sessions on the way.
    return {info.session.id for info in manager.list_sessions()}


def release_closed_sessions(upload_folder: Path | None = None) -> tuple[int, int]:
    """Release the uploads of sessions Streamlit no longer holds; return (sessions freed in memory, folders removed).

    Args:
        upload_folder: this server's upload folder (core.uploads.UploadStore.folder), whose
            subfolders are named by session id; None: memory only.
    """
    live = live_session_ids()
    if live is None:
        return 0, 0
    freed = 0
    files = getattr(_runtime(), "uploaded_file_mgr", None)
    storage = getattr(files, "file_storage", None)
    if isinstance(storage, dict) and hasattr(files, "remove_session_files"):
        for session_id in [s for s in list(storage) if s not in live]:
            files.remove_session_files(session_id)
            freed += 1
    removed = 0
    if upload_folder is not None and upload_folder.is_dir():
        for folder in upload_folder.iterdir():
            if folder.is_dir() and not folder.is_symlink() and folder.name not in live:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
    if freed:
        gc.collect()
        trimmed = trim_heap()
        log.info("housekeeping: released the uploads of %d closed session(s) (heap trimmed: %s)", freed, trimmed)
    if removed:
        log.info("housekeeping: removed %d closed session(s)' upload folder(s)", removed)
    return freed, removed


def trim_heap() -> bool:
    """Hand freed heap memory back to the operating system (glibc ``malloc_trim``); return whether it ran.

    An upload passes through many chunk-sized buffers; once freed they stay in glibc's arenas,
    counted in the server's resident memory, until trimmed.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return False
    return True


async def run_forever(upload_folder: Path | None, interval: float = INTERVAL_S) -> None:
    """Call :func:`release_closed_sessions` every ``interval`` seconds (in a worker thread) until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(release_closed_sessions, upload_folder)
        except Exception:  # housekeeping must never take the server down; say what failed
            log.exception("housekeeping failed")


@contextlib.asynccontextmanager
async def running(upload_folder: Path | None, interval: float = INTERVAL_S):
    """Run the housekeeping loop for the duration of the block (the server's lifespan)."""
    task = asyncio.create_task(run_forever(upload_folder, interval))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
