"""How fast the synthetic demo cohort is written: CPU seconds per slide and time to the first slide.

Compares the generator of this checkout ("after") with the one of an earlier commit ("before",
default 2952ddd, the commit before the generator was vectorised), checked out with
``git worktree`` into a temporary folder, in the same run and at the same load:

1. CPU seconds per slide: ``write_slide`` of the same default-size slides (the first
   ``--slides`` of seed 0's layout, 6144 px wide at 0.5 µm/px) in one process each, measured
   with ``time.process_time`` (imports and planning not counted; the runs alternate before,
   after, before, after ... so a load change hits both).
2. A fresh first start: ``make_demo_cohort`` of the default cohort (24 slides, 2 worker
   processes on this machine) into an empty folder, from a fresh interpreter: seconds to the
   first slide written (from the process start, imports included) and which slide came first;
   with ``--whole`` also to the whole cohort.

3. ``--app``: the app's first start on an empty demo folder (``streamlit run app/main.py``
   and headless Debian Chromium, as a new user): seconds from the server's start to its health
   check, to the frame (title in the sidebar, progress line), to the first slide written, and
   to the first heatmap (Show the slides written so far, Run the model on the slide Review
   opens, the viewer's first overlay tile). The committed demo model is used.

Prints the load average (``os.getloadavg()``) before and after each part: the machine is shared.

    python bench/bench_demo_generation.py [--before 2952ddd] [--slides 4] [--no-cohort] [--app]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PER_SLIDE = r"""
import json, sys, time
from pathlib import Path
from core.demo import cohort_layout, plan_slide, write_slide
index, out = int(sys.argv[1]), Path(sys.argv[2])
name, label, split = cohort_layout(24, 0)[index]
plan = plan_slide(name, label, split, 6144, (0, index))
cpu, wall = time.process_time(), time.perf_counter()
write_slide(plan, out / f"{name}.tiff")
print(json.dumps({"slide": name, "label": label, "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}))
"""

FIRST_START = r"""
import time
started = time.perf_counter()
import json, sys
from pathlib import Path
from core.demo import make_demo_cohort
first, whole = {}, sys.argv[2] == "whole"
class Stop(Exception):
    pass
def on_slide(name):
    if not first:
        first.update(slide=name, first_s=time.perf_counter() - started)
        if not whole:
            raise Stop  # the pool's workers are terminated
try:
    make_demo_cohort(Path(sys.argv[1]), on_slide=on_slide)
    first["cohort_s"] = time.perf_counter() - started
except Stop:
    pass
print(json.dumps(first))
"""


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def run(tree: Path, script: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def first_start_in_the_app(folder: Path) -> None:
    """Print the timeline of the app's first start on the empty demo folder ``folder``."""
    import re
    import socket
    import urllib.request

    from playwright.sync_api import sync_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, PATHEX_DEMO_DIR=str(folder), PATHEX_NO_DEMO_TRAINING="1", PATHEX_UPLOAD_DIR=str(folder.parent / "uploads"))
    folder.parent.mkdir(parents=True, exist_ok=True)
    print(f"app: first start on an empty demo folder; {load()}")
    started = time.perf_counter()

    def since() -> float:
        return time.perf_counter() - started

    log = open(folder.parent / "server.log", "w")  # noqa: SIM115 (closed after the server stops)
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port), "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://localhost:{port}"
    try:
        while True:
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        print(f"  server answers its health check: {since():.1f} s")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            overlay: list[float] = []
            page.on("request", lambda r: overlay.append(since()) if "/tiles/overlay/" in r.url else None)
            page.goto(url, wait_until="domcontentloaded")
            page.locator('[data-testid="stSidebar"]').get_by_text("Pathology Explorer").first.wait_for(timeout=120_000)
            print(f"  title in the sidebar: {since():.1f} s")
            page.get_by_text(re.compile(r"Creating the synthetic demo cohort")).first.wait_for(timeout=120_000)
            print(f"  frame with its progress line: {since():.1f} s")
            while not list((folder / "slides").glob("*.tiff")):
                time.sleep(0.1)
            first = next((folder / "slides").glob("*.tiff")).stem
            print(f"  first slide written ({first}): {since():.1f} s")
            show = page.get_by_role("button", name=re.compile(r"^Show the \d+ slides? written so far"))
            show.first.wait_for(timeout=120_000)
            show.first.click()
            run = page.get_by_role("button", name=re.compile("^Run the model on demo_0"))
            run.first.wait_for(timeout=120_000)
            print(f"  Review offers to run the model on it ({run.first.inner_text().strip()}): {since():.1f} s")
            run.first.click()
            while not overlay:
                page.wait_for_timeout(100)
            print(f"  first heatmap tile requested: {overlay[0]:.1f} s; {load()}")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="2952ddd", help="commit of the 'before' generator")
    parser.add_argument("--slides", type=int, default=4, help="slides timed one by one (seed 0's first ones)")
    parser.add_argument("--no-cohort", action="store_true", help="skip the fresh first start of the whole cohort")
    parser.add_argument("--whole", action="store_true", help="write the whole cohort on the fresh start (default: stop at the first slide)")
    parser.add_argument("--app", action="store_true", help="also time the app's first start in a browser")
    parser.add_argument("--app-only", action="store_true", help="only time the app's first start")
    args = parser.parse_args()
    if args.app_only:
        with tempfile.TemporaryDirectory(prefix="bench-demo-app-", ignore_cleanup_errors=True) as tmp:  # the pool may still be writing
            first_start_in_the_app(Path(tmp) / "demo")
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}; {load()}")
    with tempfile.TemporaryDirectory(prefix="bench-demo-", ignore_cleanup_errors=True) as tmp:
        tmp = Path(tmp)
        before = tmp / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before], check=True, capture_output=True)
        try:
            trees = {"before": before, "after": ROOT}
            cpu: dict[str, list[float]] = {"before": [], "after": []}
            for index in range(args.slides):
                for which, tree in trees.items():
                    out = tmp / f"{which}-slides"
                    out.mkdir(exist_ok=True)
                    result = run(tree, PER_SLIDE, str(index), str(out))
                    cpu[which].append(result["cpu_s"])
                    print(f"  {which:6s} {result['slide']} ({result['label']:6s}): {result['cpu_s']:.2f} CPU-s, {result['wall_s']:.2f} s wall; {load()}")
            for which in trees:
                print(f"{which}: {sum(cpu[which]) / len(cpu[which]):.2f} CPU-s per slide (mean of {len(cpu[which])})")
            print(f"speed-up: {sum(cpu['before']) / sum(cpu['after']):.2f}x")
            if not args.no_cohort:
                for which, tree in trees.items():
                    print(f"{which}: fresh first start of the default cohort; {load()}")
                    result = run(tree, FIRST_START, str(tmp / f"{which}-cohort"), "whole" if args.whole else "first")
                    whole = f", whole cohort {result['cohort_s']:.1f} s" if "cohort_s" in result else ""
                    print(f"  first slide written ({result['slide']}) {result['first_s']:.1f} s after the process started{whole}; {load()}")
            if args.app:
                first_start_in_the_app(tmp / "app" / "demo")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False, capture_output=True)


if __name__ == "__main__":
    main()
