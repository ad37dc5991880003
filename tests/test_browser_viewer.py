"""The Review page's slide viewer (app/viewer, OpenSeadragon) in headless Debian Chromium, on the
real server: the view survives every widget change, Home fits the whole slide, zoom stops at 2
screen px per level-0 px, the scale bar follows the zoom, the inset moves the view, a click and
a shift-drag box select patches (drawn as their outline), the colour bar shows t, and no request
leaves 127.0.0.1. One server, one page; the tests run in file order. Screenshots go to
test-artifacts/viewer-*.png.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

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

SLIDE = "demo_002"  # the tumour slide Review opens on
LOCAL = re.compile(r"^(https?://(localhost|127\.0\.0\.1)(:\d+)?/|data:|blob:|about:)")
VIEW = "() => window.pathexViewer.view()"
# The viewer has drawn what the last run gave it: the slide, the overlay's tiles and the t outlines.
READY = """() => { const v = window.pathexViewer; return !!(v && v.drawn && v.drawn() && v.viewer.world.getItemCount() >= 2); }"""
# The slide's four corners in page coordinates, and the viewer's box.
CORNERS = """() => { const v = window.pathexViewer, it = v.item(), s = v.slide, r = v.stage.getBoundingClientRect();
    const pts = [[0, 0], [s.width, 0], [0, s.height], [s.width, s.height]].map(([x, y]) => {
        const p = it.imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y)); return [r.x + p.x, r.y + p.y]; });
    return {corners: pts, box: [r.x, r.y, r.width, r.height]}; }"""
TO_PAGE = """([x, y]) => { const v = window.pathexViewer, r = v.stage.getBoundingClientRect();
    const p = v.item().imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y)); return [r.x + p.x, r.y + p.y]; }"""


@pytest.fixture(scope="module")
def data_folder(app_cohort, tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("viewer") / "cohort"
    shutil.copytree(app_cohort, data)
    return data


@pytest.fixture(scope="module")
def browser_page(data_folder, tmp_path_factory):
    """One server and one page (one session), every request recorded."""
    require_browser()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    requests: list[str] = []
    with app_server(data_folder, tmp_path_factory.mktemp("log") / "server.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.on("request", lambda r: requests.append(r.url))
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_role("heading", name="Review").wait_for(timeout=90_000)
        wait_for_run(page)
        yield page, requests
        browser.close()
    outside = [u for u in requests if not LOCAL.match(u)]
    assert not outside, f"requests left the machine: {outside[:5]}"


# -- helpers ---------------------------------------------------------------------------------------
def ready(page) -> None:
    """Wait until the viewer has its slide and the current overlay drawn."""
    page.wait_for_function(READY, timeout=60_000)
    page.wait_for_timeout(300)


def settle(page) -> None:
    """Wait for the viewer's animation to end (its view stops changing)."""
    last = None
    for _ in range(40):
        now = page.evaluate(VIEW)
        if last is not None and now == last:
            return
        last = now
        page.wait_for_timeout(150)


def shot(page, name: str) -> None:
    page.locator('[data-testid="pathexViewer"]').screenshot(path=str(ARTIFACTS / f"viewer-{name}.png"))


def same_view(a: dict, b: dict) -> bool:
    return a["x"] == pytest.approx(b["x"], abs=1) and a["y"] == pytest.approx(b["y"], abs=1) and a["zoom"] == pytest.approx(b["zoom"], rel=1e-3)


def all_inside(page) -> bool:
    info = page.evaluate(CORNERS)
    x, y, w, h = info["box"]
    return all(x - 1 <= cx <= x + w + 1 and y - 1 <= cy <= y + h + 1 for cx, cy in info["corners"])


def wheel(page, clicks: int, at: tuple[float, float] | None = None) -> None:
    box = page.locator('[data-testid="pathexViewer"]').bounding_box()
    page.mouse.move(*(at or (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)))
    for _ in range(abs(clicks)):
        page.mouse.wheel(0, -200 if clicks > 0 else 200)
        page.wait_for_timeout(120)
    settle(page)


def set_threshold(page, value: str) -> None:
    """Move the sidebar's t with the keyboard, a step at a time (each a rerun), to ``value``."""
    slider = page.locator('[data-testid="stSidebar"] input[aria-label="Decision threshold t"]')
    shown = page.locator('[data-testid="stSidebar"] [data-testid="stSliderThumbValue"]').first
    for _ in range(100):
        now = float(slider.input_value())
        if f"{now:.2f}" == value:
            break
        slider.press("ArrowRight" if float(value) > now else "ArrowLeft")
        page.wait_for_function("([el, old]) => el.textContent.trim() !== old", arg=[shown.element_handle(), f"{now:.2f}"], timeout=30_000)
    wait_for_run(page)
    assert shown.inner_text().strip() == value
    # Each step reruns the page's view (a fragment); a step that comes while one runs restarts it, so
    # the runs can outlast the running indicator's gaps: wait for the view to show the last t.
    page.wait_for_function(
        "(t) => { const el = document.querySelector('[data-testid=\"pathexColorbarLabel\"]'); return el && el.textContent.trim() === t; }",
        arg=f"t = {value}", timeout=60_000,
    )
    wait_for_run(page)


def predictions(data_folder: Path):
    from core.store import ResultStore

    with ResultStore(data_folder / "results.sqlite") as store:
        [run] = [r for r in store.runs(status="complete")]
        return store.read_predictions(run.id)


STATE: dict = {}


# -- the tests, in order -----------------------------------------------------------------------
def test_viewer_opens_fitting_the_whole_slide_with_scale_and_colour_bar(browser_page):
    page, _ = browser_page
    # Before any run the slide is in the viewer already, without a heatmap.
    page.wait_for_function("() => window.pathexViewer && window.pathexViewer.data && window.pathexViewer.viewer && window.pathexViewer.viewer.world.getItemCount() === 1", timeout=60_000)
    assert page.evaluate("() => window.pathexViewer.data.overlay") is None
    page.evaluate("() => { window.preRunViewer = window.pathexViewer; window.preRunCanvas = window.pathexViewer.viewer.drawer.canvas; }")
    page.get_by_role("button", name=re.compile(f"^Run the model on {SLIDE}")).click()
    wait_for_run(page, 180)
    # Until the run's end reaches the browser, the element drawn before the run is still on the
    # page beside the new one (a busy machine shows it): wait for the one that stays.
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"pathexViewer\"]').length === 1", timeout=60_000)
    page.locator('[data-testid="pathexViewer"]').scroll_into_view_if_needed()
    ready(page)
    settle(page)
    # The run draws the viewer at another place on the page: the new element adopted the viewer
    # shown before the run (its canvas and loaded tiles), and added the heatmap to it.
    assert page.evaluate("() => [window.pathexViewer === window.preRunViewer, window.pathexViewer.viewer.drawer.canvas === window.preRunCanvas, !!window.preRunViewer.viewer]") == [True, True, True]
    assert page.evaluate("() => document.querySelectorAll('[data-testid=\"pathexViewer\"]').length") == 1
    assert page.evaluate("() => window.pathexViewer.viewer.world.getItemCount()") == 2
    assert all_inside(page), "the whole slide is not inside the viewer at open"
    scale = page.locator('[data-testid="pathexScale"]')
    assert scale.is_visible() and re.fullmatch(r"\d+(\.\d+)? (µm|mm)", scale.inner_text().strip())
    assert re.fullmatch(r"≈ \d+(\.\d)?x", page.locator('[data-testid="pathexMagnification"]').inner_text().strip())
    bar = page.locator('[data-testid="pathexColorbar"]')
    box = bar.bounding_box()
    assert box and box["width"] >= 200, f"the colour bar is {box}"
    assert page.locator('[data-testid="pathexColorbarLabel"]').inner_text().strip() == "t = 0.50"
    mark = page.locator('[data-testid="pathexColorbarMark"]').bounding_box()
    assert mark["x"] + mark["width"] / 2 == pytest.approx(box["x"] + box["width"] / 2, abs=6), "t = 0.5 is not marked mid-bar"
    assert_no_exception(page, "the viewer")
    shot(page, "home")
    STATE["home"] = page.evaluate(VIEW)
    STATE["scale"] = scale.inner_text().strip()


def test_view_survives_opacity_threshold_and_colour_map(browser_page, data_folder):
    from core.heatmap import outline_runs, probability_grid

    page, requests = browser_page
    wheel(page, 6)
    zoomed = page.evaluate(VIEW)
    assert zoomed["zoom"] > STATE["home"]["zoom"] * 2, "scrolling did not zoom in"
    assert page.locator('[data-testid="pathexScale"]').inner_text().strip() != STATE["scale"], "the scale bar did not follow the zoom"
    # Pan a little too, so the centre is not the slide's.
    box = page.locator('[data-testid="pathexViewer"]').bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 60, box["y"] + box["height"] / 2 + 40, steps=6)
    page.mouse.up()
    settle(page)
    view = page.evaluate(VIEW)
    shot(page, "zoomed-t-0.50")
    token = page.evaluate("() => window.pathexViewer.overlay.token")

    slider = page.locator('[data-testid="stMain"] input[aria-label="Heatmap opacity"]')
    slider.press("ArrowLeft")
    wait_for_run(page)
    page.wait_for_function("() => Math.abs(window.pathexViewer.overlay.item.getOpacity() - 0.55) < 1e-6", timeout=30_000)
    ready(page)
    assert same_view(page.evaluate(VIEW), view), "changing the opacity moved the view"

    tiles_before = len([u for u in requests if "/tiles/overlay/" in u])
    set_threshold(page, "0.40")
    ready(page)
    assert page.locator('[data-testid="pathexColorbarLabel"]').inner_text().strip() == "t = 0.40"
    # The overlay's tiles do not depend on t: ten t moves fetch no tile; the browser redraws the
    # outlines from the run's grid, exactly where Python puts the border of the cells >= t.
    assert page.evaluate("() => window.pathexViewer.overlay.token") == token, "moving t changed the overlay's tiles"
    assert len([u for u in requests if "/tiles/overlay/" in u]) == tiles_before, "moving t fetched overlay tiles"
    runs = page.evaluate("() => window.pathexViewer.outlineRuns")
    preds = predictions(data_folder)
    grid = probability_grid(preds.x, preds.y, preds.prob, int(preds.width[0]))
    horizontal, vertical = outline_runs(grid, 0.40)
    assert runs["horizontal"] == horizontal.tolist() and runs["vertical"] == vertical.tolist()
    spec = page.evaluate("() => window.pathexViewer.data.outline")
    assert (spec["rows"], spec["cols"], spec["x0"], spec["y0"], spec["step0"], spec["t"]) == (*grid.shape, grid.x0, grid.y0, grid.step0, 0.4)
    # Drawn: one path (halo and line) with a move per run, in level-0 px.
    d = page.locator('[data-testid="pathexOutlines"] path.pathex-outline').get_attribute("d")
    assert d.count("M") == len(horizontal) + len(vertical) > 0
    assert page.evaluate("() => window.pathexViewer.viewer.world.getItemCount()") == 2
    assert same_view(page.evaluate(VIEW), view), "moving t moved the view"
    shot(page, "zoomed-t-0.40")

    box = page.locator('[data-testid="stMain"] [data-testid="stSelectbox"]').filter(has_text="Colour map").first
    box.click()
    page.get_by_role("option", name="inferno", exact=True).click()
    wait_for_run(page)
    ready(page)
    assert page.evaluate("() => window.pathexViewer.overlay.token") != token, "a new colour map kept the old tiles"
    assert same_view(page.evaluate(VIEW), view), "changing the colour map moved the view"
    for toggle in ("Transparent low F(I)", "Annotation outlines"):
        page.locator('[data-testid="stMain"] label').filter(has_text=toggle).first.click()
        wait_for_run(page)
        ready(page)
        assert same_view(page.evaluate(VIEW), view), f"the {toggle} switch moved the view"
    assert_no_exception(page, "widget changes")
    STATE["view"] = view


def test_zoom_stops_at_two_screen_pixels_per_slide_pixel_and_home_fits(browser_page):
    page, _ = browser_page
    page.get_by_test_id("pathexFull").click()
    settle(page)
    assert page.evaluate(VIEW)["zoom"] == pytest.approx(1.0, rel=1e-3)
    # At 1:1 one screen px is one level-0 px: magnification 10 / mpp (10x = 1 µm per screen px),
    # and the scale bar's length in screen px times mpp is the length its label says.
    mpp = page.evaluate("() => window.pathexViewer.slide.mpp")
    shown = float(re.search(r"[\d.]+", page.get_by_test_id("pathexMagnification").inner_text()).group())
    assert shown == pytest.approx(10 / mpp, rel=0.05)
    number, unit = page.get_by_test_id("pathexScale").inner_text().split()
    width = page.evaluate("() => window.pathexViewer.scaleBar.getBoundingClientRect().width")
    assert width * mpp == pytest.approx(float(number) * (1000 if unit == "mm" else 1), rel=0.03)
    shot(page, "full-resolution")
    for _ in range(6):
        page.get_by_test_id("pathexZoomIn").click()
        page.wait_for_timeout(150)
    wheel(page, 10)
    assert page.evaluate(VIEW)["zoom"] == pytest.approx(2.0, rel=1e-3), "zoom went past 2 screen px per level-0 px"
    page.get_by_test_id("pathexHome").click()
    settle(page)
    assert all_inside(page), "Home does not show the whole slide"
    assert same_view(page.evaluate(VIEW), STATE["home"])
    # Another canvas shape (a narrow window): Home still fits the whole slide, letterboxed.
    page.set_viewport_size({"width": 760, "height": 1100})
    page.wait_for_timeout(800)
    page.get_by_test_id("pathexHome").click()
    settle(page)
    assert all_inside(page), "Home does not show the whole slide in a narrow window"
    page.set_viewport_size({"width": 1400, "height": 1100})
    page.wait_for_timeout(800)
    page.get_by_test_id("pathexHome").click()
    settle(page)


def test_inset_click_moves_the_view(browser_page):
    page, _ = browser_page
    page.get_by_test_id("pathexFull").click()
    settle(page)
    before = page.evaluate(VIEW)
    nav = page.evaluate("() => { const r = window.pathexViewer.viewer.navigator.element.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; }")
    # The inset shows the slide letterboxed in its box: click a quarter of the way in, top left.
    target = page.evaluate(
        """() => { const nav = window.pathexViewer.viewer.navigator, s = window.pathexViewer.slide;
                   const it = nav.world.getItemAt(0), r = nav.element.getBoundingClientRect();
                   const p = it.imageToViewerElementCoordinates(new OpenSeadragon.Point(s.width / 4, s.height / 4));
                   return [r.x + p.x, r.y + p.y]; }"""
    )
    assert nav[0] <= target[0] <= nav[0] + nav[2] and nav[1] <= target[1] <= nav[1] + nav[3]
    page.mouse.click(*target)
    settle(page)
    after = page.evaluate(VIEW)
    slide = page.evaluate("() => window.pathexViewer.slide")
    assert (after["x"], after["y"]) != pytest.approx((before["x"], before["y"]), abs=5), "the inset click did not move the view"
    assert after["x"] == pytest.approx(slide["width"] / 4, abs=slide["width"] / 20)
    assert after["y"] == pytest.approx(slide["height"] / 4, abs=slide["height"] / 20)


def test_without_microns_per_pixel_no_scale_and_a_note(browser_page):
    """A slide with no µm per pixel (viewer_data(mpp=None) sends null): no scale bar, a note instead of a magnification."""
    page, _ = browser_page
    page.evaluate("() => { const v = window.pathexViewer; v.savedMpp = v.slide.mpp; v.slide.mpp = null; v.drawScale(); }")
    assert not page.get_by_test_id("pathexScale").is_visible()
    assert page.get_by_test_id("pathexMagnification").inner_text().strip() == "No µm per pixel: no scale"
    page.evaluate("() => { const v = window.pathexViewer; v.slide.mpp = v.savedMpp; v.drawScale(); }")
    assert page.get_by_test_id("pathexScale").is_visible()


def test_click_and_box_select_patches_drawn_as_outlines(browser_page, data_folder):
    page, _ = browser_page
    page.get_by_test_id("pathexHome").click()
    settle(page)
    preds = predictions(data_folder)
    size0 = int(preds.width[0])
    order = np.argsort(preds.prob)
    pick = int(order[len(order) // 2])
    cx, cy = float(preds.x[pick] + size0 / 2), float(preds.y[pick] + size0 / 2)
    page.mouse.click(*page.evaluate(TO_PAGE, [cx, cy]))
    wait_for_run(page)
    caption = page.get_by_text(f"Patch at level-0 ({int(preds.x[pick])}, {int(preds.y[pick])})")
    caption.wait_for(timeout=30_000)
    ready(page)
    rect = page.locator('[data-testid="pathexSelected"]')
    assert float(rect.get_attribute("x")) == preds.x[pick] and float(rect.get_attribute("width")) == size0
    # Drawn at its real size: side = size0 x screen px per level-0 px.
    zoom = page.evaluate(VIEW)["zoom"]
    assert rect.bounding_box()["width"] == pytest.approx(size0 * zoom, rel=0.05, abs=2)
    assert_no_exception(page, "a clicked patch")
    shot(page, "clicked-patch")

    # Shift-drag a box around the most suspicious patch and its neighbours: it becomes the selection.
    best = int(np.argmax(preds.prob))
    x0, y0 = page.evaluate(TO_PAGE, [float(preds.x[best] - size0 * 0.6), float(preds.y[best] - size0 * 0.6)])
    x1, y1 = page.evaluate(TO_PAGE, [float(preds.x[best] + size0 * 1.6), float(preds.y[best] + size0 * 1.6)])
    page.keyboard.down("Shift")
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=5)
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()
    page.keyboard.up("Shift")
    wait_for_run(page)
    page.get_by_text(f"Patch at level-0 ({int(preds.x[best])}, {int(preds.y[best])})").wait_for(timeout=30_000)
    cx, cy = preds.x + size0 / 2, preds.y + size0 / 2
    lo_x, lo_y, hi_x, hi_y = preds.x[best] - size0 * 0.6, preds.y[best] - size0 * 0.6, preds.x[best] + size0 * 1.6, preds.y[best] + size0 * 1.6
    n_inside = int(((cx >= lo_x) & (cx <= hi_x) & (cy >= lo_y) & (cy <= hi_y)).sum())
    if n_inside > 1:
        page.get_by_text(f"{n_inside} patches selected; showing the one with the highest F(I).").wait_for(timeout=15_000)
    assert float(page.locator('[data-testid="pathexSelected"]').get_attribute("x")) == preds.x[best]
    assert_no_exception(page, "a box selection")

    # "Go to the most suspicious patch": the view centres it at full resolution, once (a rerun keeps the user's view).
    page.get_by_test_id("pathexHome").click()
    settle(page)
    page.get_by_role("button", name="Go to the most suspicious patch").click()
    wait_for_run(page)
    settle(page)
    view = page.evaluate(VIEW)
    assert view["zoom"] == pytest.approx(1.0, rel=1e-3)
    assert (view["x"], view["y"]) == pytest.approx((preds.x[best] + size0 / 2, preds.y[best] + size0 / 2), abs=2)
    page.get_by_test_id("pathexHome").click()
    settle(page)
    page.locator('[data-testid="stMain"] input[aria-label="Heatmap opacity"]').press("ArrowRight")
    wait_for_run(page)
    settle(page)
    assert same_view(page.evaluate(VIEW), STATE["home"]), "a rerun applied the focus again"


def test_view_survives_a_page_switch_and_a_new_slide_fits(browser_page):
    page, _ = browser_page
    page.get_by_test_id("pathexFull").click()
    settle(page)
    view = page.evaluate(VIEW)
    token = page.evaluate("() => window.pathexViewer.slide.token")
    page.get_by_role("link", name="Threshold tuning").first.click()
    page.get_by_role("heading", name="Threshold tuning").first.wait_for(timeout=60_000)
    wait_for_run(page)
    page.get_by_role("link", name="Review").first.click()
    page.get_by_role("heading", name="Review").first.wait_for(timeout=60_000)
    wait_for_run(page)
    page.locator('[data-testid="pathexViewer"]').scroll_into_view_if_needed()
    page.wait_for_function("() => window.pathexViewer && window.pathexViewer.viewer && window.pathexViewer.viewer.world.getItemCount() >= 1", timeout=60_000)
    settle(page)
    assert same_view(page.evaluate(VIEW), view), "back on Review, the viewer forgot its view"
    # Another slide (not predicted yet) shows no viewer; predicted, it opens fitted.
    box = page.locator('[data-testid="stMain"] [data-testid="stSelectbox"]').filter(has_text="Slide").first
    box.click()
    page.get_by_role("option", name="demo_003", exact=True).click()
    wait_for_run(page)
    # A slide to run is a place too: the URL names it (a reload opens it, not the slide before), and
    # t moved there keeps the viewer's view in it (that run sends the viewer nothing new).
    assert "slide=demo_003" in page.url and "px=" not in page.url, page.url
    slider = page.locator('[data-testid="stSidebar"] input[aria-label="Decision threshold t"]')
    moved = f"{float(slider.input_value()) + 0.01:.2f}"
    slider.press("ArrowRight")
    wait_for_run(page)
    page.wait_for_function(
        "(t) => { const q = new URLSearchParams(location.search); return q.get('slide') === 'demo_003' && q.get('t') === t && q.has('x') && q.has('zoom'); }",
        arg=moved, timeout=5_000,
    )
    slider.press("ArrowLeft")
    wait_for_run(page)
    page.get_by_role("button", name=re.compile("^Run the model on demo_003")).click()
    wait_for_run(page, 180)
    ready(page)
    settle(page)
    assert page.evaluate("() => window.pathexViewer.slide.token") != token
    assert all_inside(page), "a new slide does not open fitted"
    assert_no_exception(page, "another slide")


def slide_predictions(data_folder: Path, name: str):
    from core.store import ResultStore

    with ResultStore(data_folder / "results.sqlite") as store:
        [run] = [r for r in store.runs(status="complete") if store.slide(r.slide_id).name == name]
        return store.read_predictions(run.id)


def selected_slide(page) -> str:
    """The Slide selectbox's text: its input's value and its text content (the label and the option shown)."""
    box = page.locator('[data-testid="stMain"] [data-testid="stSelectbox"]').filter(has_text="Slide").first
    return box.evaluate("el => { const i = el.querySelector('input'); return ((i && i.value) || '') + ' ' + el.textContent; }")


def place(page) -> dict:
    """What a link must restore: the slide's name, t, the selected patch's corner and the view."""
    ready(page)
    settle(page)
    rect = page.locator('[data-testid="pathexSelected"]')
    return {
        "slide": selected_slide(page),
        "t": page.locator('[data-testid="stSidebar"] input[aria-label="Decision threshold t"]').input_value(),
        "patch": (rect.get_attribute("x"), rect.get_attribute("y")) if rect.count() else None,
        "view": page.evaluate(VIEW),
    }


def test_a_reload_and_an_opened_link_restore_slide_view_t_and_patch(browser_page, data_folder):
    page, _ = browser_page  # on demo_003 (the test above), predicted
    page.locator('[data-testid="pathexViewer"]').scroll_into_view_if_needed()
    wheel(page, 3)
    set_threshold(page, "0.47")
    ready(page)
    # Click the patch under the view's centre.
    view = page.evaluate(VIEW)
    preds = slide_predictions(data_folder, "demo_003")
    size0 = int(preds.width[0])
    [hit] = np.nonzero((preds.x <= view["x"]) & (view["x"] < preds.x + size0) & (preds.y <= view["y"]) & (view["y"] < preds.y + size0))[0][:1]
    page.mouse.click(*page.evaluate(TO_PAGE, [float(preds.x[hit] + size0 / 2), float(preds.y[hit] + size0 / 2)]))
    wait_for_run(page)
    page.get_by_text(f"Patch at level-0 ({int(preds.x[hit])}, {int(preds.y[hit])})").wait_for(timeout=30_000)
    before = place(page)
    assert "demo_003" in before["slide"] and before["t"] == "0.47", before
    assert before["patch"] == (f"{int(preds.x[hit])}", f"{int(preds.y[hit])}")
    url = page.url
    for key in ("slide=demo_003", "t=0.47", f"px={int(preds.x[hit])}", f"py={int(preds.y[hit])}", "x=", "y=", "zoom="):
        assert key in url, (key, url)

    def same_place(after: dict) -> None:
        assert (after["slide"], after["t"], after["patch"]) == (before["slide"], before["t"], before["patch"])
        # The URL rounds the centre to a pixel and the zoom to 4 digits.
        assert after["view"]["x"] == pytest.approx(before["view"]["x"], abs=2)
        assert after["view"]["y"] == pytest.approx(before["view"]["y"], abs=2)
        assert after["view"]["zoom"] == pytest.approx(before["view"]["zoom"], rel=2e-3)

    page.reload(wait_until="domcontentloaded")
    page.get_by_role("heading", name="Review").wait_for(timeout=90_000)
    wait_for_run(page)
    page.locator('[data-testid="pathexViewer"]').wait_for(timeout=90_000)  # a reload's first run, on a busy machine
    page.locator('[data-testid="pathexViewer"]').scroll_into_view_if_needed()
    same_place(place(page))
    assert_no_exception(page, "a reload")

    # The link in another browser session (nothing in its storage): the same field of view.
    other = page.context.browser.new_context(viewport={"width": 1400, "height": 1100})
    try:
        fresh = other.new_page()
        fresh.goto(url, wait_until="domcontentloaded")
        fresh.get_by_role("heading", name="Review").wait_for(timeout=90_000)
        wait_for_run(fresh)
        fresh.locator('[data-testid="pathexViewer"]').wait_for(timeout=90_000)
        fresh.locator('[data-testid="pathexViewer"]').scroll_into_view_if_needed()
        same_place(place(fresh))
        assert_no_exception(fresh, "an opened link")
        fresh.screenshot(path=str(ARTIFACTS / "viewer-opened-link.png"))
    finally:
        other.close()
