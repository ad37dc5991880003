"""The tile routes as the app serves them: `streamlit run app/main.py` (its own st.App mount), over HTTP.

A browser session opens Review on a predicted slide, so the page registers its slide and
overlay in the server; the test then asks that same server for tiles out of the pyramid (a
zoom one past the deepest, x or y one past the edge, a billion, a thousand digits, signs,
letters): each is a 404 at once with a plain-text body, never a 500 or a traceback, and the
server stays healthy and keeps serving the real tiles.
"""

from __future__ import annotations

import re
import shutil
import time
import urllib.error
import urllib.request

import pytest

from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, app_server, assert_no_exception, require_browser, wait_for_run
from tests.conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TILE = re.compile(r"/tiles/(slide|overlay)/([0-9a-f]+)/(\d+)/(\d+)/(\d+)\.(jpg|png)$")


@pytest.fixture(scope="module")
def served(app_cohort, tmp_path_factory):
    """(server URL, {kind: (token, deepest zoom seen, suffix)}) after Review drew demo_002's heatmap (the tumour slide it opens on)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    from core.inference import predict_slide
    from core.model import load_checkpoint
    from core.store import ResultStore

    data = tmp_path_factory.mktemp("tiles") / "cohort"
    shutil.copytree(app_cohort, data, ignore=shutil.ignore_patterns("results.sqlite*"))
    model, meta = load_checkpoint(ROOT / "models" / "demo-tiny.pt")  # the app's default model
    from core.inference import model_tiling

    with ResultStore(data / "results.sqlite") as store:
        predict_slide(data / "slides" / "demo_002.tiff", model, store, model_tiling(meta), model_id=meta["model_id"], metadata=meta, device="cpu")
    seen: dict[str, tuple[str, int, str]] = {}
    with app_server(data, tmp_path_factory.mktemp("log") / "server.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})

        def note(request) -> None:
            match = TILE.search(request.url)
            if match:
                kind, token, z = match.group(1), match.group(2), int(match.group(3))
                if z >= seen.get(kind, ("", -1, ""))[1]:
                    seen[kind] = (token, z, match.group(6))

        page.on("request", note)
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_role("heading", name="Review").wait_for(timeout=90_000)
        wait_for_run(page)
        for _ in range(120):
            if {"slide", "overlay"} <= seen.keys():
                break
            page.wait_for_timeout(500)
        assert_no_exception(page, "Review")
        browser.close()
        assert {"slide", "overlay"} <= seen.keys(), f"the viewer requested no tiles: {seen}"
        yield url, seen


def fetch(url: str) -> tuple[int, str, bytes, float]:
    """GET ``url``; return (status, content type, body, seconds)."""
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read(), time.perf_counter() - started
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read(), time.perf_counter() - started


@pytest.mark.parametrize("kind", ["slide", "overlay"])
def test_out_of_range_tiles_are_404_on_the_apps_own_server(served, kind):
    url, seen = served
    token, z_seen, suffix = seen[kind]
    base = f"{url}/tiles/{kind}/{token}"
    status, media, _, _ = fetch(f"{base}/0/0/0.{suffix}")
    assert status == 200 and media.startswith("image/"), (status, media)
    # The deepest zoom of the pyramid: walk down from what the viewer asked for while tile (z, 0, 0) exists.
    top = z_seen
    while fetch(f"{base}/{top + 1}/0/0.{suffix}")[0] == 200:
        top += 1
    side = 2**top
    refused = [
        f"{top + 1}/0/0", f"0/1/0", f"0/0/1", f"{top}/{side}/0", f"{top}/0/{side}",
        "1000000000/0/0", "9" * 1000 + "/0/0", f"{top}/{'9' * 1000}/0", "-1/0/0", f"{top}/-1/0", "a/0/0", "1e9/0/0", "0x10/0/0",
        f"{top}/999999999/999999999",
    ]
    for address in refused:
        status, media, body, seconds = fetch(f"{base}/{address}.{suffix}")
        assert status == 404, (address, status, body[:200])
        assert media.startswith("text/plain") and b"Traceback" not in body, (address, media)
        assert seconds < 5, (address, seconds)  # nothing heavy happened (a 2**z would take minutes)
    status, _, body, _ = fetch(f"{url}/_stcore/health")
    assert status == 200 and body.strip() == b"ok"
    assert fetch(f"{base}/{top}/0/0.{suffix}")[0] in (200, 404)  # the corner tile may lie outside the slide
    assert fetch(f"{base}/0/0/0.{suffix}")[0] == 200
