"""Explain, CNN basics and Network in headless Chromium (Debian's, driven by Playwright), as a teacher uses them.

One walk on a fresh copy of the small cohort with the demo model: run the model on demo_002 (the tumour slide Review opens on)
(Review), then Explain (every method drawn with its colour scale, LIME's numbers, an uploaded
image with its F(I)), CNN basics (blocky pooled maps) and Network (activation maximization drawing
its steps while it runs). Each page renders without an exception box. Screenshots go to
test-artifacts/explain-*.png.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from PIL import Image

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

IMAGES = '[data-testid="stMain"] [data-testid="stImage"] img'


@pytest.fixture(scope="module")
def server(app_cohort, tmp_path_factory):
    require_browser()
    data = tmp_path_factory.mktemp("browser-explain") / "cohort"
    shutil.copytree(app_cohort, data, ignore=shutil.ignore_patterns("results.sqlite*"))
    with app_server(data, tmp_path_factory.mktemp("log") / "server.log") as url:
        yield url


def open_page(page, title: str) -> None:
    """Go to a page through the sidebar's navigation, as a person does."""
    page.get_by_role("link", name=title).first.click()
    page.get_by_role("heading", name=title).first.wait_for(timeout=240_000)  # the first visit imports Captum, LIME, scikit-image
    wait_for_run(page, 180)


def metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has=page.locator('[data-testid="stMetricLabel"]', has_text=label)).first
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def test_explain_cnn_basics_and_network_pages_draw_their_pictures(server, tmp_path):
    from playwright.sync_api import sync_playwright
    from skimage import data as skdata

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server, wait_until="domcontentloaded")
        page.get_by_role("heading", name="Review").wait_for(timeout=90_000)
        wait_for_run(page)
        run = page.get_by_role("button", name=re.compile("^Run the model on demo_002"))
        run.wait_for(timeout=60_000)
        run.click()
        wait_for_run(page, 240)

        # Explain: the most suspicious patch of demo_002, six methods, each picture with its colour scale.
        open_page(page, "Explain")
        page.get_by_text("most suspicious patch of a slide").click()
        page.wait_for_function(f"document.querySelectorAll('{IMAGES}').length >= 7", timeout=300_000)
        wait_for_run(page, 300)
        assert_no_exception(page, "Explain")
        assert 0.0 <= float(metric(page, "F(I)")) <= 1.0
        lime = page.locator('[data-testid="stCaptionContainer"]').filter(has_text="surrogate R²").first.inner_text()
        assert "(numbered on the picture)" in lime, lime
        for i in range(page.locator(IMAGES).count()):  # images load when near the viewport (lazy): bring each there
            page.locator(IMAGES).nth(i).scroll_into_view_if_needed()
        page.wait_for_function(f"Array.from(document.querySelectorAll('{IMAGES}')).every(e => e.complete && e.naturalWidth > 0)", timeout=60_000)
        sizes = page.locator(IMAGES).evaluate_all("els => els.map(e => [e.naturalWidth, e.naturalHeight])")
        assert len(sizes) == 7 and all(w >= 384 and h > w for w, h in sizes[1:]), sizes  # each map above its scale
        page.locator(IMAGES).nth(4).scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "explain-methods.png"))

        # An uploaded image: its F(I) is shown, computed by the model.
        crop = np.asarray(skdata.immunohistochemistry())[:384, :384]
        upload = tmp_path / "ihc-crop.png"
        Image.fromarray(crop).save(upload)
        page.get_by_text("upload an image").click()
        wait_for_run(page)
        page.locator('[data-testid="stMain"] input[type=file]').first.set_input_files(str(upload))
        page.get_by_text(re.compile(r"^ihc-crop\.png \(")).wait_for(timeout=120_000)
        wait_for_run(page, 300)
        assert_no_exception(page, "Explain of an uploaded image")
        assert re.fullmatch(r"[01]\.\d{3}", metric(page, "F(I)"))
        page.screenshot(path=str(ARTIFACTS / "explain-uploaded.png"))

        # CNN basics: convolution and the three poolings, each pooled map drawn as blocks.
        open_page(page, "CNN basics")
        page.get_by_text("most suspicious patch of a slide").click()
        page.get_by_role("heading", name="Pooling").wait_for(timeout=120_000)
        wait_for_run(page, 120)
        assert_no_exception(page, "CNN basics")
        pooled = page.locator(IMAGES).evaluate_all("els => els.slice(-3).map(e => e.naturalWidth)")
        assert all(w >= 512 for w in pooled), pooled
        page.get_by_role("heading", name="Pooling").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "explain-cnn-basics-pooling.png"))

        # Network: activation maximization shows its steps and objective while it runs.
        open_page(page, "Network")
        assert_no_exception(page, "Network")
        page.get_by_role("tab", name="Activation maximization").click()
        page.get_by_role("button", name="Run gradient ascent").click()
        progress = re.compile(r"Gradient ascent: step (\d+) / 100 · objective")
        page.get_by_text(progress).first.wait_for(timeout=60_000)
        first = int(progress.search(page.get_by_text(progress).first.inner_text()).group(1))
        page.wait_for_function(  # the step count moves on while the run goes
            f"() => {{ const m = document.body.innerText.match(/Gradient ascent: step (\\d+) \\/ 100/); return !m || +m[1] > {first}; }}",
            timeout=120_000,
        )
        page.screenshot(path=str(ARTIFACTS / "explain-network-ascent-running.png"))
        page.get_by_text(re.compile(r"^output logit · [\d.]+ s$")).wait_for(timeout=600_000)  # the result's caption
        assert page.get_by_text(progress).count() == 0  # the progress is gone once the picture is there
        assert_no_exception(page, "Network after gradient ascent")
        page.screenshot(path=str(ARTIFACTS / "explain-network-ascent-done.png"))
        browser.close()
