"""Server memory around a large upload: before, while the session holds it, after the browser closed.

Starts ``streamlit run app/main.py`` (127.0.0.1, a free port, ``disconnectedSessionTTL`` short
so the closed session is dropped within the run) on a temp data folder of one small slide;
one warm-up session opens Review and closes (the first run imports torch and fills caches);
then a session uploads a generated single-level TIFF of ``--mib`` MiB (random pixels, stored
uncompressed so the file is that large) on Review and waits until the page shows it, and the
browser closes. Prints the server's RSS (streamlit and its children) at each step and up to
``--wait`` s after the close, the upload folder's size on disk, and a FAIL line when the
memory does not come back within 20% of before. A benchmark, not a test.

    python bench/bench_upload_memory.py [--mib 300] [--wait 90]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import tifffile

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
SESSION_TTL_S = 5  # the server keeps a closed session this long for a reload (default 120 s)
HOUSEKEEPING_S = 5  # how often the app releases closed sessions' uploads (default 30 s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    """Return the resident memory of a process and its children, MiB."""
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def folder_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def write_slide(path: Path, mib: int) -> Path:
    """Write a single-level tiled RGB TIFF of about ``mib`` MiB (random pixels, uncompressed)."""
    side = int(np.sqrt(mib * 2**20 / 3)) // 256 * 256
    rng = np.random.default_rng(0)
    image = rng.integers(150, 256, size=(side, side, 3), dtype=np.uint8)
    tifffile.imwrite(path, image, photometric="rgb", tile=(256, 256), resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    return path


def open_review(browser, url: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("heading", name="Review").wait_for(timeout=180_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=180_000)
    return context, page


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=300, help="size of the uploaded file (MiB)")
    parser.add_argument("--wait", type=float, default=90, help="seconds to watch the memory after the browser closed")
    parser.add_argument("--rounds", type=int, default=2, help="sessions that each upload the file, one after the other")
    parser.add_argument("--upload-timeout", type=float, default=600, help="seconds to wait for the page to show the upload")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (2 cores); cpu count {os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        tmp = Path(tmp)
        (tmp / "data" / "slides").mkdir(parents=True)
        write_slide(tmp / "data" / "slides" / "small.tiff", 4)
        (tmp / "data" / "cohort.csv").write_text("slide,label\nsmall,\n")  # a data folder, not a demo to generate
        big = write_slide(tmp / "big.tiff", args.mib)
        print(f"upload: {big.name}, {big.stat().st_size / 2**20:.0f} MiB")
        uploads = tmp / "uploads"
        port = free_port()
        env = {
            **os.environ, "PATHEX_DEMO_DIR": str(tmp / "data"), "PATHEX_NO_DEMO_TRAINING": "1", "PATHEX_UPLOAD_DIR": str(uploads),
            "PATHEX_HOUSEKEEPING_S": str(HOUSEKEEPING_S),
        }
        log = open(tmp / "server.log", "w")
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port), "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.disconnectedSessionTTL", str(SESSION_TTL_S)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(240):
                try:
                    urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.5)
            print(f"RSS cold: {rss_mib(server.pid):.0f} MiB")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                context, _ = open_review(browser, url)
                context.close()
                time.sleep(SESSION_TTL_S + 10)
                before = rss_mib(server.pid)
                print(f"RSS before (after a warm-up session, closed): {before:.0f} MiB")

                afters = []
                for round_ in range(1, args.rounds + 1):
                    context, page = open_review(browser, url)
                    started = time.perf_counter()
                    page.locator('[data-testid="stMain"] [data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(big))
                    try:
                        page.get_by_text("Microns per pixel of big").wait_for(timeout=args.upload_timeout * 1000)
                    except Exception:
                        page.screenshot(path=str(ROOT / "test-artifacts" / "bench-upload-failed.png"), full_page=True)
                        raise
                    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=600_000)
                    holding = rss_mib(server.pid)
                    print(f"round {round_}: upload shown after {time.perf_counter() - started:.1f} s; RSS while the session holds it "
                          f"{holding:.0f} MiB (+{holding - before:.0f}); on disk {folder_mib(uploads):.0f} MiB")
                    closed = time.perf_counter()
                    context.close()
                    after = holding
                    while time.perf_counter() - closed < args.wait:
                        time.sleep(5)
                        after = rss_mib(server.pid)
                        print(f"  round {round_}, {time.perf_counter() - closed:3.0f} s after the tab closed: {after:.0f} MiB")
                        if after <= before * 1.2 and time.perf_counter() - closed > SESSION_TTL_S + HOUSEKEEPING_S + 5:
                            break
                    afters.append(after)
                    print(f"round {round_}: RSS after {after:.0f} MiB ({(after / before - 1) * 100:+.0f}% of before); upload folder on disk {folder_mib(uploads):.0f} MiB")
                browser.close()
            if afters[-1] > before * 1.2:
                print("FAIL: the server's memory did not come back within 20% of before")
            if len(afters) > 1 and afters[-1] > afters[0] * 1.05:
                print(f"FAIL: memory grows with each upload ({', '.join(f'{a:.0f}' for a in afters)} MiB after each round)")
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
            for line in (tmp / "server.log").read_text().splitlines():
                if "housekeeping" in line:
                    print("server:", line.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
