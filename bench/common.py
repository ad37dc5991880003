"""What the benches that drive a real app server share: start it on a free port, wait for health, measure its memory.

``app_server`` is the one copy of "start ``streamlit run app/main.py`` on 127.0.0.1 and wait for
``/_stcore/health``" (bench_load, bench_upload_memory; bench_browser and bench_viewer can switch to
it). ``tests/browser_support.app_server`` does the same for the tests, but it reports through
pytest (``pytest.fail``), which a bench does not import.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages and the CPU count, as one line's words."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


@dataclass
class AppServer:
    """A running app server: its process, its URL (``http://127.0.0.1:PORT``) and its log file."""

    proc: subprocess.Popen
    url: str
    log_path: Path

    def rss_bytes(self) -> int:
        """Return the resident memory of the server and its children, bytes (0 once it has exited)."""
        return process_rss(self.proc.pid)

    def memory(self) -> dict[str, float]:
        """Return the server's memory by kind (:func:`memory_kinds`), MiB."""
        return memory_kinds(self.proc.pid)


def process_rss(pid: int) -> int:
    """Return the resident memory of a process and its children, bytes (0 when it is gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total


def memory_kinds(pid: int) -> dict[str, float]:
    """Return a process's resident memory by kind from ``/proc/PID/smaps_rollup``, MiB.

    Keys: ``rss``, ``anon`` (heap, arenas, anonymous mmaps: Python objects, numpy buffers),
    ``file`` (pages of mapped files: shared libraries, and any file a library keeps mapped) and
    ``deleted_maps`` (MiB resident in mappings of files already deleted, from ``/proc/PID/smaps``:
    a handle that outlived its file). Empty where /proc is not Linux's.
    """
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    fields = {}
    for line in rollup.splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0]) / 1024  # kB -> MiB
    rss, anon = fields.get("Rss", 0.0), fields.get("Anonymous", 0.0)
    deleted = 0.0
    with contextlib.suppress(OSError):
        current_deleted = False
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:  # a mapping's header line
                current_deleted = line.endswith("(deleted)")
            elif current_deleted and line.startswith("Rss:"):
                deleted += int(head[1]) / 1024
    return {"rss": rss, "anon": anon, "file": rss - anon, "deleted_maps": deleted}


def deleted_files_open(pid: int) -> tuple[int, float]:
    """Return how many deleted files a process keeps open and their size, MiB (their disk space is not freed until closed)."""
    count, size = 0, 0
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd).endswith(" (deleted)"):
                    count += 1
                    size += fd.stat().st_size
    return count, size / 2**20


def format_memory(kinds: dict[str, float]) -> str:
    """Return ``anon A, file-backed F, in deleted files D MiB`` for :func:`memory_kinds`' figures ('' without them)."""
    if not kinds:
        return ""
    return f"anon {kinds['anon']:.0f}, file-backed {kinds['file']:.0f}, in deleted files {kinds['deleted_maps']:.0f} MiB"


@contextlib.contextmanager
def app_server(
    data: Path, log_path: Path, *, tree: Path = ROOT, uploads: Path | None = None, env: dict[str, str] | None = None,
    args: tuple[str, ...] = (), timeout: float = 120.0,
) -> Iterator[AppServer]:
    """Run ``streamlit run app/main.py`` of ``tree`` on 127.0.0.1 and a free port with ``data`` as its demo folder.

    Yields once ``/_stcore/health`` answers; stops the server (its whole process group) on the
    way out. Raises RuntimeError, with the log's end, when it does not answer within ``timeout``
    seconds or exits first.

    Args:
        data: the data folder (``PATHEX_DEMO_DIR``; no demo training is started).
        log_path: where the server's output goes.
        tree: the checkout to run (a baseline worktree for before/after benches).
        uploads: the upload folder (``PATHEX_UPLOAD_DIR``), default ``log_path``'s folder / uploads.
        env: more environment variables (they win over the defaults above).
        args: more ``streamlit run`` options, e.g. ``("--server.disconnectedSessionTTL", "5")``.
    """
    port = free_port()
    environment = {
        **os.environ, "PATHEX_DEMO_DIR": str(data), "PATHEX_NO_DEMO_TRAINING": "1", "PATHEX_DATA_DIRS": "",
        "PATHEX_UPLOAD_DIR": str(uploads or log_path.parent / "uploads"), **(env or {}),
    }
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port), "--server.address", "127.0.0.1",
             "--server.headless", "true", "--browser.gatherUsageStats", "false", *args],
            cwd=tree, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            started = time.monotonic()
            while True:
                try:
                    urllib.request.urlopen(url + "/_stcore/health", timeout=1).read()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() - started > timeout:
                        raise RuntimeError(f"the app server did not start (log {log_path}): {log_path.read_text()[-2000:]}") from None
                    time.sleep(0.3)
            yield AppServer(proc, url, log_path)
        finally:
            stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started in its own session: SIGTERM to its group, SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
