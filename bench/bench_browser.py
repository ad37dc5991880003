"""Benchmark: speed as a person feels it in the browser, interaction by interaction.

A real server (127.0.0.1) and headless Debian Chromium (Playwright, /usr/bin/chromium) on a
cohort with one slide of 100,000 patch predictions (written straight into the store, as
bench_review.py / bench_viewer.py do), two small predicted slides and a few small slides without
predictions (for "Run the model"). For each interaction: the time from the input event to the
new result drawn and the page settled (no script running, no stale element), median and max of
``--reps`` repetitions, printed with its target and beside it the AppTest rerun time of the same
interaction (the script's part alone; "-" where AppTest cannot play it).

    python bench/bench_browser.py                                  # this tree
    git worktree add /tmp/before <commit> && python bench/bench_browser.py --tree /tmp/before   # another tree, same fixture
    python bench/bench_browser.py --against /tmp/before      # the same interactions on both trees, interleaved (same load)
    python bench/bench_browser.py --split                    # where a t move's time goes (messages, render, tiles)

Bounded: every wait has a timeout, the server is stopped at the end. The machine is shared:
the load average is printed before and after; compare runs made back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # reported when the browser part starts
    PlaywrightTimeout = TimeoutError

PATCH = 64  # level-0 px; the big slide's grid (20,480 px square: 102,400 patches, 100,000 kept)
SETTLED = """!document.querySelector('[data-testid="stStatusWidget"]') && !document.querySelector('[data-stale="true"]')"""
# The viewer has drawn what it was last given: the slide, the overlay and the t outlines
# (viewer.drawn(); a tree from before it existed: the overlay, which then held the outlines).
VIEWER_DRAWN = """(() => { const v = window.pathexViewer; if (v && v.drawn) return v.drawn();
    return !!(v && v.viewer && v.overlay && !v.pendingOverlay
    && v.overlayDrawn.token === v.overlayRequested.token && v.viewer.world.getItemCount() >= 2
    && v.viewer.world.getItemAt(0).getFullyLoaded()); })()"""
TO_PAGE = """([x, y]) => { const v = window.pathexViewer, r = v.stage.getBoundingClientRect();
    const p = v.item().imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y)); return [r.x + p.x, r.y + p.y]; }"""
SELECTED = """() => { const r = document.querySelector('[data-testid="pathexSelected"]');
    return r ? `${r.getAttribute('x')},${r.getAttribute('y')}` : ''; }"""
# The charts a person sees (those in the window: app.charts draws the others when the browser is
# idle; st.plotly_chart draws them all at once), each with its plotly state (gd), for any tree.
CHARTS_IN_VIEW = """[...document.querySelectorAll('[data-testid="stMain"] [data-testid="pathexChart"], [data-testid="stMain"] [data-testid="stPlotlyChart"]')]
    .filter((box) => { const r = box.getBoundingClientRect(); return r.width > 0 && r.bottom > 0 && r.top < window.innerHeight; })
    .map((box) => (box.matches('.js-plotly-plot') ? box : box.querySelector('.js-plotly-plot')))"""
# Threshold tuning's charts in view have drawn t = v: the curves' point at t is named "t = v", the
# confusion matrices' titles end in it.
CHARTS_AT_T = """(() => { const charts = %(in_view)s;
    return charts.length >= 1 && charts.every((gd) => gd && ((gd._fullData || []).some((tr) => tr.name === %(t)s)
      || ((gd._fullLayout && gd._fullLayout.title && gd._fullLayout.title.text) || '').endsWith(%(t)s))); })()"""
# The FROC chart's title is the mode's.
FROC_TITLE = """[...document.querySelectorAll('[data-testid="stMain"] .js-plotly-plot')].some((gd) =>
    ((gd._fullLayout && gd._fullLayout.title && gd._fullLayout.title.text) || '') === %s)"""
PAGES = ["Review", "Threshold tuning", "Explain", "Network", "CNN basics", "Training"]
TIMEOUT_MS = 180_000


# -- the fixture -------------------------------------------------------------------------------
def small_slide(path: Path, seed: int) -> None:
    """A 2048 x 1536 pyramidal TIFF (0.5 µm/px) with a textured tissue block, different per seed."""
    import numpy as np
    import tifffile

    rng = np.random.default_rng(seed)
    image = np.full((1536, 2048, 3), 250, np.uint8)
    x0, y0 = 300 + 40 * seed % 400, 200 + 30 * seed % 300
    image[y0 : y0 + 900, x0 : x0 + 1200] = np.clip(np.array([220, 140, 190]) + rng.integers(-25, 26, (900, 1200, 1)), 0, 255)
    with tifffile.TiffWriter(path) as tif:
        level = image
        for i in range(3):
            res = 1e4 / (0.5 * 2**i)
            tif.write(level, photometric="rgb", tile=(128, 128), compression="zlib", subfiletype=1 if i else 0,
                      resolution=(res, res), resolutionunit="CENTIMETER", metadata=None)
            level = level[::2, ::2]


def prepare(folder: Path, big_source: Path, n_fresh: int) -> dict:
    """Write the data folder; return what the measurements need (slide names, the big slide's predictions)."""
    import numpy as np
    import torch

    from core.model import build_model, save_checkpoint
    from core.slide_io import open_slide
    from core.store import ResultStore
    from core.tiling import TilingParams, grid_corners

    if folder.exists():
        shutil.rmtree(folder)
    (folder / "slides").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "annotations").mkdir()
    big = folder / "slides" / "big.tiff"
    try:
        os.link(big_source, big)
    except OSError:
        shutil.copy(big_source, big)
    smalls = ["small_a", "small_b"]
    fresh = [f"fresh_{i}" for i in range(n_fresh)]
    for i, name in enumerate(smalls + fresh):
        small_slide(folder / "slides" / f"{name}.tiff", i + 1)
    rows = ["slide,label,split", "big,tumor,test", "small_a,normal,test", "small_b,tumor,test"] + [f"{n},normal,test" for n in fresh]
    (folder / "cohort.csv").write_text("\n".join(rows) + "\n")
    torch.manual_seed(0)
    meta = {"patch_size": PATCH, "level": 0, "label": "bench"}
    model_id = save_checkpoint(folder / "models" / "bench-tiny.pt", build_model("tiny"), meta)
    rng = np.random.default_rng(0)
    out = {}
    with ResultStore(folder / "results.sqlite") as store:
        store.register_model(model_id, arch="tiny", metadata=meta)
        for name, limit in [("big", 100_000), ("small_a", 10**9), ("small_b", 10**9)]:
            path = folder / "slides" / f"{name}.tiff"
            slide = open_slide(path)
            x, y, size0 = grid_corners(slide.dimensions, 1.0, PATCH, PATCH)
            keep = np.sort(rng.choice(x.size, size=min(limit, x.size), replace=False))
            x, y = x[keep], y[keep]
            w, h = slide.dimensions
            # A smooth field with one hot spot (F(I) 0.1 .. 1): every t step changes the outlines.
            prob = np.clip(0.1 + 0.9 * np.exp(-(((x - w / 2) / (w / 5)) ** 2 + ((y - h / 2) / (h / 6)) ** 2)) + rng.normal(0, 0.03, x.size), 0, 1)
            record = store.register_slide(path, width=w, height=h, mpp=slide.mpp)
            run = store.get_or_create_run(record.id, model_id, {"tiling": TilingParams(level=0, patch_size=PATCH).to_dict()})
            store.set_total(run.id, x.size)
            store.add_predictions(run.id, x, y, size0, size0, prob)
            store.finish_run(run.id)
            out[name] = {"x": x, "y": y, "prob": prob, "size0": int(size0), "dims": (w, h)}
    # The big slide's tumour: the hot spot, as a GeoJSON polygon (level-0 px), so FROC has a tumour to find.
    w, h = out["big"]["dims"]
    ring = [[w * 0.42, h * 0.43], [w * 0.58, h * 0.43], [w * 0.58, h * 0.57], [w * 0.42, h * 0.57], [w * 0.42, h * 0.43]]
    (folder / "annotations" / "big.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"classification": {"name": "Tumor"}}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    return {"big": out["big"], "small_a": out["small_a"], "fresh": fresh, "model_id": model_id}


def serve(tree: Path, data: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PATHEX_DEMO_DIR": str(data), "PATHEX_NO_DEMO_TRAINING": "1", "PATHEX_UPLOAD_DIR": str(data.parent / "uploads")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port), "--server.address", "127.0.0.1",
         "--server.headless", "true"],
        cwd=tree, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    sys.exit(f"the server did not start (log {log})")


# -- the browser -------------------------------------------------------------------------------
class Results(dict):
    """interaction -> seconds; each figure is printed as it comes (a run cut short keeps what it measured)."""

    def setdefault(self, key, default=None):
        values = super().setdefault(key, [] if default is None else default)
        return _Printing(key, values)


class _Printing:
    def __init__(self, key: str, values: list):
        self.key, self.values = key, values

    def append(self, seconds: float) -> None:
        self.values.append(seconds)
        print(f"  {self.key}: {seconds:.2f} s", flush=True)

# Page-side clock of input events: Playwright's click or press reaches the page only after its
# actionability checks (scrolled into view, stable for two frames, hit target), which a person's
# click does not wait for; a figure starts at the input event itself, as the issue asks.
INPUT_CLOCK = """(() => { if (window.__inputs) return; window.__inputs = [];
  for (const type of ['pointerdown', 'mousedown', 'keydown']) {
    window.addEventListener(type, (e) => window.__inputs.push(e.timeStamp), { capture: true });
  } })()"""


class Felt:
    """Times interactions in one page: input event to a condition (JS expression) true and the page settled."""

    def __init__(self, page):
        self.page = page
        self.dispatch: list[float] = []  # seconds from the tool's call to the input event (not counted)
        page.add_init_script(INPUT_CLOCK)
        page.evaluate(INPUT_CLOCK)

    def now(self) -> float:
        return self.page.evaluate("() => performance.now()")

    def until(self, condition: str, start: float, timeout: int = TIMEOUT_MS) -> float:
        """Wait (each animation frame) until ``condition`` holds on a settled page; return seconds since ``start``."""
        try:
            self.page.wait_for_function(
                f"() => {{ if (({condition}) && {SETTLED}) {{ window.__benchDone = performance.now(); return true; }} return false; }}",
                timeout=timeout, polling="raf",
            )
        except PlaywrightTimeout:
            shot = ROOT / "bench" / "out" / "browser" / "timeout.png"
            self.page.screenshot(path=str(shot), full_page=True)
            print(f"timed out waiting for {condition[:200]} (screenshot {shot})", flush=True)
            raise
        done, event = self.page.evaluate(
            "(start) => [window.__benchDone, (window.__inputs || []).find((t) => t >= start)]", start)
        if event is None or event > done:
            event = start  # no input event (a wait, not an interaction): from the call
        else:
            self.dispatch.append((event - start) / 1000)
        return (done - event) / 1000

    def settle(self) -> None:
        self.page.wait_for_timeout(300)
        self.page.wait_for_function(f"() => {SETTLED}", timeout=TIMEOUT_MS)
        self.page.wait_for_timeout(300)

    def main_text(self, text: str) -> str:
        return f"(document.querySelector('[data-testid=\"stMain\"]') || document.body).innerText.includes({json.dumps(text)})"

    def goto_page(self, title: str) -> None:
        self.page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title, exact=True).first.click()
        self.page.get_by_role("heading", name=title).first.wait_for(timeout=TIMEOUT_MS)
        self.settle()

    def show_slide(self, name: str) -> None:
        """Choose a predicted slide on Review and wait for the viewer to draw it (a new slide token)."""
        box = self.page.locator('[data-testid="stMain"] [data-testid="stSelectbox"]').filter(has_text="Slide").first
        shown = box.evaluate("el => { const i = el.querySelector('input'); return ((i && i.value) || '') + ' ' + el.textContent; }")
        if shown.endswith(name) or f" {name} " in shown:
            self.until(VIEWER_DRAWN, self.now())
            return
        old = self.page.evaluate("() => window.pathexViewer && window.pathexViewer.slide ? window.pathexViewer.slide.token : null")
        self.select("Slide", name)
        self.until(f"window.pathexViewer && window.pathexViewer.slide && window.pathexViewer.slide.token !== {json.dumps(old)} && {VIEWER_DRAWN}", self.now())

    def open_options(self, label: str, option: str, sidebar: bool = False):
        """Open a selectbox's list (retrying: a click during a rerun can miss); return the option's locator."""
        where = "stSidebar" if sidebar else "stMain"
        box = self.page.locator(f'[data-testid="{where}"] [data-testid="stSelectbox"]').filter(has_text=label).first
        choice = self.page.get_by_role("option", name=option, exact=True)
        for _ in range(5):
            self.settle()
            box.scroll_into_view_if_needed()
            box.click()
            try:
                choice.wait_for(timeout=5_000)
                return choice
            except PlaywrightTimeout:
                self.page.keyboard.press("Escape")
        raise RuntimeError(f"the option {option} of {label} never showed")

    def select(self, label: str, option: str, sidebar: bool = False) -> None:
        self.open_options(label, option, sidebar).click()


def charts_at_t(value: float) -> str:
    """Threshold tuning's charts have drawn t = ``value``."""
    return CHARTS_AT_T % {"t": json.dumps(f"t = {value:.2f}"), "in_view": CHARTS_IN_VIEW}


def heading(title: str) -> str:
    return f"[...document.querySelectorAll('h1')].some(h => h.innerText.trim() === {json.dumps(title)})"


def page_ready(title: str) -> str:
    """A page's own result drawn: Review its viewer, Threshold tuning the charts in view, the others their heading."""
    if title == "Review":
        return f"{heading(title)} && {VIEWER_DRAWN}"
    if title == "Threshold tuning":  # the charts in view drawn
        return f"{heading(title)} && (() => {{ const charts = {CHARTS_IN_VIEW}; return charts.length >= 1 && charts.every((gd) => gd && gd._fullLayout); }})()"
    return heading(title)


def open_big_slide(page, url: str) -> Felt:
    """Open the app in ``page``, choose the bench model and the 100k-patch slide, wait for the viewer; return the page's Felt."""
    felt = Felt(page)
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("heading", name="Review").wait_for(timeout=TIMEOUT_MS)
    felt.settle()
    felt.select("Model", "bench-tiny (models/)", sidebar=True)
    felt.settle()
    felt.select("Slide", "big")
    felt.until(VIEWER_DRAWN, felt.now())
    page.locator('[data-testid="pathexViewer"]').scroll_into_view_if_needed()
    return felt


def measure_browser(url: str, fix: dict, reps: int, results: Results) -> None:
    import numpy as np
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        felt = open_big_slide(page, url)
        results.dispatch = felt.dispatch
        t_slider = page.locator('[data-testid="stSidebar"] input[aria-label="Decision threshold t"]')

        def t_moves(key: str, condition) -> None:
            # Each move to a t not shown before (no overlay tile or figure can come from a cache).
            step = 1 if float(t_slider.evaluate("el => el.value")) < 0.7 else -1
            for _ in range(reps):
                t_slider.focus()
                value = round(float(t_slider.evaluate("el => el.value")) + 0.01 * step, 2)
                start = felt.now()
                t_slider.press("ArrowRight" if step > 0 else "ArrowLeft")
                results.setdefault(key, []).append(felt.until(condition(value), start))
                page.wait_for_timeout(400)

        # t on Review: the decision's label shows the new t and the viewer has drawn the new overlay.
        # (A viewer that draws the t outlines itself must have been given this t.)
        given = "(() => { const d = window.pathexViewer && window.pathexViewer.data; return !d || !d.outline || Math.abs(d.outline.t - %s) < 1e-9; })()"
        t_moves("t on Review", lambda v: f"{felt.main_text(f'Decision at t = {v:.2f}')} && {given % v} && {VIEWER_DRAWN}")

        # A slide switch: big <-> small_a, each to its slide and overlay drawn.
        for i in range(reps):
            target = "small_a" if i % 2 == 0 else "big"
            old = page.evaluate("() => window.pathexViewer.slide.token")
            option = felt.open_options("Slide", target)
            start = felt.now()
            option.click()
            results.setdefault("slide switch", []).append(
                felt.until(f"window.pathexViewer && window.pathexViewer.slide && window.pathexViewer.slide.token !== {json.dumps(old)} && {VIEWER_DRAWN}", start))
            page.wait_for_timeout(400)

        # Selecting a patch on the big slide (at Home): a click, then a shift-drag box.
        if reps % 2:  # the switches ended on small_a
            felt.show_slide("big")
        big = fix["big"]
        size0 = big["size0"]
        rng = np.random.default_rng(1)
        page.locator('[data-testid="pathexViewer"]').scroll_into_view_if_needed()
        page.get_by_test_id("pathexHome").click()
        page.wait_for_timeout(1200)
        previous = None
        picks = rng.choice(np.nonzero(big["prob"] > 0.5)[0], size=reps * 3, replace=False)
        done = 0
        for pick in picks:
            if done == reps:
                break
            x, y = int(big["x"][pick]), int(big["y"][pick])
            if (x, y) == previous:
                continue
            point = page.evaluate(TO_PAGE, [x + size0 / 2, y + size0 / 2])
            start = felt.now()
            page.mouse.click(*point)
            results.setdefault("select a patch: click", []).append(
                felt.until(f"{felt.main_text(f'Patch at level-0 ({x}, {y})')} && {VIEWER_DRAWN}", start))
            previous, done = (x, y), done + 1
            page.wait_for_timeout(400)
        cx, cy = big["x"] + size0 / 2, big["y"] + size0 / 2
        done = 0
        for pick in picks[::-1]:
            if done == reps:
                break
            lo_x, lo_y = big["x"][pick] - size0 * 6, big["y"][pick] - size0 * 6
            hi_x, hi_y = big["x"][pick] + size0 * 7, big["y"][pick] + size0 * 7
            inside = np.nonzero((cx >= lo_x) & (cx <= hi_x) & (cy >= lo_y) & (cy <= hi_y))[0]
            best = int(inside[np.argmax(big["prob"][inside])])
            x, y = int(big["x"][best]), int(big["y"][best])
            if (x, y) == previous or inside.size < 2:
                continue
            x0, y0 = page.evaluate(TO_PAGE, [float(lo_x), float(lo_y)])
            x1, y1 = page.evaluate(TO_PAGE, [float(hi_x), float(hi_y)])
            page.keyboard.down("Shift")
            page.mouse.move(x0, y0)
            page.mouse.down()
            page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=3)
            page.mouse.move(x1, y1, steps=3)
            before = page.evaluate(SELECTED)
            start = felt.now()
            page.mouse.up()
            page.keyboard.up("Shift")
            # Screen rounding can move the box's edge across a patch centre: wait for a new selection
            # of several patches rather than for the exact one computed here.
            results.setdefault("select a patch: box", []).append(
                felt.until(f"({SELECTED})() !== {json.dumps(before)} && {felt.main_text('patches selected; showing')} && {VIEWER_DRAWN}", start))
            previous, done = (x, y), done + 1
            page.wait_for_timeout(400)

        # Opening each page (from Review; Review itself from Threshold tuning).
        for title in PAGES:
            for _ in range(reps):
                felt.goto_page("Threshold tuning" if title == "Review" else "Review")
                link = page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title, exact=True).first
                start = felt.now()
                link.click()
                results.setdefault(f"open {title}", []).append(felt.until(page_ready(title), start))

        # On Threshold tuning: t, and the FROC mode switch.
        felt.goto_page("Threshold tuning")
        felt.until(page_ready("Threshold tuning"), felt.now())
        t_moves("t on Threshold tuning", lambda v: f"{felt.main_text(f'Slide accuracy at t = {v:.2f}')} && {charts_at_t(v)}")
        for i in range(reps):
            label = "Camelyon16 (official evaluation)" if i % 2 == 0 else "patch (source material)"
            expect = "Camelyon16 mode (the challenge" if i % 2 == 0 else "FROC — for each t"
            title = "FROC (Camelyon16 mode, official)" if i % 2 == 0 else "FROC"
            option = page.locator('[data-testid="stMain"] [data-testid="stRadio"]').filter(has_text="FROC mode").get_by_text(label, exact=True)
            start = felt.now()
            option.click()
            results.setdefault("FROC mode switch", []).append(felt.until(f"{felt.main_text(expect)} && {page_ready('Threshold tuning')} && {FROC_TITLE % json.dumps(title)}", start))

        # "Run the model" on slides without predictions, to the viewer drawn.
        felt.goto_page("Review")
        for name in fix["fresh"]:
            felt.select("Slide", name)
            felt.settle()
            button = page.get_by_role("button", name=f"Run the model on {name}", exact=True)
            start = felt.now()
            button.click()
            results.setdefault("Run the model (small slide)", []).append(
                felt.until(f"{felt.main_text('Patches with F(I)')} && {VIEWER_DRAWN}", start, timeout=600_000))

        # The first result on Explain: a patch selected on small_a, then "Explain this patch".
        small = fix["small_a"]
        order = np.argsort(small["prob"])[::-1]
        for k in range(min(reps, 2)):
            if k == 0:
                felt.show_slide("small_a")
            else:  # back from Explain, Review still shows small_a
                felt.until(VIEWER_DRAWN, felt.now())
            page.locator('[data-testid="pathexViewer"]').scroll_into_view_if_needed()
            page.get_by_test_id("pathexHome").click()
            page.wait_for_timeout(1200)
            pick = int(order[k * 7])
            x, y = int(small["x"][pick]), int(small["y"][pick])
            page.mouse.click(*page.evaluate(TO_PAGE, [x + small["size0"] / 2, y + small["size0"] / 2]))
            felt.until(felt.main_text(f"Patch at level-0 ({x}, {y})"), felt.now())
            button = page.get_by_role("button", name="Explain this patch")
            start = felt.now()
            button.click()
            results.setdefault("Explain: first result (new patch)", []).append(
                felt.until(f"{heading('Explain')} && {felt.main_text('Download the patch with its explanations')}", start, timeout=600_000))
            felt.goto_page("Review")
        browser.close()


# -- where a t move's time goes (--split) ------------------------------------------------------
# Recorded in the page: every websocket message (direction, time, bytes), long main-thread tasks,
# and the overlay tiles fetched (resource timing).
SPLIT_INIT = """(() => {
  window.__ws = []; window.__long = [];
  const Native = window.WebSocket;
  function Patched(...args) {
    const ws = new Native(...args);
    ws.addEventListener('message', (e) => window.__ws.push({dir: 'in', t: performance.now(), n: e.data.byteLength ?? e.data.size ?? e.data.length}));
    const send = ws.send.bind(ws);
    ws.send = (d) => { window.__ws.push({dir: 'out', t: performance.now(), n: d.byteLength ?? d.length}); return send(d); };
    return ws;
  }
  Patched.prototype = Native.prototype;
  Object.assign(Patched, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
  window.WebSocket = Patched;
  try { new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push({t: e.startTime, d: e.duration}); })
        .observe({type: 'longtask', buffered: true}); } catch (e) {}
})();"""
# Records in window.__hits the first animation frame at which each of two conditions (JS expressions) holds.
WATCH = """([a, b]) => { window.__hits = {}; const fa = new Function(`return (${a});`), fb = new Function(`return (${b});`);
  const loop = () => { const now = performance.now();
    if (!window.__hits.a && fa()) window.__hits.a = now;
    if (window.__hits.a && !window.__hits.b && fb()) window.__hits.b = now;  // b is checked once a holds
    if (!(window.__hits.a && window.__hits.b)) requestAnimationFrame(loop); };
  requestAnimationFrame(loop); }"""
SPLIT_READ = """(start) => {
  const ws = window.__ws.filter((m) => m.t >= start), inbound = ws.filter((m) => m.dir === 'in');
  const tiles = performance.getEntriesByType('resource').filter((e) => e.startTime >= start && e.name.includes('/tiles/overlay/'));
  const v = window.pathexViewer;
  return {
    sent: ws.filter((m) => m.dir === 'out').map((m) => m.t - start),
    first_in: inbound.length ? inbound[0].t - start : null, last_in: inbound.length ? inbound[inbound.length - 1].t - start : null,
    bytes_in: inbound.reduce((a, m) => a + (m.n || 0), 0), messages_in: inbound.length,
    long_ms: window.__long.filter((e) => e.t >= start).reduce((a, e) => a + e.d, 0),
    tiles: tiles.length, tile_bytes: tiles.reduce((a, e) => a + e.encodedBodySize, 0),
    tile_server_ms: tiles.map((e) => e.responseStart - e.requestStart), tiles_end: tiles.length ? Math.max(...tiles.map((e) => e.responseEnd)) - start : null,
    overlay_requested: v && v.overlayRequested && v.overlayRequested.at >= start ? v.overlayRequested.at - start : null,
    overlay_drawn: v && v.overlayDrawn && v.overlayDrawn.at >= start ? v.overlayDrawn.at - start : null,
    outlines_drawn: v && v.outlinesDrawn && v.outlinesDrawn.at >= start ? v.outlinesDrawn.at - start : null,
  };
}"""


def measure_split(url: str, reps: int) -> None:
    """Print, for t moves on Review (big slide) and on Threshold tuning, where the time goes."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.add_init_script(SPLIT_INIT)
        felt = open_big_slide(page, url)
        t_slider = page.locator('[data-testid="stSidebar"] input[aria-label="Decision threshold t"]')
        for title, shown, done in [
            ("Review", "Decision at t = {:.2f}", VIEWER_DRAWN), ("Threshold tuning", "Slide accuracy at t = {:.2f}", None),
        ]:
            if title != "Review":
                felt.goto_page(title)
                felt.until(page_ready(title), felt.now())
            rows = []
            for _ in range(reps):
                t_slider.focus()
                value = round(float(t_slider.evaluate("el => el.value")) + 0.01, 2)
                page.wait_for_timeout(300)
                # Both times are taken in the page, each animation frame (a second wait from Python
                # would add its round trip to a condition that already holds).
                page.evaluate(WATCH, [f"({felt.main_text(shown.format(value))}) && {SETTLED}", f"({done or charts_at_t(value)}) && {SETTLED}"])
                start = felt.now()
                t_slider.press("ArrowRight")
                page.wait_for_function("() => window.__hits.a && window.__hits.b", timeout=TIMEOUT_MS, polling="raf")
                text_at, total = page.evaluate("(start) => [window.__hits.a - start, window.__hits.b - start]", start)
                page.wait_for_timeout(800)  # late tiles and messages
                info = page.evaluate(SPLIT_READ, start)
                info.update(text=text_at, total=total)
                rows.append(info)
            med = lambda key, rows=rows: statistics.median([r[key] for r in rows if r.get(key) is not None] or [float("nan")])
            print(f"\n{title}: t move, median of {reps} (ms from the key press; load {os.getloadavg()[0]:.2f})")
            print(f"  first message from the server {med('first_in'):7.0f}   last message {med('last_in'):7.0f}   "
                  f"{med('messages_in'):.0f} messages, {med('bytes_in') / 1e3:.1f} kB")
            print(f"  new value shown (settled)     {med('text'):7.0f}   long main-thread tasks {med('long_ms'):.0f} ms in all")
            if title == "Review":
                print(f"  overlay requested             {med('overlay_requested'):7.0f}   overlay drawn {med('overlay_drawn'):7.0f}   "
                      f"outlines drawn {med('outlines_drawn'):7.0f}")
                server = [statistics.median(r["tile_server_ms"]) for r in rows if r["tile_server_ms"]]
                print(f"  overlay tiles fetched {med('tiles'):.0f} ({med('tile_bytes') / 1e3:.1f} kB), server time per tile "
                      f"{statistics.median(server) if server else float('nan'):.0f} ms, last tile in at {med('tiles_end'):.0f}")
            print(f"  settled with the result drawn {med('total'):7.0f}")
        browser.close()


# -- two trees, interleaved (--against) ----------------------------------------------------------
def measure_interleaved(urls: dict[str, str], reps: int, fix: dict) -> None:
    """Time t on Review, a patch click and t on Threshold tuning on two servers (e.g. the trees before
    and after a change), one move on each in turn, so both see the same machine load."""
    import numpy as np
    from playwright.sync_api import sync_playwright

    results: dict[str, dict[str, list[float]]] = {name: {} for name in urls}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox", "--disable-gpu"])
        pages = {}
        for name, url in urls.items():  # a context each: two independent browser sessions
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            felt = open_big_slide(page, url)
            pages[name] = (page, felt)
        given = "(() => { const d = window.pathexViewer && window.pathexViewer.data; return !d || !d.outline || Math.abs(d.outline.t - %s) < 1e-9; })()"
        conditions = {
            "t on Review": lambda felt, v: f"{felt.main_text(f'Decision at t = {v:.2f}')} && {given % v} && {VIEWER_DRAWN}",
            "t on Threshold tuning": lambda felt, v: f"{felt.main_text(f'Slide accuracy at t = {v:.2f}')} && {charts_at_t(v)}",
        }

        def t_move(name: str, key: str, step: int) -> None:
            page, felt = pages[name]
            slider = page.locator('[data-testid="stSidebar"] input[aria-label="Decision threshold t"]')
            slider.focus()
            value = round(float(slider.evaluate("el => el.value")) + 0.01 * step, 2)
            start = felt.now()
            slider.press("ArrowRight" if step > 0 else "ArrowLeft")
            results[name].setdefault(key, []).append(felt.until(conditions[key](felt, value), start))
            page.wait_for_timeout(300)

        order = list(urls)
        for i in range(reps):
            for name in order if i % 2 == 0 else order[::-1]:
                t_move(name, "t on Review", 1)
        big = fix["big"]
        size0 = big["size0"]
        picks = np.random.default_rng(2).choice(np.nonzero(big["prob"] > 0.5)[0], size=reps, replace=False)
        for name in order:
            pages[name][0].get_by_test_id("pathexHome").click()
            pages[name][0].wait_for_timeout(1200)
        for i, pick in enumerate(picks):
            x, y = int(big["x"][pick]), int(big["y"][pick])
            for name in order if i % 2 == 0 else order[::-1]:
                page, felt = pages[name]
                point = page.evaluate(TO_PAGE, [x + size0 / 2, y + size0 / 2])
                start = felt.now()
                page.mouse.click(*point)
                results[name].setdefault("select a patch: click", []).append(
                    felt.until(f"{felt.main_text(f'Patch at level-0 ({x}, {y})')} && {VIEWER_DRAWN}", start))
                page.wait_for_timeout(300)
        for name in order:
            page, felt = pages[name]
            felt.goto_page("Threshold tuning")
            felt.until(page_ready("Threshold tuning"), felt.now())
        for i in range(reps):
            for name in order if i % 2 == 0 else order[::-1]:
                t_move(name, "t on Threshold tuning", 1)
        browser.close()
    names = list(urls)
    print(f"{'interaction (interleaved)':30s} " + " ".join(f"{n + ' median':>16s} {'max':>6s}" for n in names))
    for key in results[names[0]]:
        cells = []
        for n in names:
            times = results[n].get(key, [])
            cells.append(f"{statistics.median(times):14.2f} s {max(times):5.2f}" if times else f"{'-':>16s} {'-':>6s}")
        print(f"{key:30s} " + " ".join(cells))


# -- AppTest: the script's part of the same interactions ----------------------------------------
def measure_apptest(tree: Path, data: Path, reps: int, fix: dict) -> dict[str, list[float]]:
    os.environ.update({"PATHEX_DEMO_DIR": str(data), "PATHEX_NO_DEMO_TRAINING": "1", "PATHEX_UPLOAD_DIR": str(data.parent / "uploads")})
    import numpy as np
    from streamlit.testing.v1 import AppTest

    out: dict[str, list[float]] = {}

    def timed(key: str, action) -> None:
        start = time.perf_counter()
        action().run()
        out.setdefault(key, []).append(time.perf_counter() - start)
        print(f"  AppTest {key}: {out[key][-1]:.2f} s", flush=True)
        if not len(at.sidebar):  # a fragment ran alone: AppTest's tree holds only its elements; a full run (not timed) brings the rest back
            at.run()

    at = AppTest.from_file(str(tree / "app" / "main.py"), default_timeout=600)
    at.run()
    at.sidebar.selectbox[1].select(next(o for o in at.sidebar.selectbox[1].options if "bench-tiny" in o)).run()
    slide_box = lambda: next(s for s in at.selectbox if s.label == "Slide")
    slide_box().select("big").run()
    for i in range(reps):
        timed("t on Review", lambda i=i: at.sidebar.slider[0].set_value(round(0.5 + 0.01 * (i + 1), 2)))
    for i in range(reps):
        timed("slide switch", lambda i=i: slide_box().select("small_a" if i % 2 == 0 else "big"))
    for title, file in zip(PAGES, ["review.py", "threshold.py", "explain.py", "network.py", "cnn_basics.py", "training.py"]):
        for _ in range(reps):
            at.switch_page(str(tree / "pages" / ("threshold.py" if file == "review.py" else "review.py"))).run()
            timed(f"open {title}", lambda file=file: at.switch_page(str(tree / "pages" / file)))
    at.switch_page(str(tree / "pages" / "threshold.py")).run()
    for i in range(reps):
        timed("t on Threshold tuning", lambda i=i: at.sidebar.slider[0].set_value(round(0.3 + 0.01 * (i + 1), 2)))
    radio = lambda: next(r for r in at.radio if r.label == "FROC mode")
    for i in range(reps):
        timed("FROC mode switch", lambda i=i: radio().set_value(radio().options[1 if i % 2 == 0 else 0]))
    # Explain's first result: a patch of small_a never explained (as the browser's, not the same
    # ones), selected as Review's click does, then the page: the explanations' compute and the script.
    small = fix["small_a"]
    order = np.argsort(small["prob"])[::-1]
    for k in range(min(reps, 2)):
        pick = int(order[k * 7 + 3])
        at.switch_page(str(tree / "pages" / "review.py")).run()
        at.session_state["selected_patch"] = {
            "slide": "small_a", "path": str(data / "slides" / "small_a.tiff"), "x": int(small["x"][pick]), "y": int(small["y"][pick]),
            "size0": small["size0"], "slide_mpp": None, "prob": float(small["prob"][pick]),
        }
        timed("Explain: first result (new patch)", lambda: at.switch_page(str(tree / "pages" / "explain.py")))
        assert any(b.label.startswith("Download the patch with its explanations") for b in at.get("download_button")), "Explain drew no result"
    return out


TARGETS = {  # seconds; None: compute + 0.5 s
    "t on Review": 0.5, "slide switch": 0.5, "select a patch: click": 0.5, "select a patch: box": 0.5,
    "t on Threshold tuning": 0.5, "FROC mode switch": 0.5, **{f"open {t}": 0.5 for t in PAGES},
    "Run the model (small slide)": None, "Explain: first result (new patch)": None,
}


def run_seconds(data: Path, names: list[str]) -> list[float]:
    """The compute time of the runs the bench made: finished - started, from the store."""
    import sqlite3

    with sqlite3.connect(data / "results.sqlite") as conn:
        rows = conn.execute(
            "SELECT s.name, r.started, r.finished FROM runs r JOIN slides s ON s.id = r.slide_id WHERE r.status = 'complete'").fetchall()
    found = {name: (finished - started) for name, started, finished in rows if started and finished}
    return [found[n] for n in names if n in found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose app is measured (default: this one)")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--fresh", type=int, default=3, help="slides without predictions: repetitions of 'Run the model'")
    parser.add_argument("--big", type=Path, default=ROOT / "bench" / "out" / "big_20480.tiff", help="a 20,480 px slide (bench_tiles.big_slide(20480))")
    parser.add_argument("--no-apptest", action="store_true")
    parser.add_argument("--against", type=Path, help="another checkout: t on Review, a click and t on Threshold tuning, one move on each tree in turn")
    parser.add_argument("--split", action="store_true", help="only split t moves (Review, Threshold tuning) into messages, render and tiles")
    args = parser.parse_args()
    if not args.big.exists():
        sys.exit(f"{args.big} is missing: bench/bench_tiles.py makes it")
    tree = args.tree.resolve()
    sys.path.insert(0, str(tree))
    os.chdir(tree)
    out = ROOT / "bench" / "out" / "browser"
    data = out / "cohort"
    fix = prepare(data, args.big.resolve(), args.fresh)
    load_before = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, tree {tree}; load average before {load_before[0]:.2f}", flush=True)
    if args.against:
        other = args.against.resolve()
        procs = {}
        try:
            for name, where, port in [(other.name or str(other), other, 8800 + os.getpid() % 90), (tree.name or str(tree), tree, 8700 + os.getpid() % 90)]:
                procs[name] = (serve(where, data, port, out / f"server-{port}.log"), f"http://127.0.0.1:{port}")
            measure_interleaved({name: url for name, (_, url) in procs.items()}, args.reps, fix)
        finally:
            for proc, _ in procs.values():
                proc.terminate()
                proc.wait(timeout=30)
        print(f"load average: {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} at the end (machine: {platform.machine()}, {os.cpu_count()} cores)")
        return
    if args.split:
        port = 8900 + (os.getpid() % 90)
        proc = serve(tree, data, port, out / "server.log")
        try:
            measure_split(f"http://127.0.0.1:{port}", args.reps)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        print(f"load average: {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} at the end")
        return
    apptest = {} if args.no_apptest else measure_apptest(tree, data, args.reps, fix)
    load_mid = os.getloadavg()
    port = 8900 + (os.getpid() % 90)
    proc = serve(tree, data, port, out / "server.log")
    felt = Results()
    try:
        measure_browser(f"http://127.0.0.1:{port}", fix, args.reps, felt)
    except PlaywrightTimeout as exc:
        print(f"the browser part stopped early ({str(exc).splitlines()[0]}); the table holds what it measured", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    compute = run_seconds(data, fix["fresh"])
    print(f"{'interaction':38s} {'browser median':>14s} {'max':>7s} {'n':>3s}  {'target':>14s}  {'AppTest rerun median':>20s}")
    for key, times in felt.items():
        target = TARGETS.get(key, 0.5)
        if key.startswith("Run the model") and compute:
            target_text = f"{statistics.median(compute) + 0.5:.2f} s (compute {statistics.median(compute):.2f} + 0.5)"
        elif target is None and apptest.get(key):  # the compute: the same interaction's run in AppTest (no browser)
            target_text = f"{statistics.median(apptest[key]) + 0.5:.2f} s (AppTest + 0.5)"
        elif target is None:
            target_text = "compute + 0.5 s"
        else:
            target_text = f"< {target:.2f} s"
        at = apptest.get(key)
        at_text = f"{statistics.median(at) * 1e3:.0f} ms" if at else "-"
        print(f"{key:38s} {statistics.median(times):12.2f} s {max(times):5.2f} s {len(times):3d}  {target_text:>14s}  {at_text:>20s}")
    dispatch = getattr(felt, "dispatch", [])
    if dispatch:
        print(f"each figure runs from the input event; Playwright's click or press reached the page {statistics.median(dispatch) * 1e3:.0f} ms "
              f"(median, max {max(dispatch) * 1e3:.0f} ms) after its call: its actionability checks, not counted")
    print(f"load average: {load_before[0]:.2f} before, {load_mid[0]:.2f} after AppTest, {os.getloadavg()[0]:.2f} at the end "
          f"(2 cores shared with other work: compare runs made back to back)")


if __name__ == "__main__":
    main()
