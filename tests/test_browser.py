"""The real app in headless Chromium (Debian's, driven by Playwright): every page renders, the
deep-zoom viewer loads tiles from our own server and deeper levels when zooming, nothing
leaves 127.0.0.1. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re
import shutil
import urllib.request

import pytest

from tests.browser_support import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    app_server,
    require_browser,
    wait_for_run,
)

PAGES = ["Review", "Threshold tuning", "Explain", "Network", "CNN basics", "Training"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(app_cohort, tmp_path_factory):
    require_browser()
    data = tmp_path_factory.mktemp("browser") / "cohort"
    shutil.copytree(app_cohort, data)
    with app_server(data, tmp_path_factory.mktemp("log") / "server.log") as url:
        yield url


def test_unknown_tile_tokens_are_refused(server):
    for path in ("/tiles/slide/not-a-token/0/0/0.jpg", "/tiles/overlay/x/0/0/0.png", "/tiles/slide/..%2F..%2Fetc%2Fpasswd/0/0/0.jpg"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(server + path, timeout=5)
        assert info.value.code in (400, 403, 404)


VIEWER_DRAWN = "() => !!(window.pathexViewer && window.pathexViewer.drawn && window.pathexViewer.drawn())"


def test_pages_render_and_viewer_zooms(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    requests: list[str] = []
    responses: dict[str, int] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("request", lambda r: requests.append(r.url))
        page.on("response", lambda r: responses.__setitem__(r.url, r.status))
        page.goto(server, wait_until="domcontentloaded")
        page.get_by_role("heading", name="Review").wait_for(timeout=90_000)
        wait_for_run(page)
        # A fresh copy of the cohort: the demo model has no predictions yet, so the button is there.
        run = page.get_by_role("button", name=re.compile("^Run the model on demo_002"))
        run.wait_for(timeout=60_000)
        run.click()
        wait_for_run(page, 180)
        canvas = page.locator('[data-testid="pathexViewer"]')
        canvas.wait_for(timeout=60_000)
        canvas.scroll_into_view_if_needed()
        page.wait_for_function(VIEWER_DRAWN, timeout=60_000)  # its tiles and the heatmap's, all drawn
        for _ in range(100):  # the heatmap's tiles are asked for in the frame after it is added
            if any("/tiles/overlay/" in u for u in requests):
                break
            page.wait_for_timeout(100)
        slide_tiles = [u for u in requests if "/tiles/slide/" in u]
        overlay_tiles = [u for u in requests if "/tiles/overlay/" in u]
        assert slide_tiles and overlay_tiles, "the viewer requested no tiles"
        zoom_of = lambda u: int(re.search(r"/(\d+)/\d+/\d+\.(jpg|png)", u).group(1))  # noqa: E731
        first_max = max(zoom_of(u) for u in slide_tiles)
        page.screenshot(path=str(ARTIFACTS / "review-viewer.png"))

        box = canvas.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        for _ in range(12):
            page.mouse.wheel(0, -400)
            page.wait_for_timeout(250)
        page.wait_for_timeout(800)  # the zoom's animation ends
        page.wait_for_function(VIEWER_DRAWN, timeout=60_000)
        deeper = [u for u in requests if "/tiles/slide/" in u and zoom_of(u) > first_max]
        assert deeper, f"no deeper tiles requested after zooming (max zoom seen {first_max})"
        assert all(responses.get(u) == 200 for u in deeper if u in responses)
        page.screenshot(path=str(ARTIFACTS / "review-viewer-zoomed.png"))

        # Bad uploads: a clear message in the page, and the app keeps working.
        page.locator('[data-testid="stMain"] input[type=file]').first.set_input_files(
            files=[{"name": "broken.svs", "mimeType": "application/octet-stream", "buffer": b"II*\x00" + bytes(2000)}]
        )
        page.get_by_text(re.compile("broken.svs[: ].*(OpenSlide can read|damaged|unsupported)")).wait_for(timeout=60_000)
        page.locator('[data-testid="stSidebar"] input[type=file]').first.set_input_files(
            files=[{"name": "not-a-model.pt", "mimeType": "application/octet-stream", "buffer": b"this is not a checkpoint"}]
        )
        page.get_by_text(re.compile("not-a-model.pt[:' ].*(corrupt|not a PyTorch)")).wait_for(timeout=60_000)
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(ARTIFACTS / "review-bad-uploads.png"))

        for title in PAGES[1:]:
            link = page.get_by_role("link", name=title)
            link.first.wait_for(timeout=30_000)  # every page is in the navigation: a missing one fails
            link.first.click()
            page.get_by_role("heading", name=title).first.wait_for(timeout=90_000)
            wait_for_run(page, 180)
            assert page.locator('[data-testid="stException"]').count() == 0, f"exception on {title}"
            page.screenshot(path=str(ARTIFACTS / f"page-{title.lower().replace(' ', '-')}.png"), full_page=True)
            if title == "Threshold tuning":
                # Only demo_002 (the tumour slide Review opens on) is predicted: the page offers the other three.
                missing = page.get_by_role("button", name=re.compile("^Run the model on the 3 missing slides"))
                missing.wait_for(timeout=60_000)
                missing.click()
                wait_for_run(page, 300)
                page.get_by_role("heading", name="3. Do we detect the individual tumors?").wait_for(timeout=120_000)
                page.get_by_text("have no predictions with this model yet").wait_for(state="detached", timeout=120_000)
                wait_for_run(page, 120)
                # Every slide counts now: the six charts are drawn (the downloads and the cohort
                # report are test_browser_paths' walk).
                page.wait_for_function("document.querySelectorAll('[data-testid=\"pathexChart\"] .main-svg').length >= 6", timeout=60_000)
                assert page.locator('[data-testid="stException"]').count() == 0
                page.screenshot(path=str(ARTIFACTS / "page-threshold-tuning-cohort.png"), full_page=True)
        browser.close()
    outside = [u for u in requests if not re.match(r"^(https?://(localhost|127\.0\.0\.1)(:\d+)?/|data:|blob:)", u)]
    assert not outside, f"requests left the machine: {outside[:5]}"
