"""What the browser tests share: a real app server on a free port, Debian's Chromium, waiting for a rerun."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


def require_browser() -> None:
    """Skip the test, saying why, when Debian's chromium or Playwright is absent."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium; .ci/run does it)")
    pytest.importorskip("playwright.sync_api")


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def app_server(
    data: Path, log_path: Path, extra_dirs: tuple[Path, ...] = (), *, session_ttl_s: int | None = None, housekeeping_s: float | None = None,
) -> Iterator[str]:
    """Run ``streamlit run app/main.py`` on ``data`` (as its demo folder) and ``extra_dirs``; yield its URL.

    Uploads go to ``log_path.parent / "uploads"``. ``session_ttl_s`` (how long a closed tab's
    session is kept for a reload) and ``housekeeping_s`` (how often the app releases closed
    sessions' uploads) shorten the server's defaults, for tests that watch a session end.
    """
    port = free_port()
    env = {
        **os.environ, "PATHEX_DEMO_DIR": str(data), "PATHEX_NO_DEMO_TRAINING": "1",
        "PATHEX_DATA_DIRS": os.pathsep.join(str(d) for d in extra_dirs),
        "PATHEX_UPLOAD_DIR": str(log_path.parent / "uploads"),
    }
    extra = []
    if session_ttl_s is not None:
        extra += ["--server.disconnectedSessionTTL", str(session_ttl_s)]
    if housekeeping_s is not None:
        env["PATHEX_HOUSEKEEPING_S"] = str(housekeeping_s)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port), "--server.headless", "true", *extra],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        url = f"http://localhost:{port}"
        try:
            for _ in range(120):
                try:
                    urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.5)
            else:
                pytest.fail(f"the app server did not start (log: {log_path})")
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=20)


# The app's own account of its script: Streamlit's root element carries the run state
# ("running", "notRunning", ...) and the connection state; the status widget is shown while a run
# or a reconnection is on.
APP_IDLE = (
    "() => { const app = document.querySelector('[data-testid=\"stApp\"]');"
    " return !!app && app.dataset.testScriptState === 'notRunning' && !document.querySelector('[data-testid=\"stStatusWidget\"]'); }"
)


def wait_for_run(page, timeout: float = 90) -> None:
    """Wait until Streamlit has finished the run an action just asked for (its root says it is not
    running, no status widget) and the page has drawn what the run sent.

    Half a second first: a widget's change reaches the server only then at the latest (a slider's
    key press is debounced), and the state reads "notRunning" until the server answers.
    """
    page.wait_for_timeout(500)
    page.wait_for_function(APP_IDLE, timeout=timeout * 1000)
    page.wait_for_timeout(150)


def assert_no_exception(page, where: str) -> None:
    """Fail when the page shows Streamlit's exception box."""
    boxes = page.locator('[data-testid="stException"]')
    assert boxes.count() == 0, f"exception on {where}: {boxes.first.inner_text()[:500]}"
