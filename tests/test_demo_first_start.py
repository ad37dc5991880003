"""First start on an empty demo folder: the frame is drawn before the synthetic cohort is complete.

A real server in headless Chromium (Debian's): the title, the sidebar and the navigation are
there, with a progress line that says what is being made, while the generator is still
writing slides; a click shows the slides written so far on Review.
"""

from __future__ import annotations

import re

import pytest

from core.demo import cohort_in_progress
from tests.browser_support import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, app_server, assert_no_exception, require_browser

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_frame_renders_before_the_cohort_is_complete(tmp_path):
    from playwright.sync_api import sync_playwright

    require_browser()
    ARTIFACTS.mkdir(exist_ok=True)
    data = tmp_path / "demo"  # absent: the first start generates the default cohort (24 slides)
    with app_server(data, tmp_path / "server.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url, wait_until="domcontentloaded")
        sidebar = page.locator('[data-testid="stSidebar"]')
        sidebar.get_by_text("Pathology Explorer").first.wait_for(timeout=60_000)
        progress = page.get_by_text(re.compile(r"Creating the synthetic demo cohort \(first start only\): \d+/24 slides written"))
        progress.first.wait_for(timeout=30_000)
        page.get_by_role("heading", name="Review").wait_for(timeout=30_000)
        nav = page.locator('[data-testid="stSidebarNav"]')
        for name in ("Review", "Threshold tuning", "Explain", "Training"):
            assert nav.get_by_text(name, exact=True).count() >= 1, name
        # All of this while the cohort is still being written.
        assert cohort_in_progress(data)
        written = len(list((data / "slides").glob("*.tiff")))
        assert written < 24
        page.screenshot(path=str(ARTIFACTS / "first-start.png"))
        # The first slides become usable as they are written: a click shows them, and Review offers
        # to run the model on one.
        show = page.get_by_role("button", name=re.compile(r"^Show the \d+ slides written so far"))
        show.first.wait_for(timeout=120_000)
        show.first.click()
        page.get_by_role("button", name=re.compile("^Run the model on demo_0")).first.wait_for(timeout=60_000)
        assert cohort_in_progress(data) or len(list((data / "slides").glob("*.tiff"))) == 24
        assert_no_exception(page, "Review during the first start")
        browser.close()
