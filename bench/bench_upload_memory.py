"""Server memory around a large upload: before, while the session holds it, after the browser closed.

Starts ``streamlit run app/main.py`` (127.0.0.1, a free port, ``disconnectedSessionTTL`` short
so the closed session is dropped within the run) on a temp data folder of one small slide;
one warm-up session opens Review and closes (the first run imports torch and fills caches);
then a session uploads a generated single-level TIFF of ``--mib`` MiB (random pixels, stored
uncompressed so the file is that large) on Review and waits until the page shows it, and the
browser closes. Prints the server's RSS (streamlit and its children) at each step and up to
``--wait`` s after the close (by kind, from /proc/PID/smaps_rollup: anonymous, file-backed,
resident in mappings of deleted files), the upload folder's size on disk, and a FAIL line when
the memory does not come back within 20% of before or grows round after round.
``--trace`` also traces the server's Python allocations from 'before' on (tracemalloc, started
by SIGUSR2, app.housekeeping; slow) and prints what is still alive after the last round.

Where the memory went (2-core x86_64, 300 MiB upload): while held, +690 MiB: Streamlit's upload
record (the request body read whole, starlette_routes ``upload.read()``) and the copy
``UploadedFile.getbuffer()`` makes of it. Before app.housekeeping ended dropped sessions,
+340 MiB of anonymous memory stayed after the tab closed (after/before 1.45): the record's
bytes, alive through the session's widget state, because Streamlit 1.67's runtime loop keeps
its last flushed session in a loop variable (see app.housekeeping). Not file-backed memory
(an OpenSlide mmap of the deleted file would show there), not glibc arenas (malloc_trim runs).
Once sessions were ended, ~55 MiB more stayed per round (1.09, 1.17): the uploaded slide's
handle, kept by three caches (core.slide_io, app.context's ``st.cache_resource``, the tile
server's tilers) with OpenSlide's tile cache and the viewer's encoded tiles, and the deleted
file open; housekeeping now forgets them with the folder. Measured at load 8-11 on 2 cores:
before 740 MiB, after three rounds 777, 766, 770 MiB (1.05, 1.04, 1.04).

    python bench/bench_upload_memory.py [--mib 300] [--wait 90] [--rounds 2] [--trace]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ROOT,
    app_server,
    deleted_files_open,
    format_memory,
    load_average,
)

SESSION_TTL_S = 5  # the server keeps a closed session this long for a reload (default 120 s)
HOUSEKEEPING_S = 5  # how often the app releases closed sessions' uploads (default 30 s)


def memory_line(server) -> tuple[float, str]:
    """Return the server's RSS (MiB, with children) and a line of it by kind."""
    rss = server.rss_bytes() / 2**20
    kinds = format_memory(server.memory())
    count, size = deleted_files_open(server.proc.pid)
    deleted = f"; {count} deleted file(s) of {size:.0f} MiB still open" if count else ""
    return rss, f"{rss:.0f} MiB ({kinds}{deleted})" if kinds else f"{rss:.0f} MiB{deleted}"


def snapshot(server, folder: Path, number: int, timeout: float = 300) -> Path:
    """Ask the server for a tracemalloc snapshot (SIGUSR2, app.housekeeping) and wait until it is written."""
    import os
    import signal

    path = folder / f"snapshot-{number}.tracemalloc"
    os.kill(server.proc.pid, signal.SIGUSR2)
    started = time.monotonic()
    while not path.exists():  # renamed into place once written
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"no snapshot {path} after {timeout:.0f} s")
        time.sleep(1)
    return path


def compare_snapshots(before: Path, after: Path, top: int = 12) -> None:
    """Print the Python allocations that grew most from ``before`` to ``after`` (by line, then the largest by stack)."""
    import tracemalloc

    old, new = tracemalloc.Snapshot.load(str(before)), tracemalloc.Snapshot.load(str(after))
    total_old = sum(s.size for s in old.statistics("filename")) / 2**20
    total_new = sum(s.size for s in new.statistics("filename")) / 2**20
    print(f"tracemalloc: Python allocations before {total_old:.0f} MiB, after {total_new:.0f} MiB ({total_new - total_old:+.0f})")
    for stat in new.compare_to(old, "lineno")[:top]:
        print(f"  {stat.size_diff / 2**20:+8.1f} MiB {stat.count_diff:+8d} blocks  {stat.traceback[0]}")
    for stat in new.compare_to(old, "traceback")[:3]:
        print(f"  {stat.size_diff / 2**20:+8.1f} MiB allocated at:")
        for frame in stat.traceback.format(limit=12):
            print("     " + frame)


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
    parser.add_argument("--trace", action="store_true", help="trace the server's Python allocations (tracemalloc, slow) and "
                        "print what grew between before and after")
    parser.add_argument("--upload-timeout", type=float, default=600, help="seconds to wait for the page to show the upload")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    print(f"{load_average()} at the start")
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        tmp = Path(tmp)
        (tmp / "data" / "slides").mkdir(parents=True)
        write_slide(tmp / "data" / "slides" / "small.tiff", 4)
        (tmp / "data" / "cohort.csv").write_text("slide,label\nsmall,\n")  # a data folder, not a demo to generate
        big = write_slide(tmp / "big.tiff", args.mib)
        print(f"upload: {big.name}, {big.stat().st_size / 2**20:.0f} MiB")
        uploads = tmp / "uploads"
        env = {"PATHEX_HOUSEKEEPING_S": str(HOUSEKEEPING_S)}
        trace = tmp / "trace"
        if args.trace:
            env["PATHEX_TRACEMALLOC_DIR"] = str(trace)
        ttl = ("--server.disconnectedSessionTTL", str(SESSION_TTL_S))
        with app_server(tmp / "data", tmp / "server.log", uploads=uploads, env=env, args=ttl, timeout=120) as server:
            print(f"RSS cold: {memory_line(server)[1]}")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                context, _ = open_review(browser, server.url)
                context.close()
                time.sleep(SESSION_TTL_S + HOUSEKEEPING_S + 5)
                before, line = memory_line(server)
                print(f"RSS before (after a warm-up session, closed): {line}")
                if args.trace:
                    snapshot(server, trace, 1)

                afters = []
                for round_ in range(1, args.rounds + 1):
                    context, page = open_review(browser, server.url)
                    started = time.perf_counter()
                    page.locator('[data-testid="stMain"] [data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(big))
                    try:
                        page.get_by_text("Microns per pixel of big").wait_for(timeout=args.upload_timeout * 1000)
                    except Exception:
                        page.screenshot(path=str(ROOT / "test-artifacts" / "bench-upload-failed.png"), full_page=True)
                        raise
                    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=600_000)
                    holding, line = memory_line(server)
                    print(f"round {round_}: upload shown after {time.perf_counter() - started:.1f} s; RSS while the session holds it "
                          f"{line} (+{holding - before:.0f}); on disk {folder_mib(uploads):.0f} MiB")
                    closed = time.perf_counter()
                    context.close()
                    after, line = holding, ""
                    while time.perf_counter() - closed < args.wait:
                        time.sleep(5)
                        after, line = memory_line(server)
                        print(f"  round {round_}, {time.perf_counter() - closed:3.0f} s after the tab closed: {line}")
                        if after <= before * 1.2 and time.perf_counter() - closed > SESSION_TTL_S + HOUSEKEEPING_S + 5:
                            break
                    afters.append(after)
                    if args.trace:
                        snapshot(server, trace, round_ + 1)
                    print(f"round {round_}: RSS after {line} ({(after / before - 1) * 100:+.0f}% of before); "
                          f"upload folder on disk {folder_mib(uploads):.0f} MiB")
                browser.close()
            if args.trace:
                print("Python allocations alive after the last round that were made after 'before' (tracemalloc):")
                compare_snapshots(trace / "snapshot-1.tracemalloc", trace / f"snapshot-{len(afters) + 1}.tracemalloc")
                if len(afters) > 1:
                    print("... and those that grew from the first round's 'after' to the last's:")
                    compare_snapshots(trace / "snapshot-2.tracemalloc", trace / f"snapshot-{len(afters) + 1}.tracemalloc")
            print(f"{load_average()} at the end")
            print(f"summary: before {before:.0f} MiB; after each round {', '.join(f'{a:.0f}' for a in afters)} MiB; "
                  f"last after/before {afters[-1] / before:.2f} (target <= 1.20)")
            if afters[-1] > before * 1.2:
                print("FAIL: the server's memory did not come back within 20% of before")
            if len(afters) > 1 and afters[-1] > afters[0] * 1.05:
                print(f"FAIL: memory grows with each upload ({', '.join(f'{a:.0f}' for a in afters)} MiB after each round)")
        for line in (tmp / "server.log").read_text().splitlines():
            if "housekeeping" in line:
                print("server:", line.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
