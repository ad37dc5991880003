"""Server housekeeping: give back what closed browser sessions held (their uploads and state, in memory and on disk).

Why by hand: Streamlit keeps a disconnected session in a TTL cache (``server.
disconnectedSessionTTL``, 120 s by default) so that a reload can resume it, but when the cache
drops an expired session it does not shut it down: ``AppSession.shutdown`` never runs, so the
session's uploaded bytes stay in the uploaded-file manager and its media files stay registered.
Worse, its session state (every widget value, the ``UploadedFile`` objects included) stays
alive as long as anything still points at the ``AppSession``, and Streamlit 1.67's runtime loop
does: ``Runtime._loop_coroutine`` keeps its loop variable ``active_session_info`` bound to the
last session it flushed until another session connects (measured with tracemalloc and
``gc.get_referrers``, see ``bench/bench_upload_memory.py``: after the last tab closed, a 300 MiB
upload's bytes stayed alive through UploadedFile <- widget ``Value`` <- ``WStates`` <-
``SessionState`` <- ``AppSession`` <- ``SessionInfo`` <- that coroutine; ~340 MiB of anonymous
memory).

There is no public session-end hook, so every ``INTERVAL_S`` this module compares the
sessions Streamlit still holds (connected, or stored for a reload) with the ones it saw at its
previous passes (weak references: it never keeps a session alive itself) and ends the others
as Streamlit would have: ``shutdown()`` (uploaded files, media files, script runner), then
their session state is cleared, so whatever still points at the session holds an empty shell.
Uploads of sessions it never saw (a session shorter than one interval) are released from the
uploaded-file manager by session id, and every upload folder of a session Streamlit no longer
holds (core.uploads) is removed. Every private Streamlit attribute is reached defensively: if a
future version moves one, the sweep logs once and does nothing (uploads are then still removed
by age, core.uploads).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import shutil
import weakref
from pathlib import Path

log = logging.getLogger(__name__)
log.setLevel(logging.INFO)  # its lines are rare and worth seeing in the server's log (a handler: running())

INTERVAL_S = 30.0
_warned = False
#: session id -> AppSession seen alive at a previous pass (weak: never keeps a session alive).
_seen: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def _runtime():
    from streamlit.runtime import Runtime

    return Runtime.instance() if Runtime.exists() else None


def live_sessions() -> dict | None:
    """Return session id -> AppSession of the sessions Streamlit still holds (connected, or stored for a reload); None if unknown."""
    global _warned
    runtime = _runtime()
    manager = getattr(runtime, "_session_mgr", None)
    if manager is None or not hasattr(manager, "list_sessions"):
        if runtime is not None and not _warned:
            log.warning("housekeeping: this Streamlit has no session list; uploads are removed by age only")
            _warned = True
        return None
    # list_sessions reads the TTL store, which drops expired sessions on the way.
    return {info.session.id: info.session for info in manager.list_sessions()}


def live_session_ids() -> set[str] | None:
    """Return the ids of the sessions Streamlit still holds (connected, or stored for a reload); None if unknown."""
    live = live_sessions()
    return None if live is None else set(live)


def end_dropped_sessions() -> int:
    """Shut down the sessions Streamlit dropped since the last call without shutting them down; return how many.

    Call it on the server's event loop thread (``AppSession`` is not thread-safe). A session
    is ended once it has left Streamlit's session list (or its id now names another session):
    ``shutdown()`` releases its uploaded files, media files and script runner, then its session
    state is cleared (its widget values hold the ``UploadedFile`` objects).
    """
    live = live_sessions()
    if live is None:
        return 0
    ended = 0
    for session_id, session in list(_seen.items()):
        if live.get(session_id) is not session:
            _seen.pop(session_id, None)
            _end(session)
            ended += 1
    _seen.update(live)
    return ended


def _end(session) -> None:
    try:
        session.shutdown()
    except Exception:  # a session half torn down must not stop the sweep; say what failed
        log.exception("housekeeping: shutting down a dropped session failed")
    state = getattr(session, "_session_state", None)
    if hasattr(state, "clear"):
        state.clear()


def release_closed_sessions(upload_folder: Path | None = None, ended: int = 0) -> tuple[int, int]:
    """Release the uploads of sessions Streamlit no longer holds; return (sessions freed in memory, folders removed).

    Safe in a worker thread. Collects garbage and trims the heap when anything was released.

    Args:
        upload_folder: this server's upload folder (core.uploads.UploadStore.folder), whose
            subfolders are named by session id; None: memory only.
        ended: sessions :func:`end_dropped_sessions` has just ended (their memory is freed here).
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
                forget_slides_under(folder)
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
    if freed or ended or removed:
        gc.collect()
        trimmed = trim_heap()
        log.info("housekeeping: ended %d dropped session(s), released the uploads of %d (heap trimmed: %s)", ended, freed, trimmed)
    if removed:
        log.info("housekeeping: removed %d closed session(s)' upload folder(s)", removed)
    return freed, removed


def forget_slides_under(folder: Path) -> int:
    """Drop every cached handle and tile cache of the slides inside ``folder`` (before it is removed); return how many.

    Three caches hold handles on an uploaded slide: core.slide_io's, the app's
    ``st.cache_resource`` of handles (app.context, keyed by path and mtime, so each file's own
    entry is cleared) and the tile server's tilers. Kept, each would hold the deleted file open
    (its disk space) with OpenSlide's tile cache and the encoded tiles in memory. The handles
    close once unreferenced (garbage collection; never closed here, a reader may hold one).
    """
    from app import context, tile_server
    from core import slide_io

    forgotten = 0
    cached = getattr(context, "_slide", None)  # app.context's handle cache: one entry per (path, mtime)
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and hasattr(cached, "clear"):
                cached.clear(str(path.resolve()), path.stat().st_mtime)
                forgotten += 1
        except OSError:
            continue
    slide_io.forget_under(folder)
    tile_server.forget_under(folder)
    return forgotten


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
    """Every ``interval`` seconds until cancelled: end dropped sessions (here, on the event loop), then release their uploads (in a worker thread)."""
    while True:
        await asyncio.sleep(interval)
        try:
            ended = end_dropped_sessions()
            await asyncio.to_thread(release_closed_sessions, upload_folder, ended)
        except Exception:  # housekeeping must never take the server down; say what failed
            log.exception("housekeeping failed")


def start_memory_trace(folder: Path, frames: int = 12) -> bool:
    """Debug only (``PATHEX_TRACEMALLOC_DIR``): on each SIGUSR2, trace Python allocations and dump a snapshot into ``folder``.

    The first signal starts ``tracemalloc`` (so the server starts and imports at full speed) and
    writes ``snapshot-1.tracemalloc``; each later one writes the next number. Compare them
    offline (``bench/bench_upload_memory.py --trace`` does): what grew was allocated after the
    first signal and is still alive. Tracing slows the server; never set this in production.
    Return whether the signal handler was installed (the event loop's thread only).
    """
    import signal
    import tracemalloc

    folder.mkdir(parents=True, exist_ok=True)
    count = [0]

    def dump() -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(frames)
        count[0] += 1
        gc.collect()
        path = folder / f"snapshot-{count[0]}.tracemalloc"
        tracemalloc.take_snapshot().dump(str(path.with_suffix(".part")))
        path.with_suffix(".part").rename(path)  # whoever waits for the file sees it whole
        log.info("housekeeping: memory snapshot %s", path)

    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, dump)
    except (RuntimeError, ValueError, NotImplementedError):
        log.warning("housekeeping: cannot take memory snapshots on SIGUSR2 here")
        return False
    return True


async def watch_event_loop(threshold_s: float) -> None:
    """Debug only (``PATHEX_LOOP_WATCH_S``): log what the event loop's thread is doing whenever it has not ticked for ``threshold_s``.

    A task ticks every 20 ms; a watchdog thread samples the loop thread's stack when the tick
    is late, once per stall, and logs the stall's length with that stack ("event loop
    stalled"). A stack inside ``select`` means the loop was ready but did not get the CPU or
    the GIL (other threads, other processes); anything else names the callback that held it.
    Runs until cancelled.
    """
    import sys
    import threading
    import time
    import traceback

    loop_thread = threading.get_ident()
    last_tick = [time.monotonic()]
    done = threading.Event()

    def watchdog() -> None:
        reported_for = None
        while not done.wait(0.05):
            tick = last_tick[0]
            late = time.monotonic() - tick
            if late > threshold_s and reported_for != tick:
                reported_for = tick
                frame = sys._current_frames().get(loop_thread)
                stack = "".join(traceback.format_stack(frame, limit=10)) if frame is not None else "?"
                log.warning("event loop stalled %.0f ms so far; its thread is at:\n%s", late * 1e3, stack)

    thread = threading.Thread(target=watchdog, name="pathex-loop-watch", daemon=True)
    thread.start()
    try:
        while True:
            last_tick[0] = time.monotonic()
            await asyncio.sleep(0.02)
    finally:
        done.set()


@contextlib.asynccontextmanager
async def running(upload_folder: Path | None, interval: float = INTERVAL_S):
    """Run the housekeeping loop for the duration of the block (the server's lifespan)."""
    import os

    if not log.handlers and not logging.getLogger().handlers:  # Streamlit configures only its own loggers
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))  # the lines name housekeeping
        log.addHandler(handler)
    if os.environ.get("PATHEX_TRACEMALLOC_DIR"):
        start_memory_trace(Path(os.environ["PATHEX_TRACEMALLOC_DIR"]))
    tasks = [asyncio.create_task(run_forever(upload_folder, interval))]
    if os.environ.get("PATHEX_LOOP_WATCH_S"):
        tasks.append(asyncio.create_task(watch_event_loop(float(os.environ["PATHEX_LOOP_WATCH_S"]))))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
