"""Bounded load test of the real app: 8 concurrent browser sessions against one Streamlit server.

Makes a small synthetic demo cohort in a temp folder and predicts its slides with the committed
demo model (models/demo-tiny.pt) into its results.sqlite, so the app has heatmaps without
clicking Run; starts ``streamlit run app/main.py`` on it (127.0.0.1, a free port); then opens 8
concurrent sessions (Playwright pages, each in its own context, in one headless Debian Chromium)
that each open Review, wait for the deep-zoom viewer, move t 5 times with the keyboard, pan by
mouse drags and zoom with the wheel, then open Explain from the sidebar and wait for its
pictures. Meanwhile a process of its own polls /_stcore/health every 100 ms. Prints every /tiles/
request's latency and status (requests the viewer cancels itself on pan/zoom, net::ERR_ABORTED,
are counted apart), the health latencies, the session wall times and the server's RSS
(streamlit and its children): cold, before (after one warm-up session, closed: the first run
imports torch and fills the caches), at peak and after the sessions closed (up to 60 s).

Closed sessions are dropped after SESSION_TTL_S (10 s, not Streamlit's 120 s) and ended by the
app's housekeeping (every HOUSEKEEPING_S), so 'before' and 'after' are both measured with the
closed sessions gone. ``--loop-watch`` has the server log its event loop thread's stack at
every stall > 250 ms (PATHEX_LOOP_WATCH_S, app.housekeeping) and prints where they were.

What stalled the loop (2-core x86_64; the machine shared, load 10-24 from other jobs, so every
figure is CPU-bound): starting an anyio worker thread for the tile route's tiler look-up (up to
2.3 s: the new thread waits for the GIL; now the look-up and encoded tiles are answered on the
loop, app.tile_server), Streamlit's reload-on-save watcher walking ~2,500 modules for each new
session (0.4 s each; off in .streamlit/config.toml). What is left: stalls sampled inside
``select``, socket writes and the loop's self-pipe, i.e. the loop thread was ready but got
neither a core nor the GIL (8 sessions' script threads, torch, 8 Chromium renderers, other
jobs): CPU-bound, not a callback of ours. Figures, same machine, one run each:

    change                       load before/after  tile p50/p99 ms  health p99/max ms  failed polls  stalls  RSS after/before
    as the last session left     14.4 / 23.5        1755 / 57063     505 / 4812         12            49      1.03
    + tile look-ups on the loop  13.3 / 24.1        1083 / 29659     1233 / 3697        13            38      1.06
    + no source watcher          9.7 / 19.2         1135 / 45903     699 / 1852         9             43      1.03
    + health polled by its own   15.0 / 18.3        1570 / 34975     799 / 3164         10            42      1.06
      process (not the driver's)

No tile request failed in any run; the failed health polls are 5 s timeouts.

Then with the other engineers' jobs done (load 1.2 and 6.9 before the two runs, 9-10 after), after the
session fixes (getvalue uploads, one byte-bounded slide tile cache):

    Chromium niceness   tile p50/p99 ms   health p99/max ms   failed polls   RSS after/before
    0                   1046 / 17966      1498 / 3896         5              1.05
    19 (--browser-nice) 755 / 21173       955 / 1952          6              1.03

Then without Streamlit's full garbage collection after every script run (runner.postScriptGC =
false in .streamlit/config.toml: gc.collect(2) holds the GIL ~200 ms with torch loaded, after
every run of every session), Chromium at niceness 0:

    load before   tile p50/p99 ms   health p99/max ms   failed polls   sessions median   RSS after/before
    1.5           173 / 1789        477 / 1597          0              55 s              1.05   PASS
    7.0           363 / 1216        431 / 1457          0              42 s              1.02   PASS

(the polls that timed out before were the loop starved by back-to-back full collections).

A benchmark, not a test: it exits non-zero only when the script itself fails, and prints a
FAIL line when a request failed or the memory did not come back within 20%.

    python bench/bench_load.py [--sessions 8] [--timeout 300] [--loop-watch]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import CHROMIUM, CHROMIUM_ARGS, app_server

STEP_MS = 90_000  # per-step timeout inside a session
SESSION_TTL_S = 10  # a closed tab's session is kept this long for a reload (Streamlit's default: 120 s)
HOUSEKEEPING_S = 5  # how often the app ends dropped sessions (default 30 s)


class GlobalTimeout(Exception):
    pass


def make_cohort(out: Path) -> int:
    """Write the demo cohort and predict every slide with the demo model; return the patch count."""
    from core.demo import make_demo_cohort
    from core.inference import PredictionRunner, model_tiling
    from core.model import load_checkpoint
    from core.store import ResultStore

    make_demo_cohort(out, n_slides=4, seed=3, size=2048, workers=1)
    model, metadata = load_checkpoint(ROOT / "models" / "demo-tiny.pt")
    runner = PredictionRunner(model, model_id=metadata["model_id"], metadata=metadata)
    store = ResultStore(out / "results.sqlite")
    try:
        return sum(runner.predict_slide(p, store, model_tiling(metadata)).run.n_done for p in sorted((out / "slides").glob("*.tiff")))
    finally:
        store.close()


def pct(values: list[float], qs=(50, 95, 99)) -> str:
    if not values:
        return "n/a (no samples)"
    return "  ".join(f"p{q} {v:7.1f} ms" for q, v in zip(qs, np.percentile(values, qs))) + f"  max {max(values):7.1f} ms  (n={len(values)})"


class Recorder:
    """Tile request latencies (request event -> response event) and statuses, from page events."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        self.latency: list[float] = []
        self.browser_ttfb: list[float] = []
        self.statuses: list[int] = []
        self.failures: list[str] = []
        self.aborted: list[str] = []  # cancelled by the viewer itself (a tile panned/zoomed away)
        self.outside: list[str] = []

    def attach(self, page) -> None:
        page.on("request", self.on_request)
        page.on("response", self.on_response)
        page.on("requestfailed", self.on_failed)

    def on_request(self, request) -> None:
        url = request.url
        if not re.match(r"^(https?://(localhost|127\.0\.0\.1)(:\d+)?/|data:|blob:)", url):
            self.outside.append(url)
        if "/tiles/" in url:
            self.started[id(request)] = time.perf_counter()

    def on_response(self, response) -> None:
        request = response.request
        if "/tiles/" not in request.url:
            return
        started = self.started.pop(id(request), None)
        if started is not None:
            self.latency.append((time.perf_counter() - started) * 1e3)
        self.statuses.append(response.status)
        timing = request.timing  # browser-side, ms relative to startTime
        if timing and timing.get("responseStart", -1) >= 0:
            self.browser_ttfb.append(timing["responseStart"])

    def on_failed(self, request) -> None:
        if "/tiles/" in request.url:
            self.started.pop(id(request), None)
            what = f"{request.url} ({request.failure})"
            (self.aborted if "ERR_ABORTED" in str(request.failure) else self.failures).append(what)


async def wait_for_run(page, timeout_ms: int = STEP_MS) -> None:
    await page.wait_for_timeout(300)
    await page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms)
    await page.wait_for_timeout(200)


async def session(browser, url: str, recorder: Recorder, index: int, times: dict) -> dict:
    """One user: Review (viewer, t x5, pan, zoom), then Explain; fill and return ``times`` (step seconds)."""
    times["index"] = index
    started = time.perf_counter()
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = await context.new_page()
        recorder.attach(page)
        await page.goto(url, wait_until="domcontentloaded", timeout=STEP_MS)
        await page.get_by_role("heading", name="Review").first.wait_for(timeout=STEP_MS)
        canvas = page.locator(".pathex-stage")  # the OpenSeadragon viewer (app/viewer)
        await canvas.wait_for(timeout=STEP_MS)
        await wait_for_run(page)
        times["viewer"] = time.perf_counter() - started

        mark = time.perf_counter()
        slider = page.locator('[data-testid="stSidebar"] input[aria-label="Decision threshold t"]')
        shown = page.locator('[data-testid="stSidebar"] [data-testid="stSliderThumbValue"]').first
        for _ in range(5):
            before = (await shown.inner_text()).strip()
            await slider.press("ArrowRight", timeout=STEP_MS)
            await page.wait_for_function(
                "([el, old]) => el.textContent.trim() !== old", arg=[await shown.element_handle(), before], timeout=STEP_MS
            )
            await wait_for_run(page)
        await canvas.wait_for(timeout=STEP_MS)
        times["threshold x5"] = time.perf_counter() - mark

        mark = time.perf_counter()
        await canvas.scroll_into_view_if_needed(timeout=STEP_MS)
        box = await canvas.bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        for dx, dy in ((150, 80), (-220, 40), (90, -160)):
            await page.mouse.move(cx, cy)
            await page.mouse.down()
            await page.mouse.move(cx + dx, cy + dy, steps=8)
            await page.mouse.up()
            await page.wait_for_timeout(300)
        await page.mouse.move(cx, cy)
        for _ in range(6):
            await page.mouse.wheel(0, -400)
            await page.wait_for_timeout(250)
        await page.wait_for_timeout(1500)  # the tiles of the last zoom
        times["pan+zoom"] = time.perf_counter() - mark

        mark = time.perf_counter()
        await page.get_by_role("link", name="Explain").first.click(timeout=STEP_MS)
        await page.get_by_role("heading", name="Explain").first.wait_for(timeout=STEP_MS)
        await wait_for_run(page, 2 * STEP_MS)
        await page.locator('[data-testid="stImage"] img').first.wait_for(timeout=STEP_MS)
        times["explain"] = time.perf_counter() - mark
        times["errors"] = await page.locator('[data-testid="stException"]').count()
    finally:
        times["wall"] = time.perf_counter() - started
        await context.close()
    return times


def niced_chromium(folder: Path, niceness: int) -> str:
    """Return an executable that starts Debian's Chromium at ``niceness`` (0: Chromium itself).

    The 8 sessions' browsers stand in for people on their own machines; on this 2-core box they
    take the server's CPU, which no deployed server pays. ``--browser-nice 19`` gives the server
    the cores first, so the figures say more about the server and less about the browsers.
    """
    if niceness <= 0:
        return CHROMIUM
    wrapper = folder / "chromium-niced"
    wrapper.write_text(f'#!/bin/sh\nexec nice -n {int(niceness)} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


async def run_sessions(url: str, n: int, recorder: Recorder, budget: float, times: list[dict], executable: str = CHROMIUM) -> list:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            times[:] = [{} for _ in range(n)]
            tasks = [session(browser, url, recorder, i, times[i]) for i in range(n)]
            return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=budget)
        finally:
            await browser.close()


def poll_health(url: str, out: Path, stop: Path) -> None:
    """Poll /_stcore/health every 100 ms until ``stop`` exists; write 'ok MS' or 'fail WHY' lines to ``out``.

    Run in a process of its own (``--poll-health``): in this one, the Playwright driver of 8
    pages competes for the GIL and would add its own delays to the figures.
    """
    with out.open("w") as lines:
        while not stop.exists():
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=5) as r:
                    r.read()
                    lines.write(f"ok {(time.perf_counter() - started) * 1e3:.1f}\n" if r.status < 400 else f"fail status {r.status}\n")
            except Exception as exc:  # noqa: BLE001 - a failed poll is a figure
                lines.write(f"fail {type(exc).__name__}: {exc}\n")
            lines.flush()
            time.sleep(max(0.0, 0.1 - (time.perf_counter() - started)))


def start_health_poller(url: str, folder: Path) -> tuple[subprocess.Popen, Path, Path]:
    """Start :func:`poll_health` in a process of its own; return it, its output file and its stop file."""
    out, stop = folder / "health.txt", folder / "health.stop"
    proc = subprocess.Popen([sys.executable, __file__, "--poll-health", url, str(out), str(stop)])
    return proc, out, stop


def stop_health_poller(proc: subprocess.Popen, out: Path, stop: Path) -> tuple[list[float], list[str]]:
    """Stop the poller; return the latencies (ms) of the answered polls and the failed ones."""
    stop.touch()
    proc.wait(timeout=15)
    latencies, failures = [], []
    for line in out.read_text().splitlines() if out.exists() else []:
        kind, _, rest = line.partition(" ")
        (latencies.append(float(rest)) if kind == "ok" else failures.append(rest))
    return latencies, failures


def print_stalls(log_path: Path, top: int = 8) -> None:
    """Summarise the server's 'event loop stalled' lines (app.housekeeping.watch_event_loop) by the innermost frame of ours or a library's."""
    from collections import Counter

    text = log_path.read_text(errors="replace")
    stalls = re.findall(r"event loop stalled (\d+) ms so far; its thread is at:\n((?:  File .*\n(?:    .*\n)?)+)", text)
    where = Counter()
    for _, stack in stalls:
        frames = re.findall(r'  File "(.+?)", line (\d+), in (\S+)', stack)
        innermost = frames[-1] if frames else ("?", "0", "?")
        where[f"{Path(innermost[0]).name}:{innermost[1]} {innermost[2]}"] += 1
    print(f"event loop stalls > 250 ms: {len(stalls)}; innermost frame of the loop thread when sampled:")
    for frame, count in where.most_common(top):
        print(f"  {count:4d}  {frame}")
    if stalls:
        longest = max(stalls, key=lambda s: int(s[0]))
        print(f"a stall's stack ({longest[0]} ms when sampled):\n{longest[1].rstrip()}")


def main() -> int:
    if sys.argv[1:2] == ["--poll-health"]:  # the health poller's own process (start_health_poller)
        poll_health(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300, help="global timeout in seconds (default 300)")
    parser.add_argument("--browser-nice", type=int, default=0, help="run the sessions' Chromium at this niceness (19: the "
                        "server gets the CPUs first, as when the browsers are on people's own machines; default 0)")
    parser.add_argument("--loop-watch", action="store_true", help="have the server log what its event loop's thread was doing "
                        "whenever the loop stalled > 250 ms (PATHEX_LOOP_WATCH_S, app.housekeeping) and print a summary")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout

    def on_alarm(signum, frame):
        raise GlobalTimeout(f"global timeout of {args.timeout:.0f} s reached")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.timeout))

    tmp = Path(tempfile.mkdtemp(prefix="bench_load_"))
    stop = threading.Event()
    poller = None
    health_poller = None
    stack = contextlib.ExitStack()
    try:
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        patches = make_cohort(tmp / "cohort")
        print(f"cohort: 4 synthetic slides of 2048 px, {patches} patches predicted with models/demo-tiny.pt in {time.perf_counter() - t0:.1f} s")

        # Closed sessions are dropped SESSION_TTL_S after their tab closed (Streamlit's default: 120 s) and
        # ended by the app's housekeeping within HOUSEKEEPING_S, so the memory after is measured within the run.
        env = {"PATHEX_HOUSEKEEPING_S": str(HOUSEKEEPING_S), **({"PATHEX_LOOP_WATCH_S": "0.25"} if args.loop_watch else {})}
        ttl = ("--server.disconnectedSessionTTL", str(SESSION_TTL_S))
        t0 = time.perf_counter()
        server = stack.enter_context(app_server(tmp / "cohort", tmp / "server.log", uploads=tmp / "uploads", env=env, args=ttl, timeout=60))
        url = server.url
        server_rss = server.rss_bytes
        print(f"server up in {time.perf_counter() - t0:.1f} s on {url}")
        time.sleep(2)
        rss_cold = server_rss()
        # One warm-up session, closed, before the measured ones: the first run of the app imports
        # torch and loads the model and caches, which a server keeps for its whole life.
        t0 = time.perf_counter()
        warm = asyncio.run(run_sessions(url, 1, Recorder(), 90, []))[0]
        if not isinstance(warm, dict):
            raise RuntimeError(f"the warm-up session failed: {warm!r}")  # noqa: TRY004
        time.sleep(SESSION_TTL_S + HOUSEKEEPING_S + 2)  # measured as 'after' is: the closed session dropped and ended
        rss_before = server_rss()
        print(f"warm-up session (one, alone): {time.perf_counter() - t0:.1f} s; RSS cold {rss_cold / 2**20:.0f} MiB -> warm {rss_before / 2**20:.0f} MiB")

        peak = [rss_before]
        health_poller = start_health_poller(url, tmp)

        def poll_rss():
            while not stop.is_set():
                peak[0] = max(peak[0], server_rss())
                stop.wait(0.5)

        poller = [threading.Thread(target=poll_rss, daemon=True)]
        for t in poller:
            t.start()

        recorder = Recorder()
        budget = max(30.0, deadline - time.monotonic() - 75)  # leave time for the memory wait and teardown
        t0 = time.perf_counter()
        partial: list[dict] = []
        try:
            results = asyncio.run(run_sessions(url, args.sessions, recorder, budget, partial, niced_chromium(tmp, args.browser_nice)))
        except TimeoutError:
            results = [RuntimeError(f"did not finish within {budget:.0f} s; steps done: "
                                    + (", ".join(f"{k} {v:.1f} s" for k, v in t.items() if k not in ("index", "wall")) or "none"))
                       for t in partial]
        sessions_wall = time.perf_counter() - t0
        stop.set()
        for t in poller:
            t.join(timeout=5)
        health, health_failures = stop_health_poller(*health_poller)

        # The pages are closed: wait until Streamlit drops the sessions, housekeeping ends them and the RSS settles.
        t0 = time.perf_counter()
        samples = [server_rss()]
        wait_limit = min(60.0, max(5.0, deadline - time.monotonic() - 10))
        while time.perf_counter() - t0 < wait_limit:
            time.sleep(1)
            samples.append(server_rss())
            if samples[-1] <= rss_before * 1.2 and time.perf_counter() - t0 > SESSION_TTL_S + HOUSEKEEPING_S + 2:
                break
        rss_after = samples[-1]
        settle = time.perf_counter() - t0
        load_after = os.getloadavg()

        mb = 1 / 2**20
        n_tiles = len(recorder.statuses) + len(recorder.failures) + len(recorder.aborted)
        bad_status = sum(s >= 400 for s in recorder.statuses)
        failed = bad_status + len(recorder.failures)
        ok_sessions = [r for r in results if isinstance(r, dict)]
        broken = [r for r in results if not isinstance(r, dict)]
        ratio = rss_after / rss_before if rss_before else float("nan")

        print()
        print(f"machine: {os.cpu_count()} CPUs, load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
              f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
        if (os.cpu_count() or 1) <= 2:
            print(f"note: on {os.cpu_count()} cores the server, {args.sessions} Chromium renderers and the explanations share the CPUs: "
                  "these figures are CPU-bound, not a measure of the server alone")
        print(f"browsers: Chromium at niceness {args.browser_nice}" + (" (the server has the CPUs first)" if args.browser_nice > 0 else ""))
        print(f"sessions: {args.sessions} concurrent, {len(ok_sessions)} completed, {len(broken)} failed; all sessions {sessions_wall:.1f} s")
        for r in sorted(ok_sessions, key=lambda r: r["index"]):
            steps = "  ".join(f"{k} {r[k]:5.1f} s" for k in ("viewer", "threshold x5", "pan+zoom", "explain"))
            boxes = f"  EXCEPTION BOXES: {r['errors']}" if r["errors"] else ""
            print(f"  session {r['index']}: wall {r['wall']:5.1f} s  ({steps}){boxes}")
        for r in broken:
            print(f"  session failed: {type(r).__name__}: {str(r).splitlines()[0][:300] if str(r) else ''}")
        if ok_sessions:
            walls = [r["wall"] for r in ok_sessions]
            print(f"session wall times: median {np.median(walls):.1f} s, max {max(walls):.1f} s")
        print(f"tile requests: {n_tiles}, failed {failed} (status >= 400: {bad_status}, network failures: {len(recorder.failures)}); "
              f"{len(recorder.aborted)} more cancelled by the viewer itself (net::ERR_ABORTED on pan/zoom, not counted as failed)")
        print(f"tile latency (request -> response event)  {pct(recorder.latency)}")
        print(f"tile time to first byte (browser timing)  {pct(recorder.browser_ttfb)}")
        print(f"health /_stcore/health every 100 ms       {pct(health, (50, 99))}, failed polls {len(health_failures)}")
        print(f"server RSS (streamlit + children): cold (no session yet) {rss_cold * mb:.0f} MiB, "
              f"before (warm, after one closed session) {rss_before * mb:.0f} MiB, peak {peak[0] * mb:.0f} MiB, "
              f"after {rss_after * mb:.0f} MiB ({settle:.0f} s after closing); after/before {ratio:.2f} (target: within 20%, <= 1.20); after/cold {rss_after / rss_cold:.2f}")
        if recorder.outside:
            print(f"requests that left 127.0.0.1: {recorder.outside[:5]}")

        problems = []
        if failed:
            problems.append(f"{failed} tile request(s) failed: {(recorder.failures or [s for s in recorder.statuses if s >= 400])[:3]}")
        if health_failures:
            problems.append(f"{len(health_failures)} health poll(s) failed: {health_failures[:3]}")
        if broken:
            problems.append(f"{len(broken)} session(s) did not complete")
        if not ratio <= 1.2:
            problems.append(f"memory did not return within 20% (after/before {ratio:.2f})")
        if recorder.outside:
            problems.append("requests left 127.0.0.1")
        print("FAIL: " + "; ".join(problems) if problems else "PASS: no failed request, memory back within 20%")
        return 0
    finally:
        signal.alarm(0)
        stop.set()
        if health_poller is not None and health_poller[0].poll() is None:
            health_poller[0].terminate()
            health_poller[0].wait(timeout=10)
        stack.close()  # stops the server
        if args.loop_watch and (tmp / "server.log").exists():
            print_stalls(tmp / "server.log")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
