"""A pathologist's own slides in the real app (headless Debian Chromium): a data folder of slides
without cohort.csv, then uploads of a real Aperio slide, a generic TIFF, a PNG and a JPEG of real
tissue (scikit-image's IHC sample, its microns per pixel typed next to the upload), each run with
the demo model to a heatmap in the viewer, a selected patch and its explanations; and a damaged
slide that ends as a failed run with its reason. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.browser_support import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, app_server, assert_no_exception, require_browser, wait_for_run
from tests.conftest import tissue_image, write_pyramid

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MPP_FIELD = 'input[aria-label="Microns per pixel of {name}"]'  # the field belongs to the uploaded file


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory) -> Path:
    """A data folder holding slides only: no cohort.csv, no annotations."""
    data = tmp_path_factory.mktemp("own") / "slides-only"
    (data / "slides").mkdir(parents=True)
    write_pyramid(data / "slides" / "mine.tiff", tissue_image(), mpp=0.5)
    return data


UPLOADS: dict[str, Path] = {}


def session_folders() -> list[Path]:
    """Return the upload folders of browser sessions under the server's upload folder."""
    root = UPLOADS["root"]
    return [f for server in root.glob("server-*") for f in server.iterdir() if f.is_dir()] if root.is_dir() else []


@pytest.fixture(scope="module")
def server(app_cohort, own_folder, tmp_path_factory):
    """The app with the small demo cohort as its demo folder and the slides-only folder beside it."""
    require_browser()
    import shutil

    logs = tmp_path_factory.mktemp("log")
    UPLOADS["root"] = logs / "uploads"
    data = logs / "cohort"  # a private copy: the runs of this walk stay out of the shared cohort
    shutil.copytree(app_cohort, data, ignore=shutil.ignore_patterns("results.sqlite*"))
    # A closed tab's session is dropped after 2 s and its uploads released within 2 s more.
    with app_server(data, logs / "server.log", (own_folder,), session_ttl_s=2, housekeeping_s=2) as url:
        yield url


@pytest.fixture(scope="module")
def ihc_images(tmp_path_factory) -> dict[str, Path]:
    """scikit-image's immunohistochemistry sample (real tissue, 512 x 512) as PNG and JPEG."""
    from skimage import data as skdata

    folder = tmp_path_factory.mktemp("ihc")
    image = Image.fromarray(np.asarray(skdata.immunohistochemistry()))
    image.save(folder / "ihc.png")
    image.save(folder / "ihc-jpeg.jpg", quality=92)
    return {"png": folder / "ihc.png", "jpg": folder / "ihc-jpeg.jpg"}


def upload(page, path: Path, mpp: float | None) -> None:
    """Upload the file on the Review page, then type its microns per pixel in the field beside it (or clear it)."""
    page.locator('[data-testid="stMain"] input[type=file]').first.set_input_files(str(path))
    wait_for_run(page, 120)
    field = page.locator(MPP_FIELD.format(name=path.stem))
    if field.input_value() != ("" if mpp is None else f"{mpp}"):
        field.fill("" if mpp is None else f"{mpp}")
        field.press("Enter")
        wait_for_run(page)


def assert_folder_kept(page) -> None:
    """The data folder chosen in the sidebar stays chosen across pages (not back to the demo's)."""
    shown = page.evaluate(
        "() => { const box = document.querySelector('[data-testid=\"stSidebar\"] [data-testid=\"stSelectbox\"]');"
        " const input = box.querySelector('input'); return box.textContent + ' ' + (input ? input.value + ' ' + (input.getAttribute('aria-label') || '') : ''); }"
    )
    assert "slides-only" in shown or "(demo, synthetic)" not in shown, f"the data folder was reset to {shown!r}"


def nudge_threshold(page) -> None:
    """Move t one step with the keyboard: a rerun that changes nothing else."""
    page.locator('input[aria-label="Decision threshold t"]').first.press("ArrowRight")
    wait_for_run(page)


def run_model(page, name: str) -> float:
    """Click "Run the model on NAME" and wait for the viewer; return the seconds it took."""
    started = time.perf_counter()
    page.get_by_role("button", name=re.compile(f"^(Run|Retry) the model on {re.escape(name)}$")).click()
    wait_for_run(page, 240)
    page.locator('[data-testid="pathexViewer"]').wait_for(timeout=120_000)
    return time.perf_counter() - started


def test_own_slides_and_uploads_end_to_end(server, own_folder, shared_slides, ihc_images):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    timings: dict[str, float] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server, wait_until="domcontentloaded")
        page.get_by_role("heading", name="Review").wait_for(timeout=90_000)
        wait_for_run(page)
        # A folder without cohort.csv: its slide is listed with an unknown label, and Review works.
        page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
        page.get_by_role("option", name=str(own_folder)).click()
        wait_for_run(page)
        page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=30_000)
        assert_no_exception(page, "a folder of slides only")
        timings["mine"] = run_model(page, "mine")
        page.screenshot(path=str(ARTIFACTS / "own-folder-review.png"))
        page.get_by_role("link", name="Threshold tuning").first.click()
        page.get_by_text(re.compile("Threshold tuning needs slides labelled tumor or normal")).wait_for(timeout=60_000)
        assert_no_exception(page, "Threshold tuning on a folder without labels")
        page.get_by_role("link", name="Review").first.click()
        page.get_by_role("heading", name="Review").wait_for(timeout=60_000)
        wait_for_run(page)
        assert_folder_kept(page)

        cases = [
            ("small", shared_slides / "small.svs", None),  # Aperio, 0.499 um/px in its metadata
            ("boxes", shared_slides / "boxes.tiff", 0.5),  # generic TIFF whose 72 dpi is not a scan resolution
            ("ihc", ihc_images["png"], 0.5),
        ]
        for name, path, mpp in cases:
            upload(page, path, mpp)
            assert_no_exception(page, f"upload of {path.name}")
            # Before the run the upload is in the viewer already, without a heatmap.
            page.wait_for_function(
                "() => window.pathexViewer && window.pathexViewer.data && !window.pathexViewer.data.overlay && window.pathexViewer.drawn()",
                timeout=60_000,
            )
            page.locator('[data-testid="pathexViewer"]').scroll_into_view_if_needed()
            # The µm per pixel given next to the upload (or the slide's own) sets the scale bar already.
            page.get_by_test_id("pathexScale").wait_for(state="visible", timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / f"upload-{path.name}-before-run.png"))
            # The upload is the only slide without predictions: one run button, its own (not the cohort's too).
            assert not page.get_by_role("button", name=re.compile("^Run the model on (all|the slide without)")).count()
            started = time.perf_counter()
            timings[name] = run_model(page, name)
            assert_no_exception(page, f"the viewer of {path.name}")
            page.locator('[data-testid="pathexViewer"]').scroll_into_view_if_needed()
            # The heatmap and the slide's tiles drawn (what the screenshot is for).
            page.wait_for_function("() => !!(window.pathexViewer && window.pathexViewer.data && window.pathexViewer.data.overlay && window.pathexViewer.drawn())", timeout=60_000)
            page.wait_for_timeout(300)
            page.screenshot(path=str(ARTIFACTS / f"upload-{path.name}.png"))
            # A patch can be selected: the most suspicious one, shown with its probability.
            page.get_by_role("button", name="Go to the most suspicious patch").click()
            wait_for_run(page)
            page.get_by_text(re.compile(r"Patch at level-0 \(\d+, \d+\)")).wait_for(timeout=30_000)
            assert_no_exception(page, f"the selected patch of {path.name}")
            timings[name + " (to patch)"] = time.perf_counter() - started

        # Explain the patch of the last upload: every method's picture is drawn.
        page.get_by_role("button", name="Explain this patch").click()
        page.get_by_role("heading", name="Explain").first.wait_for(timeout=60_000)
        # The patch and one picture per method (six methods by default).
        page.wait_for_function("document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 7", timeout=300_000)
        wait_for_run(page, 300)
        assert_no_exception(page, "Explain of an uploaded image")
        assert_folder_kept(page)
        page.screenshot(path=str(ARTIFACTS / "upload-explain.png"), full_page=True)

        # The JPEG of the same tissue, through the sidebar back to Review.
        page.get_by_role("link", name="Review").first.click()
        page.get_by_role("heading", name="Review").wait_for(timeout=60_000)
        wait_for_run(page)
        assert_folder_kept(page)
        upload(page, ihc_images["jpg"], 0.5)
        timings["ihc-jpeg"] = run_model(page, "ihc-jpeg")
        assert_no_exception(page, "the JPEG upload")

        # A damaged slide opens, cannot be read, and ends as a failed run with its reason.
        upload(page, shared_slides / "unreadable.svs", None)
        page.get_by_text(re.compile("Cannot read unreadable")).wait_for(timeout=60_000)
        page.get_by_role("button", name="Run the model on unreadable").click()
        wait_for_run(page, 120)
        page.get_by_text(re.compile("unreadable: .+")).first.wait_for(timeout=60_000)
        # On the next rerun the table and the page say the run failed, why, and offer a retry.
        nudge_threshold(page)
        page.screenshot(path=str(ARTIFACTS / "upload-unreadable.png"), full_page=True)
        page.get_by_text(re.compile("The last run on unreadable failed: .+")).wait_for(timeout=30_000)
        page.get_by_role("button", name="Retry the model on unreadable").wait_for(timeout=30_000)
        assert_no_exception(page, "after the failed run")
        page.screenshot(path=str(ARTIFACTS / "upload-unreadable.png"), full_page=True)
        held = session_folders()
        assert held and sum(f.stat().st_size for d in held for f in d.rglob("*") if f.is_file()) > 0
        browser.close()
    # The tab is closed: once the server drops its session, its uploads leave the disk (app.housekeeping).
    for _ in range(60):
        if not session_folders():
            break
        time.sleep(0.5)
    assert not session_folders(), f"a closed session's uploads stayed on disk: {session_folders()}"
    print("upload to selected patch, s:", {k: round(v, 1) for k, v in timings.items()})
