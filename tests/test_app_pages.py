"""The Streamlit pages on a small synthetic cohort, driven by AppTest."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT

MAIN = str(ROOT / "app" / "main.py")


@pytest.fixture(scope="module")
def app_data(app_cohort, tmp_path_factory):
    """A private copy of the app's cohort (this module writes results into it)."""
    import shutil

    folder = tmp_path_factory.mktemp("app-pages") / "cohort"
    shutil.copytree(app_cohort, folder, ignore=shutil.ignore_patterns("results.sqlite*"))
    return folder


@pytest.fixture()
def app(app_data, monkeypatch):
    monkeypatch.setenv("PATHEX_DEMO_DIR", str(app_data))
    monkeypatch.setenv("PATHEX_NO_DEMO_TRAINING", "1")
    at = AppTest.from_file(MAIN, default_timeout=120)
    return at


def choose_test_model(at):
    labels = at.sidebar.selectbox[1].options
    at.sidebar.selectbox[1].select(next(l for l in labels if "test-tiny" in l))
    return at.run()


def shown(at) -> dict:
    """What a page shows that depends on t: its metrics, dataframes, markdown and captions (label -> value)."""
    return {
        "metrics": [(m.label, m.value) for m in at.metric],
        "tables": [d.value.to_dict("list") for d in at.dataframe],
        "text": [m.value for m in at.markdown] + [c.value for c in at.caption],
    }


def move_t(at, value: float, *, fragment: bool = True):
    """Move the sidebar's t; assert only the page's view reran (a fragment: no sidebar in the run's
    output) when ``fragment``, and that it shows what a full rerun at that t shows; return the full rerun."""
    at.sidebar.slider[0].set_value(value).run()
    assert not at.exception, at.exception
    if fragment:
        assert len(at.sidebar) == 0 and at.metric, "a t move reran the whole app, not the page's view"
    fragment = shown(at)
    at.run()
    assert not at.exception, at.exception
    assert at.sidebar.slider[0].value == value
    full = shown(at)
    assert fragment["metrics"] == full["metrics"] and fragment["tables"] == full["tables"]
    assert set(fragment["text"]) <= set(full["text"])
    return at


def switch_slide(at, name: str):
    """Choose slide ``name`` on Review; assert only the slide's part of the page reran (a fragment: no
    sidebar, no upload in the run's output) and that it shows what a full rerun shows; return the full rerun."""
    at.selectbox(key="selected_slide").select(name).run()
    assert not at.exception, at.exception
    assert len(at.sidebar) == 0 and not at.get("file_uploader"), "a slide switch reran the whole app, not the slide's part"
    fragment = shown(at) | {"buttons": [b.label for b in at.button], "info": [i.value for i in at.info]}
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="selected_slide").value == name
    full = shown(at) | {"buttons": [b.label for b in at.button], "info": [i.value for i in at.info]}
    assert fragment["metrics"] == full["metrics"] and fragment["tables"] == full["tables"]
    assert fragment["info"] == full["info"] and set(fragment["buttons"]) <= set(full["buttons"])
    assert set(fragment["text"]) <= set(full["text"])
    return at


def test_review_predicts_and_decides_at_t(app):
    at = app.run()
    assert not at.exception, at.exception
    at = choose_test_model(at)
    assert at.title[0].value == "Review"
    assert at.sidebar.slider[0].value == 0.5
    # Review opens on a tumour slide (demo_001 is normal, demo_002 the first tumour slide).
    assert at.selectbox(key="selected_slide").value == "demo_002"
    run_button = next(b for b in at.button if b.label.startswith("Run the model on demo_002"))
    at = run_button.click().run()
    assert not at.exception, at.exception
    decision = next(m for m in at.metric if m.label.startswith("Decision at t"))
    score = float(next(m for m in at.metric if m.label.startswith("Slide score")).value)
    assert decision.value == ("cancer" if score >= 0.5 else "no cancer")
    # Moving t just above and below the slide score flips the decision, without recomputing; only the
    # page's view reruns (a fragment), and it shows what a full rerun shows.
    at = move_t(at, min(1.0, round(score + 0.01, 2)))
    assert next(m for m in at.metric if m.label.startswith("Decision at t")).value == "no cancer"
    at = move_t(at, max(0.0, round(score - 0.01, 2)))
    assert next(m for m in at.metric if m.label.startswith("Decision at t")).value == "cancer"
    table = at.dataframe[0].value
    assert table.columns[-1] == f"decision at t={max(0.0, round(score - 0.01, 2)):.2f}"
    assert table.set_index("slide").loc["demo_002", table.columns[-1]] == "cancer"
    assert not at.exception
    # Jumping to the most suspicious patch selects the patch whose F(I) is the slide score.
    next(b for b in at.button if b.label == "Go to the most suspicious patch").click().run()
    assert not at.exception, at.exception
    assert float(next(m for m in at.metric if m.label.startswith("F(I), probability")).value) == pytest.approx(score, abs=1e-3)
    assert at.session_state["view_focus"][0] == "demo_002"
    # A slide switch reruns only the slide's part of the page (a fragment) and shows what a full rerun
    # shows: a slide without predictions offers its run, and the predicted one comes back as it was.
    at = switch_slide(at, "demo_001")
    assert any(b.label == "Run the model on demo_001" for b in at.button) and not any(m.label.startswith("Decision at t") for m in at.metric)
    at = switch_slide(at, "demo_002")
    assert float(next(m for m in at.metric if m.label.startswith("Slide score")).value) == pytest.approx(score, abs=1e-3)
    assert at.dataframe[0].value.set_index("slide").loc["demo_002", "status"] == "predicted"


def test_review_opens_on_a_tumour_slide_with_predictions_first():
    import pandas as pd

    from app.context import default_slide

    table = pd.DataFrame({
        "slide": ["n1", "t1", "t2", "t3", "n2"], "label": ["normal", "tumor", "tumor", "", "normal"],
        "path": ["/a", "/b", "/c", "/d", "/e"],
    })
    done = {"status": "complete"}
    assert default_slide(table, {}) == "t1"  # the first tumour slide
    assert default_slide(table, {"t2": done, "n1": done, "t1": {"status": "running"}}) == "t2"  # a predicted tumour slide first
    no_tumour = table.assign(label=["normal", "normal", "", "", "normal"])
    assert default_slide(no_tumour, {"t3": done}) == "t3"  # no tumour slide: a predicted one
    assert default_slide(no_tumour, {}) == "n1"
    assert default_slide(table.assign(path=["", "", "/c", "", ""]), {}) == "t2"  # only slides with a file
    assert default_slide(table.assign(path=""), {}) is None


def test_review_says_the_demo_slides_are_being_made_on_first_start(tmp_path, monkeypatch):
    """An empty demo folder whose cohort is being written: Review says so (with the count), not "no slides"."""
    import threading

    from app import demo
    from core.demo import GENERATING

    release = threading.Event()

    def slow_cohort(folder, progress=None, on_slide=None, **_):  # the generator, stopped before its first slide
        (folder / GENERATING).write_text("")
        progress(0, 24)
        release.wait(60)

    folder = tmp_path / "demo"
    monkeypatch.setattr(demo, "make_demo_cohort", slow_cohort)
    monkeypatch.setenv("PATHEX_DEMO_DIR", str(folder))
    monkeypatch.setenv("PATHEX_NO_DEMO_TRAINING", "1")
    try:
        at = AppTest.from_file(MAIN, default_timeout=60)
        at.run()
        for _ in range(50):  # the background thread writes its marker
            if (folder / GENERATING).exists():
                break
            threading.Event().wait(0.1)
        at.run()
        assert not at.exception, at.exception
        infos = [i.value for i in at.info]
        assert any("The synthetic demo slides are being made" in i and "0 of 24 written so far" in i for i in infos), infos
        assert not any("holds no slides" in i for i in infos), infos
    finally:
        release.set()


@pytest.fixture(scope="module")
def predicted(app_data):
    """Predictions of the test model for every slide of the app's cohort, in its store."""
    from core.inference import predict_slide
    from core.model import load_checkpoint
    from core.store import ResultStore
    from core.tiling import TilingParams

    model, meta = load_checkpoint(app_data / "models" / "test-tiny.pt")
    with ResultStore(app_data / "results.sqlite") as store:
        for path in sorted((app_data / "slides").glob("*.tiff")):
            predict_slide(path, model, store, TilingParams(level=1, patch_size=64), model_id=meta["model_id"], metadata=meta, device="cpu")
    return app_data


def metric(at, prefix):
    return next(m for m in at.metric if m.label.startswith(prefix)).value


def test_threshold_page_moves_markers_with_t(app, predicted):
    at = choose_test_model(app.run())
    at.switch_page(str(ROOT / "pages" / "threshold.py")).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Threshold tuning"
    assert [h.value for h in at.header] == [
        "1. Can we detect cancer somewhere in the slide?", "2. Can we detect cancer in patches?", "3. Do we detect the individual tumors?"
    ]
    at = move_t(at, 0.0, fragment=False)  # the whole page reruns here (see pages/threshold.py)
    found_low = metric(at, "Tumors found at t")
    assert metric(at, "Slide accuracy at t = 0.00") == "50.0%"  # every slide called tumor: 2 of 4 right
    low = charts(at)
    # Six charts (app.charts), each drawn with its t-free figure and what t adds: at t = 0 every
    # slide and patch is called tumour, so the ROC points sit at (1, 1) and the matrices hold no negatives.
    assert sorted(low) == ["froc", "patch_confusion", "patch_pr", "patch_roc", "slide_confusion", "slide_roc"]
    assert [(p["x"], p["y"], p["name"]) for p in low["slide_roc"]["extra"]] == [([1.0], [1.0], "t = 0.00")]
    assert low["patch_roc"]["extra"][0]["x"] == [1.0] and low["patch_roc"]["extra"][0]["y"] == [1.0]
    assert low["slide_confusion"]["extra"][0]["z"] == [[0, 2], [0, 2]]
    assert low["slide_confusion"]["layout"]["title"]["text"] == "Slides at t = 0.00"
    at = move_t(at, 1.0, fragment=False)
    assert not at.exception
    high = charts(at)
    # A t move changes what t adds, not the figures the browser keeps (same ids, same base traces).
    for name in low:
        assert high[name]["id"] == low[name]["id"] and high[name]["base"] == low[name]["base"], name
    assert high["slide_roc"]["extra"][0]["name"] == "t = 1.00" and high["slide_roc"]["extra"][0]["x"] == [0.0]
    assert sum(map(sum, high["slide_confusion"]["extra"][0]["z"])) == 4 and high["slide_confusion"]["extra"][0]["z"][0][1] == 0
    found_high, total = metric(at, "Tumors found at t").split(" / ")
    assert found_low.split(" / ")[0] == total and int(found_high) < int(total)
    assert metric(at, "AvgFP") == "0.00"
    at.radio[0].set_value("Camelyon16 (official evaluation)").run()
    assert not at.exception, at.exception
    assert "Camelyon16 mode" in " ".join(m.value for m in at.markdown)
    # The app measures each slide at its own resolution (the demo's 0.5 um/px) and says so.
    assert any("each slide's own resolution (0.5 µm/px)" in c.value for c in at.caption)
    froc = charts(at)["froc"]
    assert froc["layout"]["title"]["text"] == "FROC (Camelyon16 mode, official)" and froc["id"] != high["froc"]["id"]
    assert "per slide, all slides" in froc["layout"]["xaxis"]["title"]["text"]


def charts(at) -> dict[str, dict]:
    """The data of the page's app.charts elements, by chart name (their key's end)."""
    found = {}
    for element in at.get("bidi_component"):
        data = json.loads(element.proto.json)
        if "base" in data and "extra" in data:
            found[data["id"].rsplit("-", 1)[-1]] = data
    return found


def test_training_page_shows_a_run(app, app_data):
    run = app_data / "runs" / "test-run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.csv").write_text(
        "epoch,train_loss,val_loss,val_auc,lr,seconds\n1,0.69,0.60,0.71,5e-05,10.0\n2,0.50,0.45,0.88,5e-05,9.5\n3,0.41,0.47,0.86,2.5e-05,9.7\n"
    )
    (run / "summary.json").write_text('{"command": "python -m core train --cohort c.csv --arch tiny --out runs/test-run", "test_slide_auc": 0.9}')
    at = app.run()
    at.switch_page(str(ROOT / "pages" / "training.py")).run()
    assert not at.exception, at.exception
    runs = at.selectbox[0]
    runs.select(next(o for o in runs.options if o.startswith("test-run"))).run()  # the shipped demo run comes first
    assert metric(at, "Epochs") == "3"
    assert metric(at, "Best validation AUC") == "0.880"
    assert metric(at, "Test slide AUC") == "0.900"
    assert at.code[0].value.startswith("python -m core train")


def test_training_page_shows_the_shipped_demo_run_out_of_the_box(app):
    """A fresh clone has no runs/: the demo model's own run (models/demo-tiny-run) is shown, labelled demo."""
    import json

    from core.training.demo import DEMO_SHIPPED_RUN

    at = app.run()
    at.switch_page(str(ROOT / "pages" / "training.py")).run()
    assert not at.exception, at.exception
    assert at.selectbox[0].value == DEMO_SHIPPED_RUN
    assert "synthetic" in at.selectbox[0].format_func(at.selectbox[0].value)
    assert any("Demo run" in c.value and "synthetic" in c.value for c in at.caption)
    shipped = json.loads((DEMO_SHIPPED_RUN / "evaluation.json").read_text())
    assert metric(at, "Slide AUC") == f"{shipped['slide_auc']:.3f}"
    assert metric(at, "FROC score") == f"{shipped['froc_score']:.3f}"
    assert any(f"({shipped['slides']} slides of the val and test splits of the demo cohorts of seeds 0, 1, 2," in m.value for m in at.markdown)
    assert metric(at, "Epochs") == str(len((DEMO_SHIPPED_RUN / "metrics.csv").read_text().strip().splitlines()) - 1)
    assert at.code[0].value == "python -m core train --preset demo"


def select_best_patch(at):
    at.radio(key="patch_source").set_value("most suspicious patch of a slide").run()
    return at


def test_explain_page_shows_every_method(app, predicted):
    at = choose_test_model(app.run())
    at.switch_page(str(ROOT / "pages" / "explain.py")).run()
    at = select_best_patch(at)
    assert not at.exception, at.exception
    captions = " ".join(c.value for c in at.caption) + " ".join(m.value for m in at.markdown)
    for title in ("Saliency", "SmoothGrad", "Grad-CAM", "Occlusion", "LIME", "Integrated gradients"):
        assert title in captions, title
    assert "surrogate R²" in captions


def test_network_and_basics_pages(app, predicted):
    at = choose_test_model(app.run())
    at.switch_page(str(ROOT / "pages" / "network.py")).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Network"
    at.button[0].click().run()  # gradient ascent with the defaults
    assert not at.exception, at.exception
    at.switch_page(str(ROOT / "pages" / "cnn_basics.py")).run()
    at = select_best_patch(at)
    assert not at.exception, at.exception
    assert [h.value for h in at.header] == ["Convolution", "Pooling"]
    assert any("max pooling 4 × 4" in c.value for c in at.caption)


def test_a_folder_slide_without_resolution_gets_its_mpp_on_review(app, tmp_path, monkeypatch):
    """A PNG in a data folder (no cohort.csv): Review asks for its microns per pixel, then the model runs on it."""
    import numpy as np
    from PIL import Image
    from skimage import data as skdata

    folder = tmp_path / "pngs"
    (folder / "slides").mkdir(parents=True)
    Image.fromarray(np.asarray(skdata.immunohistochemistry())).save(folder / "slides" / "ihc.png")
    monkeypatch.setenv("PATHEX_DATA_DIRS", str(folder))
    at = app.run()
    at.sidebar.selectbox[0].select(str(folder)).run()
    assert not at.exception, at.exception
    field = next(n for n in at.number_input if n.label == "Microns per pixel of ihc")
    assert field.value is None
    next(b for b in at.button if b.label == "Run the model on ihc").click().run()
    assert any("ihc has no resolution metadata" in e.value for e in at.error)  # the run failed, saying why
    field = next(n for n in at.number_input if n.label == "Microns per pixel of ihc")
    field.set_value(0.5).run()
    # A given mpp makes runs of their own params: the failed run was for the slide without one.
    next(b for b in at.button if b.label == "Run the model on ihc").click().run()
    assert not at.exception, at.exception
    assert next(m for m in at.metric if m.label.startswith("Patches with F(I)")).value.endswith("/ 3")  # 512 px at 0.5 um/px: 2 x 2 patches of 256 px, 3 with tissue


def test_review_keeps_results_stored_before_the_checkpoint_recorded_its_resolution(app, app_data, tmp_path, monkeypatch):
    """A store with the demo model's level-based run (as written before it recorded 1 um/px): Review shows it as predicted."""
    import shutil

    from core.inference import predict_slide
    from core.model import load_checkpoint
    from core.paths import REPO_ROOT
    from core.store import ResultStore
    from core.tiling import TilingParams

    folder = tmp_path / "old"
    shutil.copytree(app_data, folder, ignore=shutil.ignore_patterns("results.sqlite*"))
    model, meta = load_checkpoint(REPO_ROOT / "models" / "demo-tiny.pt")
    with ResultStore(folder / "results.sqlite") as store:
        old = predict_slide(folder / "slides" / "demo_002.tiff", model, store, TilingParams(level=1, patch_size=128),
                            model_id=meta["model_id"], metadata=meta, device="cpu")
    monkeypatch.setenv("PATHEX_DEMO_DIR", str(folder))
    at = app.run()
    assert not at.exception, at.exception
    at.selectbox(key="selected_slide").select("demo_002").run()
    assert not at.exception, at.exception
    assert not any(b.label.startswith("Run the model on demo_002") for b in at.button)  # not recomputed
    assert float(next(m for m in at.metric if m.label.startswith("Slide score")).value) == pytest.approx(old.predictions.prob.max(), abs=1e-3)
    with ResultStore(folder / "results.sqlite") as store:
        [run] = store.runs()
        assert run.id == old.run.id and run.params["tiling"]["mpp"] == 1.0  # the same run, re-keyed


def test_a_link_reopens_slide_t_patch_and_view_and_review_writes_its_place(app, predicted):
    from core.model import load_checkpoint
    from core.store import ResultStore

    _, meta = load_checkpoint(predicted / "models" / "test-tiny.pt")
    with ResultStore(predicted / "results.sqlite") as store:
        [run] = [r for r in store.runs(model_id=meta["model_id"], status="complete") if store.slide(r.slide_id).name == "demo_002"]
        rows = store.read_predictions(run.id)
    px, py, prob = int(rows.x[len(rows) // 2]), int(rows.y[len(rows) // 2]), float(rows.prob[len(rows) // 2])
    app.query_params.update({"slide": "demo_002", "t": "0.37", "px": str(px), "py": str(py), "x": "300", "y": "250", "zoom": "0.5"})
    at = choose_test_model(app.run())
    assert not at.exception, at.exception
    assert at.sidebar.slider[0].value == 0.37
    assert at.selectbox(key="selected_slide").value == "demo_002"
    assert metric(at, "Decision at t = 0.37")
    picked = at.session_state["selected_patch"]
    assert (picked["slide"], picked["x"], picked["y"]) == ("demo_002", px, py)
    assert float(metric(at, "F(I), probability")) == pytest.approx(prob, abs=1e-3)
    assert at.session_state["view_focus"][0] == "demo_002" and at.session_state["view_focus"][4] == 0.5
    # The page writes its place back: the URL names the slide, t and the patch.
    assert {k: at.query_params[k] for k in ("slide", "t", "px", "py")} in (
        {"slide": "demo_002", "t": "0.37", "px": str(px), "py": str(py)},
        {"slide": ["demo_002"], "t": ["0.37"], "px": [str(px)], "py": [str(py)]},
    )
    # A link that does not parse changes nothing and breaks nothing.
    at2 = AppTest.from_file(MAIN, default_timeout=120)
    at2.query_params.update({"slide": "no-such-slide", "t": "nan", "px": "x", "zoom": "-1"})
    at2 = choose_test_model(at2.run())
    assert not at2.exception, at2.exception
    assert at2.sidebar.slider[0].value == 0.5


def test_cached_grid_and_predictions_equal_a_fresh_read(predicted):
    """The per-run caches (app.context) give what a fresh SQLite read and core.heatmap compute."""
    import numpy as np

    from app import context
    from core.heatmap import probability_grid
    from core.store import ResultStore

    db = str(predicted / "results.sqlite")
    with ResultStore(db) as store:
        for run in store.runs(status="complete"):
            fresh = store.read_predictions(run.id)
            shared = context._predictions(db, run.id, run.n_done, None)
            assert np.array_equal(shared.x, fresh.x) and np.array_equal(shared.prob, fresh.prob)
            grid = context._grid(db, run.id, run.n_done)
            direct = probability_grid(fresh.x, fresh.y, fresh.prob, int(fresh.width[0]))
            assert np.array_equal(grid.values, direct.values, equal_nan=True)
            assert (grid.x0, grid.y0, grid.step0) == (direct.x0, direct.y0, direct.step0)


def test_review_table_and_caption(app, predicted):
    at = choose_test_model(app.run())
    table = at.dataframe[0].value
    assert "None" not in table.astype(str).to_numpy().ravel().tolist()
    assert set(table["max F(I)"]) - {""} and all(v == "" or 0 <= float(v) <= 1 for v in table["max F(I)"])
    at.sidebar.selectbox[1].select(next(o for o in at.sidebar.selectbox[1].options if o.startswith("Demo model"))).run()
    model_line = at.caption[0].value
    assert model_line.lower().count("synthetic data") == 1, model_line


def test_threshold_figures_at_t_from_their_cached_part_equal_cores_figures():
    """Threshold tuning builds each figure once per evaluation and adds what t changes: the same
    figure as core's builder draws at t (points at t, AvgFP 0 on the FROC's log axis, counts)."""
    import base64
    import json

    import numpy as np
    import plotly.graph_objects as go
    import plotly.io as pio

    from app.figures import (
        confusion_cells,
        confusion_figure,
        froc_figure,
        point_at_t,
        pr_figure,
        roc_figure,
    )

    # As app/charts/charts.js composes a chart: the base's traces then the extra ones, the base's
    # layout with what the page overrides.
    def with_point_at_t(base: dict, point, threshold: float, *, log_x: bool = False) -> go.Figure:
        return go.Figure({"data": list(base["data"]) + point_at_t(point, threshold, log_x=log_x), "layout": base["layout"]}, _validate=False)

    def confusion_like(base: dict, matrix, *, title: str) -> go.Figure:
        layout = {**base["layout"], "title": {**base["layout"].get("title", {}), "text": title}}
        return go.Figure({"data": [confusion_cells(base, matrix)], "layout": layout}, _validate=False)

    def plain(value):  # plotly's typed arrays ({"dtype", "bdata", "shape"}) as lists: numbers compare, not encodings
        if isinstance(value, dict) and "bdata" in value:
            array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
            shape = [int(n) for n in str(value.get("shape", len(array))).split(",")]
            return array.reshape(shape).tolist()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    def same(a, b) -> bool:
        return plain(json.loads(pio.to_json(a, validate=False))) == plain(json.loads(pio.to_json(b, validate=False)))

    rng = np.random.default_rng(0)
    fpr = np.sort(rng.random(5000))
    tpr = np.sqrt(fpr)
    for point in [(0.2, 0.6), (None, 0.5), None]:
        assert same(roc_figure(fpr, tpr, point, title="Patch ROC", auc=0.8, threshold=0.37),
                    with_point_at_t(roc_figure(fpr, tpr, None, title="Patch ROC", auc=0.8).to_dict(), point, 0.37))
    assert same(pr_figure(tpr[::-1], fpr, (0.4, 0.7), ap=0.61, threshold=0.91),
                with_point_at_t(pr_figure(tpr[::-1], fpr, None, ap=0.61).to_dict(), (0.4, 0.7), 0.91))
    avg_fp, sens = np.r_[0.0, np.cumsum(rng.random(300))], np.linspace(0, 1, 301)
    froc = {"score": 0.5, "targets": (0.25, 0.5, 1, 2, 4, 8), "target_sensitivity": np.linspace(0.1, 0.6, 6), "title": "FROC"}
    for point in [(0.0, 0.1), (3.2, 0.8)]:  # AvgFP 0 is drawn at 1e-3 on the log axis
        assert same(froc_figure(avg_fp, sens, point, threshold=0.05, **froc), with_point_at_t(froc_figure(avg_fp, sens, None, **froc).to_dict(), point, 0.05, log_x=True))
    base = confusion_figure([[0, 0], [0, 0]], title="").to_dict()
    for matrix in ([[3, 0], [1, 2]], np.array([[91_234, 1_002], [17, 4_321]])):
        assert same(confusion_figure(matrix, title="Patches at t = 0.42"), confusion_like(base, matrix, title="Patches at t = 0.42"))
    # What the page sends its charts (app.charts) is plain JSON: no numpy value reaches the component.
    json.dumps([point_at_t((np.float64(0.2), np.float32(0.6)), 0.37), confusion_cells(base, np.array([[1, 2], [3, 4]]))], allow_nan=False)
