"""The bad-input corpus of tests/test_bad_inputs.py through the app's own uploads (AppTest).

Each bad file goes where a person would give it to the app: a slide or image to the Review
page's uploader, a checkpoint to the sidebar's, a patch image to Explain's, a damaged
``results.sqlite`` in the data folder. Each must end as one ``st.error`` that says the same
sentence as the command line's ``error:`` line for the same file (paths aside: the app names
the file as uploaded), no exception box, the app still usable after it, and the data folder
(slides, store) unchanged.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, tissue_image
from tests.test_bad_inputs import (
    CHECKPOINT_CASES, EXPLAIN_IMAGE_CASES, SLIDE_CASES, STORE_CASES, run_cli, snapshot, sparse_tiff,
)

MAIN = str(ROOT / "app" / "main.py")


def sentence(text: str) -> str:
    """Return a message without its ``error:`` prefix and with every absolute path cut to its file name."""
    text = text.strip().removeprefix("error: ")
    return re.sub(r"(?:/[^\s/:']+)+/([^\s/:']+)", r"\1", text)


def cli_sentence(capsys, *argv) -> str:
    """Return the CLI's one error line for ``argv`` as a sentence (asserting exit 2 and one line)."""
    code, _, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and lines and "Traceback" not in err, err
    return sentence(lines[0])


def errors_of(at) -> list[str]:
    """Return the texts of every st.error on the page and in the sidebar."""
    return [sentence(e.value) for e in at.error]


@pytest.fixture()
def folder(app_cohort, tmp_path) -> Path:
    """A private copy of the app's small cohort (slides, annotations, test checkpoint), no results yet."""
    out = tmp_path / "cohort"
    shutil.copytree(app_cohort, out, ignore=shutil.ignore_patterns("results.sqlite*"))
    return out


def start(folder: Path, monkeypatch, tmp_path: Path) -> AppTest:
    monkeypatch.setenv("PATHEX_DEMO_DIR", str(folder))
    monkeypatch.setenv("PATHEX_NO_DEMO_TRAINING", "1")
    monkeypatch.setenv("PATHEX_UPLOAD_DIR", str(tmp_path / "uploads"))
    at = AppTest.from_file(MAIN, default_timeout=120).run()
    assert not at.exception, at.exception
    return at


def _sparse_giant_tiff(folder: Path) -> Path:
    return sparse_tiff(folder / "sparse.tiff", 100_000, 100_000)


UPLOADABLE_SLIDES = {name: case for name, case in SLIDE_CASES.items() if "link" not in name}
UPLOADABLE_SLIDES["sparse tiff declaring 100000 x 100000 px"] = (_sparse_giant_tiff, ["sparse.tiff"])


@pytest.mark.parametrize("case", list(UPLOADABLE_SLIDES))
def test_bad_slide_upload_on_review(case, folder, tmp_path, monkeypatch, capsys):
    maker, words = UPLOADABLE_SLIDES[case]
    made = tmp_path / "made"
    made.mkdir()
    path = maker(made)
    at = start(folder, monkeypatch, tmp_path)
    before = snapshot(folder)
    at.file_uploader[0].set_value((path.name, path.read_bytes(), "application/octet-stream")).run()
    assert not at.exception, at.exception
    shown = errors_of(at)
    if "sparse" in case:
        # It opens (10^10 px declared, a few kB on disk): the page says why it cannot be read,
        # and the model's run on it fails with the command line's reason, never an exception box.
        expected = cli_sentence(capsys, "predict", "--model", ROOT / "models" / "demo-tiny.pt", path, "--db", tmp_path / "r.sqlite", "--device", "cpu", "--mpp", "1")
        assert "100000 x 100000" in expected, expected
        assert any("100000 x 100000" in e for e in shown), shown
        models = at.sidebar.selectbox[1]
        models.select(next(o for o in models.options if "demo" in o.lower())).run()
        next(n for n in at.number_input if n.label.startswith("Microns per pixel of sparse")).set_value(1.0).run()
        run = next(b for b in at.button if b.label.startswith("Run the model on sparse"))
        run.click().run()
        assert not at.exception, at.exception
        assert any(e.endswith(expected) for e in errors_of(at)), (errors_of(at), expected)
        for path_ in folder.glob("results.sqlite*"):
            before.pop(path_, None)  # the failed run is recorded: the only change allowed
        after = {p: v for p, v in snapshot(folder).items() if not p.name.startswith("results.sqlite")}
        assert after == before
        return
    expected = cli_sentence(capsys, "info", path)
    assert all(w.lower() in expected.lower() for w in words), expected
    assert shown == [expected], (shown, expected)
    # The app keeps working: the cohort table is drawn, no store was written for a refused file.
    assert at.dataframe, "the cohort table vanished"
    assert snapshot(folder) == before


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_bad_checkpoint_upload_in_the_sidebar(case, folder, tmp_path, monkeypatch, capsys):
    from core.model import build_model, save_checkpoint

    writer, words = CHECKPOINT_CASES[case]
    good = tmp_path / "tiny.pt"
    save_checkpoint(good, build_model("tiny"), {"patch_size": 64, "level": 0, "mpp": None})
    bad = tmp_path / "bad.pt"
    writer(bad, good)
    expected = cli_sentence(capsys, "predict", "--model", bad, tmp_path / "none.tiff", "--db", tmp_path / "r.sqlite", "--device", "cpu")
    assert all(w.lower() in expected.lower() for w in words), expected
    at = start(folder, monkeypatch, tmp_path)
    model_before = at.sidebar.selectbox[1].value
    before = snapshot(folder)
    at.sidebar.file_uploader[0].set_value(("bad.pt", bad.read_bytes(), "application/octet-stream")).run()
    assert not at.exception, at.exception
    assert errors_of(at) == [expected]
    assert "uploads" not in at.error[0].value, at.error[0].value  # the file by its name, not the server's folders
    assert at.sidebar.selectbox[1].value == model_before, "a refused checkpoint became the model"
    assert snapshot(folder) == before


UPLOADABLE_IMAGES = {name: case for name, case in EXPLAIN_IMAGE_CASES.items() if "link" not in name and "folder" not in name}


@pytest.mark.parametrize("case", list(UPLOADABLE_IMAGES))
def test_bad_patch_image_upload_on_explain(case, folder, tmp_path, monkeypatch, capsys):
    name, maker, words = UPLOADABLE_IMAGES[case]
    path = tmp_path / name
    maker(path)
    expected = cli_sentence(
        capsys, "explain", "--model", ROOT / "models" / "demo-tiny.pt", "--image", path, "--method", "saliency",
        "--out", tmp_path / "map.npy", "--device", "cpu",
    )
    at = start(folder, monkeypatch, tmp_path)
    at.switch_page(str(ROOT / "pages" / "explain.py")).run()
    assert not at.exception, at.exception
    source = next(r for r in at.radio if any("upload" in str(o).lower() for o in r.options))
    source.set_value(next(o for o in source.options if "upload" in str(o).lower())).run()
    uploader = next(u for u in at.get("file_uploader") if "image" in u.label.lower())
    uploader.set_value((name, path.read_bytes(), "image/png")).run()
    assert not at.exception, at.exception
    shown = errors_of(at)
    assert len(shown) == 1 and shown[0].endswith(expected), (shown, expected)  # the app may name the upload first


@pytest.mark.parametrize("case", list(STORE_CASES))
def test_damaged_results_store_in_the_data_folder(case, folder, tmp_path, monkeypatch, capsys):
    db = folder / "results.sqlite"
    STORE_CASES[case](db)
    expected = cli_sentence(capsys, "export", "--db", db, "--slide", "demo_001", "--format", "qupath", "--out", tmp_path / "out.geojson")
    before = snapshot(folder)
    monkeypatch.setenv("PATHEX_DEMO_DIR", str(folder))
    monkeypatch.setenv("PATHEX_NO_DEMO_TRAINING", "1")
    monkeypatch.setenv("PATHEX_UPLOAD_DIR", str(tmp_path / "uploads"))
    for page in ("pages/review.py", "pages/threshold.py", "pages/explain.py"):
        at = AppTest.from_file(MAIN, default_timeout=120).run()
        if page != "pages/review.py":
            at.switch_page(str(ROOT / page)).run()
        assert not at.exception, (page, at.exception)
        shown = errors_of(at)
        assert expected in shown, (page, shown, expected)
    assert snapshot(folder) == before
