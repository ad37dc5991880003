"""Every remaining path a person takes through the app, walked in headless Debian Chromium with
non-default values, looking at what is drawn: Review (run the whole cohort, click a patch in the
deep-zoom viewer, shift-drag a box, the overview and its click, the four result downloads
parsed back), Explain (the selected patch, every method parameter changed, the other target, the
PNG download, an uploaded patch image), Threshold tuning (every figure as HTML, PNG and SVG and
the cohort report, parsed back) and the sidebar's checkpoint upload. One server, one browser;
the tests run in file order on one page and session. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import shutil
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser_support import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    app_server,
    assert_no_exception,
    require_browser,
    wait_for_run,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SLIDE = "demo_003"  # a tumor slide of the small cohort (not the one Review opens on: demo_002)
# t moved off its default 0.50 in the sidebar, to where the demo model calls part of SLIDE cancer (its
# top patches 0.36-0.37 on this small cohort) and a normal slide a false positive (0.31), the next
# patches below at least 0.03 away (so bf16 and fp32 runs agree on every decision).
THRESHOLD = "0.28"
# Threshold tuning's six charts have drawn t (the curves' point is named "t = ...", the matrices' titles end in it).
CHARTS_AT_T = """(() => { const charts = [...document.querySelectorAll('[data-testid="stMain"] .js-plotly-plot')];
    return charts.length === 6 && charts.every((gd) => (gd._fullData || []).some((tr) => tr.name === %(t)s)
      || ((gd._fullLayout && gd._fullLayout.title && gd._fullLayout.title.text) || '').endsWith(%(t)s)); })()"""
# Each chart: its size, title, the point at t it marks (or null) and whether it is the plot marked before.
CHART_STATE = """() => [...document.querySelectorAll('[data-testid="stMain"] .js-plotly-plot')].map((gd) => {
    const r = gd.getBoundingClientRect(), point = (gd._fullData || []).find((tr) => (tr.name || '').startsWith('t = '));
    return {width: r.width, height: r.height, title: gd._fullLayout.title.text, kept: !!gd.__kept,
            point: point ? [point.x[0], point.y[0]] : null}; })"""
COLORMAP = "viridis"  # not the default inferno
CAPTION = re.compile(r"Patch at level-0 \((\d+), (\d+)\), (\d+) px")
# Level-0 (x, y) -> page coordinates in the deep-zoom viewer (app/viewer: OpenSeadragon).
TO_PAGE = """([x, y]) => { const v = window.pathexViewer, r = v.stage.getBoundingClientRect();
    const p = v.item().imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y)); return [r.x + p.x, r.y + p.y]; }"""
VIEWER_READY = """() => { const v = window.pathexViewer; return !!(v && v.viewer && v.viewer.world.getItemCount() >= 2
                   && v.overlay && !v.pendingOverlay && v.viewer.world.getItemAt(0).getFullyLoaded()); }"""
OVERVIEW_POINTS = """() => {
    const gd = document.querySelector('[data-testid="stMain"] .js-plotly-plot');
    const layout = gd._fullLayout, box = gd.getBoundingClientRect(), trace = gd._fullData[0];
    return {x: Array.from(trace.x), y: Array.from(trace.y), prob: Array.from(trace.customdata), images: (layout.images || []).length,
            type: trace.type, xy: Array.from(trace.x).map((x, i) => [box.x + layout.xaxis._offset + layout.xaxis.l2p(x),
                                                              box.y + layout.yaxis._offset + layout.yaxis.l2p(trace.y[i])])};
}"""


@pytest.fixture(scope="module")
def data_folder(app_cohort, tmp_path_factory) -> Path:
    """A private copy of the small cohort (4 slides, annotations, results written here)."""
    data = tmp_path_factory.mktemp("paths") / "cohort"
    shutil.copytree(app_cohort, data)
    return data


@pytest.fixture(scope="module")
def page(data_folder, shared_slides, tmp_path_factory):
    """One server and one browser page (one Streamlit session) that the tests walk in order."""
    require_browser()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with app_server(data_folder, tmp_path_factory.mktemp("log") / "server.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        tab = context.new_page()
        tab.goto(url, wait_until="domcontentloaded")
        tab.get_by_role("heading", name="Review").wait_for(timeout=90_000)
        wait_for_run(tab)
        yield tab
        browser.close()


# -- helpers ---------------------------------------------------------------------------------------
def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"paths-{name}.png"))


def open_page(page, title: str) -> None:
    """Go to a page through the sidebar's navigation, as a person does."""
    page.get_by_role("link", name=title).first.click()
    page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
    wait_for_run(page, 180)


def pick(page, label: str, option: str, where: str = "stMain") -> None:
    """Choose ``option`` in the selectbox labelled ``label``."""
    box = page.locator(f'[data-testid="{where}"] [data-testid="stSelectbox"]').filter(has_text=label).first
    box.wait_for(timeout=30_000)
    choice = page.get_by_role("option", name=option, exact=True)
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(3):  # a rerun that redraws the box may close its list before the click lands
        box.click()
        try:
            choice.wait_for(timeout=5_000)
            choice.click(timeout=5_000)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")
            wait_for_run(page)
    wait_for_run(page)
    assert option in selectbox_text(page, label, where), f"{label} shows {selectbox_text(page, label, where)!r}, not {option!r}"


def selectbox_text(page, label: str, where: str = "stMain") -> str:
    """Return what the selectbox labelled ``label`` shows (its text and its input's value)."""
    box = page.locator(f'[data-testid="{where}"] [data-testid="stSelectbox"]').filter(has_text=label).first
    return box.evaluate("b => b.textContent + ' ' + Array.from(b.querySelectorAll('input')).map(i => i.value).join(' ')")


def cohort_table(page) -> list[dict[str, str]]:
    """Return the rows of Review's cohort table as the grid's accessible table shows them."""
    header, cells = page.evaluate(
        """() => { const d = document.querySelector('[data-testid="stDataFrame"]');
                   return [Array.from(d.querySelectorAll('th')).map(e => e.textContent),
                           Array.from(d.querySelectorAll('td')).map(e => e.textContent)]; }"""
    )
    return [dict(zip(header, cells[i : i + len(header)])) for i in range(0, len(cells), len(header))]


def one_plot(page) -> None:
    """Wait until the main area holds exactly one slide figure (the overview; the old one is gone after a rerun)."""
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=\"stMain\"] .js-plotly-plot').length === 1", timeout=60_000
    )
    page.wait_for_timeout(800)


def viewer_patches(page, data_folder: Path, slide: str):
    """Wait for the deep-zoom viewer to draw ``slide``; return the slide's stored patch predictions."""
    from core.store import ResultStore

    viewer = page.locator('[data-testid="pathexViewer"]')
    viewer.wait_for(timeout=60_000)
    viewer.scroll_into_view_if_needed()
    page.wait_for_function(VIEWER_READY, timeout=60_000)
    page.wait_for_timeout(800)
    with ResultStore(data_folder / "results.sqlite") as store:
        [record] = [r for r in store.slides() if r.name == slide]
        [run] = store.runs(slide_id=record.id, status="complete")
        return store.read_predictions(run.id)


def selected_outline(page) -> tuple[float, float] | None:
    """Return the level-0 corner of the patch outline the deep-zoom viewer draws as selected, None if none."""
    rect = page.locator('[data-testid="pathexSelected"]')
    return (float(rect.get_attribute("x")), float(rect.get_attribute("y"))) if rect.count() else None


def selected_marker(page) -> tuple[float, float] | None:
    """Return where the overview figure draws its "selected patch" marker (x, y), None if it draws none."""
    return page.evaluate(
        """() => { const gd = document.querySelector('[data-testid="stMain"] .js-plotly-plot');
                   const t = gd._fullData.find(d => d.name === 'selected patch');
                   return t ? [t.x[0], t.y[0]] : null; }"""
    )


LATE_MARKER = (
    "BUG pages/review.py (the overview figure is built before the chart selection is read): after a {how}, "
    "the 'selected patch' marker is {where} until the next rerun (the figure sent with the new selection is the one "
    "built before it)"
)
def selected_caption(page, timeout: float = 30_000) -> tuple[int, int, int]:
    text = page.get_by_text(CAPTION).first
    text.wait_for(timeout=timeout)
    x, y, size = map(int, CAPTION.search(text.inner_text()).groups())
    return x, y, size


def metric(page, label: str) -> str:
    """Return the value shown by the st.metric labelled ``label``."""
    box = page.locator('[data-testid="stMetric"]').filter(has=page.locator('[data-testid="stMetricLabel"]', has_text=label)).first
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def download(page, name: str | re.Pattern, timeout: float = 120_000) -> tuple[str, bytes]:
    """Click the download button ``name``; return the file's suggested name and its bytes."""
    button = page.get_by_role("button", name=name)
    button.first.wait_for(timeout=30_000)
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    for attempt in (1, 2):
        try:
            with page.expect_download(timeout=timeout / 2) as info:
                button.first.click()
            done = info.value
            break
        except PlaywrightTimeout:
            # Streamlit shows why a deferred download failed under its button: that is a bug, say it.
            errors = [e.inner_text() for e in page.locator('[data-testid="stDownloadButtonError"]').all()]
            shot(page, f"download-{attempt}-missing")
            assert not errors, f"download {name}: the button says {errors}; console: {console[-20:]}"
            if attempt == 2:
                raise AssertionError(f"download {name}: nothing arrived after two clicks; console: {console[-20:]}") from None
            # Nothing at all happened (seen once in a full run, never reproduced): a person clicks again.
            warnings.warn(f"download {name}: the first click gave nothing in {timeout / 2000:.0f} s; console: {console[-20:]}", stacklevel=2)
    assert done.failure() is None, f"download {name} failed: {done.failure()}"
    return done.suggested_filename, Path(done.path()).read_bytes()


def check_png(data: bytes, what: str) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG", what
    assert image.width > 0 and image.height > 0, what
    assert image.mode in ("RGB", "RGBA"), f"{what}: mode {image.mode}"
    rgb = np.asarray(image.convert("RGB"))
    assert rgb.std() > 1, f"{what} is a blank picture"
    return image


def set_threshold(page, value: str) -> None:
    """Move the sidebar's t with the keyboard, a step at a time, to ``value``."""
    slider = page.locator('[data-testid="stSidebar"] input[aria-label="Decision threshold t"]')
    shown = page.locator('[data-testid="stSidebar"] [data-testid="stSliderThumbValue"]').first
    for _ in range(100):
        now = float(slider.input_value())
        if f"{now:.2f}" == value:
            break
        slider.press("ArrowRight" if float(value) > now else "ArrowLeft")
        page.wait_for_function(
            "([el, old]) => el.textContent.trim() !== old", arg=[shown.element_handle(), f"{now:.2f}"], timeout=30_000
        )
    wait_for_run(page)
    # On Review, quick presses can outlast the running indicator's gaps: wait for the colour bar to say t.
    page.wait_for_function(
        "(t) => { const el = document.querySelector('[data-testid=\"pathexColorbarLabel\"]'); return !el || el.textContent.trim() === t; }",
        arg=f"t = {value}", timeout=30_000,
    )
    assert shown.inner_text().strip() == value and slider.input_value() == f"{float(value):g}"


WALK: dict = {}  # what one test leaves for the next (the patch selected on Review)


# -- 1, 2. Review: the whole cohort, a clicked patch, a box ------------------------------------------
def test_review_runs_the_cohort_then_a_click_and_a_box_select_pick_patches(page, data_folder):
    set_threshold(page, THRESHOLD)
    n = len((data_folder / "cohort.csv").read_text().strip().splitlines()) - 1
    run_all = page.get_by_role("button", name=f"Run the model on all {n} slides without predictions")
    run_all.wait_for(timeout=30_000)
    assert [r["status"] for r in cohort_table(page)] == ["not yet"] * n
    run_all.click()
    page.wait_for_function(
        "() => { const cells = Array.from(document.querySelectorAll('[data-testid=\"stDataFrame\"] td')).map(e => e.textContent);"
        f" return cells.filter(c => c === 'predicted').length === {n}; }}",
        timeout=300_000,
    )
    wait_for_run(page)
    assert_no_exception(page, "Review after running the cohort")
    rows = cohort_table(page)
    assert [r["status"] for r in rows] == ["predicted"] * n, rows
    assert all(0 <= float(r["max F(I)"]) <= 1 for r in rows)
    decision = f"decision at t={THRESHOLD}"
    assert all(r[decision] == ("cancer" if float(r["max F(I)"]) >= float(THRESHOLD) else "no cancer") for r in rows), rows
    assert not page.get_by_role("button", name=re.compile("^Run the model on all")).count()
    shot(page, "1-cohort-predicted")

    # Another slide and another colour map.
    pick(page, "Slide", SLIDE)
    pick(page, "Colour map", COLORMAP)
    assert COLORMAP in selectbox_text(page, "Colour map")
    preds = viewer_patches(page, data_folder, SLIDE)
    probs = np.asarray(preds.prob)
    size0 = int(preds.width[0])
    assert len(probs) > 4
    assert metric(page, "Slide score max F(I)") == f"{probs.max():.3f}"

    # Click a patch of middling probability where the viewer draws it.
    order = np.argsort(probs)
    clicked = int(order[len(order) // 2])
    page.mouse.click(*page.evaluate(TO_PAGE, [float(preds.x[clicked] + size0 / 2), float(preds.y[clicked] + size0 / 2)]))
    wait_for_run(page)
    x, y, shown_size = selected_caption(page)
    assert (x, y, shown_size) == (int(preds.x[clicked]), int(preds.y[clicked]), size0), "the caption names another patch than the clicked one"
    assert metric(page, "F(I), probability of cancer") == f"{probs[clicked]:.3f}"
    assert_no_exception(page, "a clicked patch")
    WALK["patch"] = (SLIDE, x, y, probs[clicked])
    page.wait_for_function(VIEWER_READY, timeout=60_000)
    assert selected_outline(page) == (preds.x[clicked], preds.y[clicked]), "the viewer does not outline the clicked patch"
    shot(page, "2-clicked-patch")

    # Shift-drag a box over a 2 x 2 block of patches (edges between patch centres) holding a more suspicious one.
    cx, cy = preds.x + size0 / 2, preds.y + size0 / 2
    block = None
    for i in np.argsort(-probs):
        x0, y0, x1, y1 = preds.x[i] - 0.2 * size0, preds.y[i] - 0.2 * size0, preds.x[i] + 1.8 * size0, preds.y[i] + 1.8 * size0
        inside = np.nonzero((cx >= x0) & (cx <= x1) & (cy >= y0) & (cy <= y1))[0]
        if len(inside) >= 3 and clicked not in inside and probs[inside].max() > probs[clicked] + 0.1:
            block = (x0, y0, x1, y1, inside)
            break
    assert block, "no 2 x 2 block of patches to box-select"
    x0, y0, x1, y1, inside = block
    best = int(inside[np.argmax(probs[inside])])
    (px0, py0), (px1, py1) = page.evaluate(TO_PAGE, [float(x0), float(y0)]), page.evaluate(TO_PAGE, [float(x1), float(y1)])
    page.keyboard.down("Shift")
    page.mouse.move(px0, py0)
    page.mouse.down()
    page.mouse.move((px0 + px1) / 2, (py0 + py1) / 2, steps=8)
    page.mouse.move(px1, py1, steps=8)
    page.mouse.up()
    page.keyboard.up("Shift")
    wait_for_run(page)
    page.get_by_text(f"{len(inside)} patches selected; showing the one with the highest F(I).").wait_for(timeout=15_000)
    bx, by, _ = selected_caption(page)
    assert (bx, by) == (int(preds.x[best]), int(preds.y[best]))
    assert metric(page, "F(I), probability of cancer") == f"{probs[best]:.3f}"
    assert_no_exception(page, "a box selection")
    WALK["patch"] = (SLIDE, bx, by, probs[best])
    page.wait_for_function(VIEWER_READY, timeout=60_000)
    shot(page, "2-box-selected")
    assert selected_outline(page) == (preds.x[best], preds.y[best]), "the viewer does not outline the boxed patch"


# -- 2 (end), 5. Explain: the selected patch, every parameter, the other target, an uploaded image --
def test_explain_the_selected_patch_with_every_parameter_changed_then_an_uploaded_image(page, tmp_path):
    from skimage import data as skdata

    slide, _x, _y, prob = WALK["patch"]
    page.get_by_role("button", name="Explain this patch").click()
    page.get_by_role("heading", name="Explain").first.wait_for(timeout=60_000)
    page.wait_for_function("document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 7", timeout=300_000)
    wait_for_run(page, 300)
    assert_no_exception(page, "Explain of the selected patch")
    page.get_by_text(re.compile(f"^{slide} \\(128 px at the model's input\\)")).wait_for(timeout=30_000)
    assert page.locator('input[type=radio][aria-checked="true"], input[type=radio]:checked').first.evaluate(
        "e => e.closest('label').textContent"
    ) == "selected on the Review page"
    assert metric(page, "F(I)") == f"{prob:.3f}"
    shot(page, "3-explain-selected")

    page.get_by_text("Method parameters").click()
    caption = lambda text: page.locator('[data-testid="stCaptionContainer"]').filter(has_text=text).first
    pick(page, "Grad-CAM layer", "features.6")
    caption("layer features.6 (").wait_for(timeout=120_000)
    changes = [
        ("SmoothGrad samples", "7", "n_samples=7, noise=0.15"),
        ("SmoothGrad noise (std, 0..1 image)", "0.07", "n_samples=7, noise=0.07"),
        ("Occlusion window (px)", "24", "window=24, stride=16"),
        ("Occlusion stride (px)", "12", "window=24, stride=12"),
        ("LIME superpixels (SLIC n_segments)", "20", "n_segments=20, compactness=10.0"),
        ("LIME samples", "150", "n_samples=150"),
        ("SLIC compactness", "20", "n_segments=20, compactness=20.0"),
        ("IG steps", "12", "n_steps=12"),
    ]
    for label, value, shown in changes:
        field = page.locator(f'[data-testid="stMain"] input[aria-label="{label}"]')
        field.fill(value)
        field.press("Enter")
        caption(shown).wait_for(timeout=120_000)
        wait_for_run(page, 120)
    pick(page, "IG baseline", "blurred")
    caption("baseline=blurred").wait_for(timeout=120_000)
    wait_for_run(page, 120)
    lime = caption("n_segments=").inner_text()
    assert "n_segments=20, compactness=20.0" in lime and "n_samples=150" in lime, lime
    assert "n_steps=12" in caption("baseline=blurred").inner_text()
    assert "window=24, stride=12" in caption("window=").inner_text()
    assert caption(re.compile(r"^\d+ superpixels; surrogate R²")).count()
    assert_no_exception(page, "Explain with every parameter changed")

    pictures = lambda: page.locator('[data-testid="stImage"] img').evaluate_all("els => els.map(e => e.src)")
    before = pictures()
    page.get_by_text("1 − F(I): not cancer").click()
    page.wait_for_function(
        "before => { const now = Array.from(document.querySelectorAll('[data-testid=\"stImage\"] img')).map(e => e.src);"
        " return now.length === 7 && now.slice(3).every((src, i) => src !== before[3 + i]); }",
        arg=before, timeout=120_000,
    )
    wait_for_run(page, 120)
    after = pictures()
    assert len(after) == 7 and after[0] == before[0], "the patch itself should not change with the target"
    # Grad-CAM, occlusion, LIME and integrated gradients are signed: explaining 1 - F(I) redraws them.
    assert all(a != b for a, b in zip(after[3:], before[3:]))
    assert_no_exception(page, "Explain of 1 - F(I)")
    for method in ("Saliency", "SmoothGrad", "Grad-CAM", "Occlusion", "LIME on SLIC superpixels", "Integrated gradients"):
        assert page.locator('[data-testid="stMarkdownContainer"] strong', has_text=method).count(), method
    page.locator('[data-testid="stImage"]').nth(3).scroll_into_view_if_needed()
    shot(page, "4-explain-not-cancer-parameters")

    name, data = download(page, "Download the patch with its explanations (PNG)")
    assert name.endswith(".png") and slide in name
    picture = check_png(data, "explanations PNG")
    assert picture.width >= 400, picture.size

    # A patch image of real tissue, uploaded: the explanations are drawn for it.
    crop = np.asarray(skdata.immunohistochemistry())[:512, :512]
    upload = tmp_path / "ihc-crop.png"
    Image.fromarray(crop).save(upload)
    page.get_by_text("upload an image").click()
    wait_for_run(page)
    page.locator('[data-testid="stMain"] input[type=file]').first.set_input_files(str(upload))
    page.get_by_text(re.compile(r"^ihc-crop\.png \(128 px at the model's input\)")).wait_for(timeout=120_000)
    page.wait_for_function("document.querySelectorAll('[data-testid=\"stImage\"] img').length === 7", timeout=300_000)
    wait_for_run(page, 300)
    assert_no_exception(page, "Explain of an uploaded patch image")
    assert pictures()[0] not in after, "the uploaded image is not the patch shown"
    # What the user chose is still chosen (a run with no patch yet drew none of these widgets).
    checked = page.locator('[data-testid="stMain"] [data-testid="stRadio"] input[type=radio]:checked').evaluate_all(
        "els => els.map(e => e.closest('label').textContent)"
    )
    assert checked == ["upload an image", "1 − F(I): not cancer"], f"the target was reset: {checked}"
    for label, value, _ in changes:
        assert float(page.locator(f'[data-testid="stMain"] input[aria-label="{label}"]').input_value()) == float(value), f"{label} was reset"
    assert "features.6" in selectbox_text(page, "Grad-CAM layer") and "blurred" in selectbox_text(page, "IG baseline")
    assert "n_segments=20, compactness=20.0" in caption("n_segments=").inner_text(), "the parameters were reset"
    assert "baseline=blurred" in caption("blur_sigma=").inner_text() and "layer features.6 (" in caption("layer features.").inner_text()
    page.locator('[data-testid="stImage"]').nth(3).scroll_into_view_if_needed()
    shot(page, "5-explain-uploaded-image")


# -- 3, 4. Review: the overview, its click, the downloads ---------------------------------------------
def test_review_overview_click_and_every_result_download(page, data_folder):
    from core.slide_io import open_slide

    bugs: list[str] = []
    open_page(page, "Review")
    shown = selectbox_text(page, "Slide")
    if SLIDE not in shown:
        forgotten = [f"slide (shows {shown.split()[-1]})"]
        if COLORMAP not in selectbox_text(page, "Colour map"):
            forgotten.append("colour map")
        shot(page, "6-review-forgot-the-slide")
        bugs.append(
            f"BUG app/main.py (line ~35, the keys written back before st.navigation): back on Review after Explain, "
            f"Review forgot the {' and the '.join(forgotten)} chosen before ({SLIDE}, {COLORMAP}); the patch selected "
            f"there is still {SLIDE}'s. Review's widget keys (state.SELECTED_SLIDE, COLORMAP, OPACITY, VIEW_MODE, "
            f"SHOW_ANNOTATIONS, CUT_BELOW_T, FADE_LOW) are not in the tuple kept across pages, so Streamlit drops them "
            f"on a run of another page."
        )
        pick(page, "Slide", SLIDE)  # what a person does next
    page.get_by_role("radio", name="Overview", exact=True).click()
    wait_for_run(page)
    one_plot(page)
    page.locator('[data-testid="stMain"] .js-plotly-plot').first.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    points = page.evaluate(OVERVIEW_POINTS)
    assert points["images"] == 1, "the overview has no slide picture"
    probs = np.array(points["prob"])
    assert len(probs) > 4
    assert_no_exception(page, "the overview")
    shot(page, "6-overview")
    # The colour bar under the slide (plain HTML): it spans the main column, t marked.
    bar = page.locator('[data-testid="pathexColorbar"]').bounding_box()
    main = page.locator('[data-testid="stMain"] .js-plotly-plot').first.bounding_box()
    assert bar and bar["width"] >= max(200, main["width"] / 2), f"the colour bar is {bar} under a {main['width']:.0f} px figure"
    assert page.locator('[data-testid="pathexColorbarLabel"]').inner_text().strip() == f"t = {THRESHOLD}"

    current = selected_caption(page)
    target = next(int(i) for i in np.argsort(probs)[::-1] if (round(points["x"][i] - current[2] / 2), round(points["y"][i] - current[2] / 2)) != current[:2])
    page.mouse.click(*points["xy"][target])
    wait_for_run(page)
    want = (round(points["x"][target] - current[2] / 2), round(points["y"][target] - current[2] / 2))
    page.get_by_text(f"Patch at level-0 ({want[0]}, {want[1]})").wait_for(timeout=30_000)
    assert metric(page, "F(I), probability of cancer") == f"{probs[target]:.3f}"
    assert_no_exception(page, "a patch clicked on the overview")
    marker = selected_marker(page)
    if marker is None or marker != pytest.approx([points["x"][target], points["y"][target]], abs=1e-6):
        bugs.append(LATE_MARKER.format(how="click on the overview", where="not drawn" if marker is None else f"still at {marker}"))
    shot(page, "7-overview-clicked")

    dims = open_slide(data_folder / "slides" / f"{SLIDE}.tiff").dimensions
    t = float(THRESHOLD)
    page.get_by_text("Download this slide's result").click()
    name, data = download(page, "QuPath GeoJSON (.geojson.gz)")
    assert name == f"{SLIDE}-t{THRESHOLD}.geojson.gz"
    geojson = json.loads(gzip.decompress(data))
    assert geojson["type"] == "FeatureCollection"
    tiles = [f for f in geojson["features"] if "tumor_prob" in f["properties"].get("measurements", {})]
    assert len(tiles) == len(probs), "one QuPath tile per patch"
    tile_probs = np.array([f["properties"]["measurements"]["tumor_prob"] for f in tiles])
    assert ((tile_probs >= 0) & (tile_probs <= 1)).all()
    assert np.sort(tile_probs) == pytest.approx(np.sort(probs), abs=1e-6)
    assert all(f["properties"]["classification"]["name"] == ("Tumor" if p >= t else "Normal") for f, p in zip(tiles, tile_probs))
    regions = [f for f in geojson["features"] if f["properties"].get("objectType") == "annotation"]
    assert regions and all(0 <= r["properties"]["measurements"]["max_prob"] <= 1 for r in regions)
    assert max(r["properties"]["measurements"]["max_prob"] for r in regions) == pytest.approx(probs.max(), abs=1e-6)

    name, data = download(page, "ASAP XML regions")
    assert name == f"{SLIDE}-t{THRESHOLD}.xml"
    root = ET.fromstring(data)
    assert root.tag == "ASAP_Annotations"
    annotations = root.findall("./Annotations/Annotation")
    assert annotations, "no region at t on a tumor slide"
    for annotation in annotations:
        coords = np.array([(float(c.get("X")), float(c.get("Y"))) for c in annotation.findall("./Coordinates/Coordinate")])
        assert len(coords) >= 3
        assert (coords >= 0).all() and (coords[:, 0] <= dims[0]).all() and (coords[:, 1] <= dims[1]).all()

    name, data = download(page, "Camelyon16 detections (CSV)")
    assert name == f"{SLIDE}.csv"
    reader = list(csv.reader(io.StringIO(data.decode())))
    assert reader[0] == ["prob", "x", "y"]
    detections = np.array(reader[1:], dtype=float)
    assert len(detections) >= 1
    assert ((detections[:, 0] >= 0) & (detections[:, 0] <= 1)).all()
    assert detections[:, 0].max() == pytest.approx(probs.max(), abs=1e-6)
    assert ((detections[:, 1] >= 0) & (detections[:, 1] < dims[0]) & (detections[:, 2] >= 0) & (detections[:, 2] < dims[1])).all()

    name, data = download(page, "Overview PNG")
    assert name == f"{SLIDE}-overview-t{THRESHOLD}.png"
    overview = check_png(data, "overview PNG")
    assert overview.width == 1600
    assert_no_exception(page, "the Review downloads")
    shot(page, "8-review-downloads")
    if bugs:
        pytest.fail("; ".join(bugs))


# -- 4. Threshold tuning: every figure in every format, and the report -------------------------------
def test_threshold_figures_in_every_format_and_the_cohort_report(page):
    open_page(page, "Threshold tuning")
    page.get_by_role("heading", name="3. Do we detect the individual tumors?").wait_for(timeout=120_000)
    assert not page.get_by_text("have no predictions with this model yet").count()
    assert_no_exception(page, "Threshold tuning")
    assert metric(page, f"Slide accuracy at t = {THRESHOLD}") != "n/a"
    # Six charts drawn (app.charts): each marks t (the curves' point, the matrices' title).
    page.wait_for_function(f"() => {CHARTS_AT_T % {'t': json.dumps('t = ' + THRESHOLD)}}", timeout=60_000)
    before = page.evaluate(CHART_STATE)
    assert len(before) == 6 and all(c["width"] > 200 and c["height"] >= 300 for c in before), before
    assert sum(c["point"] is not None for c in before) == 4, "the ROC, PR and FROC curves mark the point at t"
    page.get_by_text("Download the figures and a cohort report").click()
    figures = ["slide_roc", "slide_confusion", "patch_roc", "patch_pr", "patch_confusion", "froc"]
    # Every figure as PNG (drawn by matplotlib: curves, log axis, matrices); HTML (plotly's own
    # writer) and SVG (the same matplotlib drawing as vectors) for a matrix and the FROC.
    for fmt, some in (("html", ["slide_confusion", "froc"]), ("png", figures), ("svg", ["slide_confusion", "froc"])):
        page.locator('[data-testid="stMain"] [data-testid="stRadio"]').filter(has_text="Figure format").get_by_text(fmt, exact=True).click()
        page.get_by_role("button", name=f"froc (.{fmt})").wait_for(timeout=30_000)
        wait_for_run(page)
        for figure in some:
            name, data = download(page, f"{figure} (.{fmt})")
            assert name == f"{figure}-t{THRESHOLD}.{fmt}"
            if fmt == "html":
                text = data.decode()
                assert "<html" in text.lower() and "plotly" in text.lower(), f"{name} is not a plotly page"
            elif fmt == "png":
                check_png(data, name)
            else:
                root = ET.fromstring(data)
                assert root.tag.rsplit("}", 1)[-1] == "svg", f"{name}: root {root.tag}"
                assert len(list(root.iter())) > 10, f"{name} draws nothing"
    assert_no_exception(page, "the figure downloads")
    shot(page, "9-threshold-downloads")

    name, data = download(page, re.compile("^Cohort report"))
    assert name == f"cohort-report-t{THRESHOLD}.html"
    html = data.decode()
    assert "<html" in html.lower() and all(f"demo_00{i}" in html for i in range(1, 5))
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=[\"']https?:", html), "the report needs the internet"

    # A t move (to 0.00: the Home key; every patch called tumour, so every point is defined) redraws
    # what t changes in the same plots: none is thrown away and made again.
    page.evaluate("() => document.querySelectorAll('[data-testid=\"stMain\"] .js-plotly-plot').forEach((gd) => { gd.__kept = true; })")
    page.locator('[data-testid="stSidebar"] input[aria-label="Decision threshold t"]').press("Home")
    page.wait_for_function(f"() => {CHARTS_AT_T % {'t': json.dumps('t = 0.00')}}", timeout=60_000)
    wait_for_run(page)
    after = page.evaluate(CHART_STATE)
    assert all(c["kept"] for c in after), "a t move made a chart again"
    assert [c["title"] for c in after[:2]] == [before[0]["title"], "Slides at t = 0.00"]
    moved = [(b["point"], a["point"]) for b, a in zip(before, after) if b["point"] is not None]
    assert all(a is not None for _, a in moved) and sum(a != b for b, a in moved) >= 2, f"the points at t did not move: {moved}"
    assert after[2]["point"] == [1, 1], "at t = 0 every patch is called tumour: the patch ROC point is (1, 1)"
    assert metric(page, "Slide accuracy at t = 0.00") != "n/a"
    assert_no_exception(page, "a t move on Threshold tuning")
    shot(page, "9-threshold-charts-t000")


# -- 6. Sidebar: an uploaded checkpoint becomes the model ----------------------------------------------
def test_an_uploaded_checkpoint_becomes_the_model(page, tmp_path):
    import torch

    from core.model import build_model, save_checkpoint

    torch.manual_seed(1)
    checkpoint = tmp_path / "my-tiny.pt"
    save_checkpoint(checkpoint, build_model("tiny"), {"patch_size": 64, "mpp": 1.0, "label": "uploaded test"})
    bugs: list[str] = []
    open_page(page, "Review")
    page.locator('[data-testid="stSidebar"] input[type=file]').first.set_input_files(str(checkpoint))
    model_line = page.get_by_text(re.compile(r"patches 64 px at 1 µm/px")).first
    error = page.locator('[data-testid="stException"]')
    model_line.or_(error).first.wait_for(timeout=60_000)
    wait_for_run(page, 60)
    if error.count():
        shot(page, "10-uploaded-checkpoint-exception")
        bugs.append(
            "BUG app/main.py (line ~64, the checkpoint upload): a good checkpoint uploaded in the sidebar ends in "
            "StreamlitWidgetAlreadyInstantiatedError: st.session_state[state.MODEL_CHOICE] is set after the Model "
            "selectbox (line ~51) is drawn. Fix: keep the choice under another key, st.rerun(), and apply it before "
            "the selectbox (or handle the upload above the selectbox)"
        )
        open_page(page, "Review")  # what a person does next: go on, then pick the uploaded model
        pick(page, "Model", "uploaded: my-tiny.pt", where="stSidebar")
        model_line.wait_for(timeout=60_000)
        wait_for_run(page, 60)
    assert_no_exception(page, "the uploaded checkpoint in use")
    assert "uploaded: my-tiny.pt" in selectbox_text(page, "Model", where="stSidebar")
    model_line = page.locator('[data-testid="stCaptionContainer"]').filter(has_text="patches 64 px").first.inner_text()
    assert model_line.startswith("Model: uploaded: my-tiny.pt") and "demo" not in model_line, model_line
    # The new model has no predictions yet: the cohort table says so and offers to run it.
    rows = cohort_table(page)
    assert [r["status"] for r in rows] == ["not yet"] * len(rows), rows
    page.get_by_role("button", name=f"Run the model on all {len(rows)} slides without predictions").wait_for(timeout=30_000)
    shot(page, "10-uploaded-checkpoint")
    if bugs:
        pytest.fail("; ".join(bugs))
