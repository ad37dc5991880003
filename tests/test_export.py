"""Exports: QuPath GeoJSON, ASAP XML, Camelyon16 CSVs, pictures, figures, the cohort report, the CLI."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import shapely
from PIL import Image
from shapely.geometry import MultiPolygon, Polygon

from core import cli
from core.annotations import load_tumors, read_annotations, read_asap_xml, tumor_region
from core.cohort import load_cohort_tumors, read_cohort
from core.errors import StoreError
from core.evaluation import evaluate_cohort
from core.evaluation.camelyon16 import detections as _detections
from core.export import (
    QUESTIONS,
    ExportError,
    build_asap_xml,
    build_camelyon_csv,
    build_camelyon_slides_csv,
    build_cohort_report,
    build_qupath_geojson,
    evaluation_figures,
    figure_bytes,
    load_slide_export,
    merge_regions,
    qupath_geojson_bytes,
    render_explanations,
    render_explanations_png,
    render_overview,
    render_slide_overview_png,
    select_detections,
    static_engine,
    write_asap_regions,
    write_camelyon_csv,
    write_figure,
    write_qupath_geojson,
)
from core.slide_io import slide_info
from core.store import ResultStore

MODEL = "synthetic-v1"
SIDE = 128  # level-0 patch side of the synthetic predictions


def patches(x, y, prob, side=SIDE, slide="s"):
    x = np.asarray(x, dtype=np.int64)
    return SimpleNamespace(
        slide=slide, x=x, y=np.asarray(y, dtype=np.int64), width=np.full(x.shape, side, np.int64),
        height=np.full(x.shape, side, np.int64), prob=np.asarray(prob, dtype=np.float64),
    )


RING = [[0.9, 0.9, 0.9], [0.9, 0.2, 0.9], [0.9, 0.9, 0.9], [0.1, 0.1, 0.1], [0.6, 0.1, 0.1]]


def grid_predictions(cells: list[list[float]], side: int = SIDE, stride: int | None = None):
    """Patches on a grid: cells[r][c] is the probability of the patch at (c * stride, r * stride)."""
    stride = stride or side
    values = np.asarray(cells, dtype=np.float64)
    rows, cols = np.indices(values.shape)
    return patches(cols.ravel() * stride, rows.ravel() * stride, values.ravel(), side)


def squares_union(pred, t):
    m = pred.prob >= t
    return shapely.union_all(shapely.box(pred.x[m], pred.y[m], pred.x[m] + pred.width[m], pred.y[m] + pred.height[m]))


# --------------------------------------------------------------------------- a store


@pytest.fixture(scope="module")
def export_data(demo_cohort, tmp_path_factory):
    """A store with synthetic predictions on the 4 demo slides: a grid of 128 px patches,
    high F(I) on patches touching a tumor, low elsewhere, one false positive per normal slide."""
    folder = tmp_path_factory.mktemp("export")
    db = folder / "results.sqlite"
    rng = np.random.default_rng(7)
    cohort = read_cohort(demo_cohort / "cohort.csv")
    with ResultStore(db) as store:
        store.register_model(MODEL, arch="tiny", metadata={"label": "synthetic test predictions"})
        for name, label in zip(cohort.slides, cohort.labels):
            path = demo_cohort / "slides" / f"{name}.tiff"
            info = slide_info(path)
            record = store.register_slide(path, width=info.dimensions[0], height=info.dimensions[1], mpp=info.mpp)
            cols, rows = info.dimensions[0] // SIDE, info.dimensions[1] // SIDE
            gy, gx = np.indices((rows, cols))
            x, y = gx.ravel() * SIDE, gy.ravel() * SIDE
            prob = rng.uniform(0.0, 0.45, x.size)
            tumors = load_tumors(demo_cohort / "annotations" / f"{name}.geojson")
            if tumors:
                region = shapely.union_all(tumors)
                hit = shapely.intersects(shapely.box(x, y, x + SIDE, y + SIDE), region)
                prob[hit] = rng.uniform(0.6, 1.0, int(hit.sum()))
            else:
                prob[x.size // 2] = 0.7  # a false positive
            run = store.get_or_create_run(record.id, MODEL, {"tiling": {"level": 0, "patch_size": SIDE}})
            store.set_total(run.id, x.size)
            store.add_predictions(run.id, x, y, SIDE, SIDE, prob)
            store.finish_run(run.id)
    return SimpleNamespace(db=db, cohort=demo_cohort, folder=folder, slides=cohort.slides, labels=cohort.labels)


@pytest.fixture(scope="module")
def tumor_slide(export_data):
    name = next(s for s, lab in zip(export_data.slides, export_data.labels) if lab == "tumor")
    with ResultStore(export_data.db) as store:
        return load_slide_export(store, name)


# --------------------------------------------------------------------------- regions


def test_regions_are_the_union_of_patches_at_t(tumor_slide):
    pred = tumor_slide.predictions
    regions = merge_regions(pred, 0.5)
    expected = squares_union(pred, 0.5)
    got = shapely.union_all([r.geometry for r in regions])
    assert got.symmetric_difference(expected).area == 0
    assert sum(r.n_patches for r in regions) == int((pred.prob >= 0.5).sum())
    assert [r.max_prob for r in regions] == sorted((r.max_prob for r in regions), reverse=True)
    assert regions[0].max_prob == pred.prob.max()
    for r in regions:
        assert np.all(pred.prob[r.patch_index] >= 0.5) and pred.prob[r.patch_index].max() == r.max_prob


def test_regions_connectivity_holes_and_overlap():
    # Diagonal neighbours form one region (8-connectivity); a ring keeps its hole.
    diag = merge_regions(grid_predictions([[0.9, 0.1], [0.1, 0.8]]), 0.5)
    assert len(diag) == 1 and isinstance(diag[0].geometry, MultiPolygon) and diag[0].n_patches == 2
    ring = merge_regions(grid_predictions(RING), 0.5)
    assert len(ring) == 2
    big = ring[0].geometry
    assert isinstance(big, Polygon) and len(big.interiors) == 1 and big.area == 8 * SIDE**2
    assert len(big.exterior.coords) == 5  # collinear vertices removed
    assert ring[1].n_patches == 1 and ring[1].max_prob == 0.6
    # Overlapping patches (stride < side) go through the general union.
    rng = np.random.default_rng(1)
    over = grid_predictions(rng.uniform(0, 1, (6, 7)).tolist(), side=SIDE, stride=SIDE // 2)
    got = shapely.union_all([r.geometry for r in merge_regions(over, 0.5)])
    assert got.symmetric_difference(squares_union(over, 0.5)).area == 0
    assert merge_regions(over, 1.0) == []
    # A repeated patch (not a coverage) is merged by the general union too.
    twice = patches([0, 0, SIDE], [0, 0, 0], [0.9, 0.8, 0.7])
    (only,) = merge_regions(twice, 0.5)
    assert only.area_px == 2 * SIDE**2 and only.n_patches == 3
    with pytest.raises(ExportError, match="threshold"):
        merge_regions(over, 1.5)


# --------------------------------------------------------------------------- QuPath


def test_qupath_geojson_schema_and_coordinates(tumor_slide):
    pred = tumor_slide.predictions
    t = 0.5
    doc = json.loads(build_qupath_geojson(pred, t, properties={"slide": tumor_slide.slide.name}))
    assert doc["type"] == "FeatureCollection" and doc["properties"] == {"slide": tumor_slide.slide.name}
    regions = merge_regions(pred, t)
    features = doc["features"]
    assert len(features) == len(pred) + len(regions)
    tiles, annotations = features[: len(pred)], features[len(pred):]
    for i, feature in enumerate(tiles):
        props = feature["properties"]
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        assert props["objectType"] == "tile" and props["isLocked"] is False
        tumor = pred.prob[i] >= t
        assert props["classification"]["name"] == ("Tumor" if tumor else "Normal")
        color = props["classification"]["color"]
        assert len(color) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in color)
        assert props["measurements"] == {"tumor_prob": pred.prob[i]}  # exact float64
        x0, y0, x1, y1 = int(pred.x[i]), int(pred.y[i]), int(pred.x[i] + pred.width[i]), int(pred.y[i] + pred.height[i])
        assert feature["geometry"]["coordinates"] == [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]
    colors = {f["properties"]["classification"]["name"]: tuple(f["properties"]["classification"]["color"]) for f in tiles}
    assert colors["Tumor"] != colors["Normal"]
    union = shapely.union_all([shapely.geometry.shape(f["geometry"]) for f in annotations])
    assert union.symmetric_difference(squares_union(pred, t)).area == 0
    for feature, region in zip(annotations, regions):
        props = feature["properties"]
        assert props["objectType"] == "annotation" and props["classification"]["name"] == "Tumor"
        assert props["measurements"] == {"area_px": region.area_px, "max_prob": region.max_prob, "n_patches": region.n_patches}

    detections = json.loads(build_qupath_geojson(pred, t, object_type="detection", regions=False))["features"]
    assert len(detections) == len(pred) and {f["properties"]["objectType"] for f in detections} == {"detection"}
    with pytest.raises(ExportError, match="object type"):
        build_qupath_geojson(pred, t, object_type="cell")


def test_qupath_gzip_equals_plain_and_reads_back(tumor_slide, tmp_path):
    pred = tumor_slide.predictions
    plain = write_qupath_geojson(tmp_path / "slide.geojson", pred, 0.5)
    packed = write_qupath_geojson(tmp_path / "slide.geojson.gz", pred, 0.5)
    with gzip.open(packed, "rb") as handle:
        assert handle.read() == plain.read_bytes()
    assert packed.stat().st_size < plain.stat().st_size / 4
    assert gzip.decompress(qupath_geojson_bytes(pred, 0.5, compress=True)) == plain.read_bytes()
    # Our own annotation reader opens both (QuPath's convention).
    back = read_annotations(packed)
    assert len(back) == len(pred) + len(merge_regions(pred, 0.5))
    assert {a.label for a in back} == {"Tumor", "Normal"}


# --------------------------------------------------------------------------- ASAP


@pytest.mark.parametrize("case", ["slide", "ring"])
def test_asap_xml_round_trip(case, tumor_slide, tmp_path):
    pred = tumor_slide.predictions if case == "slide" else grid_predictions(RING)
    path = write_asap_regions(tmp_path / "regions.xml", pred, 0.5)
    assert path.read_text() == build_asap_xml(pred, 0.5)
    back = read_asap_xml(path)
    assert back and {a.label for a in back if a.role == "tumor"} == {"Tumor"}
    expected = squares_union(pred, 0.5)
    region = tumor_region(back)
    assert abs(region.area - expected.area) <= 1e-6 * expected.area
    assert region.symmetric_difference(expected).area <= 1e-6 * expected.area


def test_asap_xml_without_regions_is_valid(tmp_path):
    path = write_asap_regions(tmp_path / "none.xml", grid_predictions([[0.1, 0.2]]), 0.5)
    assert read_asap_xml(path) == []


# --------------------------------------------------------------------------- Camelyon16


def test_camelyon_csv_matches_the_evaluation_detections(export_data, tmp_path):
    with ResultStore(export_data.db) as store:
        predictions = store.predictions_for_model(MODEL)
        mpp = {s.name: s.mpp for s in store.slides()}
    total = 0
    for name, pred in predictions.items():
        rows = list(csv.reader(io.StringIO(build_camelyon_csv(pred))))
        keep = _detections(pred.x, pred.y, pred.width, pred.height, pred.prob, mpp[name], None)  # the evaluation's own
        assert len(rows) == keep.size > 0
        probs = np.array([float(r[0]) for r in rows])
        assert np.array_equal(probs, pred.prob[keep]) and np.all(np.diff(probs) <= 0)
        assert [(int(r[1]), int(r[2])) for r in rows] == list(zip((pred.x + pred.width // 2)[keep].tolist(), (pred.y + pred.height // 2)[keep].tolist()))
        total += keep.size
        # With a radius in um: um -> px by the slide's mpp, as the evaluation does.
        det = select_detections(pred, mpp=mpp[name], nms_radius_um=200.0)
        assert np.array_equal(det.index, _detections(pred.x, pred.y, pred.width, pred.height, pred.prob, mpp[name], 200.0))
    tumors = load_cohort_tumors(export_data.cohort / "annotations", export_data.slides)
    result = evaluate_cohort(predictions, dict(zip(export_data.slides, export_data.labels)), tumors, mode="camelyon16", mpp=mpp)
    assert result.camelyon.n_detections == total
    header = build_camelyon_csv(next(iter(predictions.values())), header=True).splitlines()[0]
    assert header == "prob,x,y"
    path = write_camelyon_csv(tmp_path / "d.csv", next(iter(predictions.values())))
    assert path.read_text().count("\n") == len(select_detections(next(iter(predictions.values()))))
    with pytest.raises(ExportError, match="mpp"):
        select_detections(next(iter(predictions.values())), nms_radius_um=100.0)


def test_camelyon_slides_csv(export_data):
    with ResultStore(export_data.db) as store:
        predictions = store.predictions_for_model(MODEL)
    rows = list(csv.DictReader(io.StringIO(build_camelyon_slides_csv(predictions))))
    assert [r["name"] for r in rows] == list(predictions)
    for row in rows:
        assert float(row["prob"]) == predictions[row["name"]].prob.max()
    empty = build_camelyon_slides_csv({"blank": patches([], [], [])})
    assert empty.splitlines() == ["name,prob", "blank,0.0"]


# --------------------------------------------------------------------------- pictures and figures


def test_overview_png_has_the_width_and_is_not_blank(tumor_slide):
    for width in (300, 777):
        image = Image.open(io.BytesIO(render_slide_overview_png(tumor_slide, 0.5, width=width)))
        assert image.format == "PNG" and image.size[0] == width
        pixels = np.asarray(image.convert("RGB"))
        assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200
    # The heatmap band differs with the threshold's outline and the colour map.
    a = render_overview(None, tumor_slide.dimensions, tumor_slide.predictions, 0.5, width=400, title="x")
    b = render_overview(None, tumor_slide.dimensions, tumor_slide.predictions, 0.5, width=400, title="x", colormap="viridis")
    assert a.shape == b.shape and a.shape[1] == 400 and not np.array_equal(a, b)
    with pytest.raises(ExportError, match="width"):
        render_slide_overview_png(tumor_slide, 0.5, width=10)
    with pytest.raises(ExportError, match="colour map"):
        render_overview(None, (100, 100), tumor_slide.predictions, 0.5, colormap="nope")


def test_overview_draws_transparent_low_probabilities_as_the_viewer_does():
    """fade=True (the viewer's "Transparent low F(I)"): patches with F(I) <= FADE_FROM leave the slide
    untouched, in the picture and in the colour bar; without it they are tinted."""
    from types import SimpleNamespace

    from matplotlib import colormaps

    from core.heatmap import FADE_FROM

    side, n = 64, 16
    xs, ys = np.meshgrid(np.arange(n) * side, np.arange(n) * side)
    low = SimpleNamespace(x=xs.ravel(), y=ys.ravel(), width=np.full(n * n, side), height=np.full(n * n, side),
                          prob=np.full(n * n, FADE_FROM / 2))
    dims = (n * side, n * side)
    # A patch of F(I) 0.1 at opacity 0.5 over white, as render_overlay blends it (its LUT entry, alpha 128/255).
    rgb = (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)[int(FADE_FROM / 2 * 255 + 0.5)]
    alpha = round(255 * 0.5) / 255
    tinted = np.clip(255 * (1 - alpha) + rgb.astype(np.float32) * alpha + 0.5, 0, 255).astype(np.uint8)

    def tinted_pixels(picture):
        return int(np.all(picture == tinted, axis=-1).sum())

    plain = render_overview(None, dims, low, 0.5, width=400, title="x", colormap="viridis", opacity=0.5)
    faded = render_overview(None, dims, low, 0.5, width=400, title="x", colormap="viridis", opacity=0.5, fade=True)
    assert plain.shape == faded.shape
    assert tinted_pixels(plain) > 0.8 * 400 * 400, "without fade the low patches are not tinted"
    assert tinted_pixels(faded) == 0, "with fade a low patch was tinted"
    # The picture under the low patches stays the slide (white here): as many white pixels as the picture has, and more.
    assert np.all(faded == 255, axis=-1).sum() > np.all(plain == 255, axis=-1).sum() + 0.8 * 400 * 400
    # The colour bar's low end is white under fade (the viridis low end otherwise): the two pictures differ there too.
    bar_rows = slice(faded.shape[0] - 60, faded.shape[0])
    dark = np.array(rgb, dtype=int)
    assert (np.abs(plain[bar_rows].astype(int) - dark).sum(-1) < 30).sum() > (np.abs(faded[bar_rows].astype(int) - dark).sum(-1) < 30).sum()


def test_explanations_side_by_side():
    rng = np.random.default_rng(0)
    patch = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    overlays = {"saliency": np.zeros_like(patch), "gradcam": np.full_like(patch, 200)}
    picture = render_explanations(patch, overlays, panel=128, title="demo_001 (512, 256)", probability=0.93)
    assert picture.shape[1] == 3 * 128 and picture.dtype == np.uint8
    assert Image.open(io.BytesIO(render_explanations_png(patch, overlays, panel=64))).size[0] == 192
    with pytest.raises(ExportError, match="overlay"):
        render_explanations(patch, {"bad": np.zeros((8, 8, 3), np.uint8)})


def test_explanations_of_a_real_model():
    torch = pytest.importorskip("torch")
    from core.explain import explain_patch
    from core.model import build_model

    torch.manual_seed(0)
    model = build_model("tiny").eval()
    patch = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    explanations = [explain_patch(model, patch, "saliency"), explain_patch(model, patch, "gradcam")]
    picture = render_explanations(patch, explanations, panel=96)
    assert picture.shape[1] == 3 * 96


@pytest.fixture(scope="module")
def evaluation(export_data):
    with ResultStore(export_data.db) as store:
        predictions = store.predictions_for_model(MODEL)
    tumors = load_cohort_tumors(export_data.cohort / "annotations", export_data.slides)
    return evaluate_cohort(predictions, dict(zip(export_data.slides, export_data.labels)), tumors)


def test_figures_export_as_html_png_svg(evaluation, tmp_path):
    figures = evaluation_figures(evaluation, 0.5)
    assert set(figures) == {"slide_roc", "slide_confusion", "patch_roc", "patch_pr", "patch_confusion", "froc"}
    assert static_engine() in ("kaleido", "matplotlib")
    for name in ("froc", "patch_confusion"):
        fig = figures[name]
        html = write_figure(tmp_path / f"{name}.html", fig).read_text()
        assert "Plotly.newPlot" in html and not re.search(r"<script[^>]*\bsrc\s*=", html, re.I)
        png = Image.open(write_figure(tmp_path / f"{name}.png", fig))
        assert png.format == "PNG" and png.size[0] > 300
        root = ET.parse(write_figure(tmp_path / f"{name}.svg", fig)).getroot()
        assert root.tag.endswith("svg")
    with pytest.raises(ExportError, match="format"):
        figure_bytes(figures["froc"], "gif")


# --------------------------------------------------------------------------- the report


def test_cohort_report_is_one_self_contained_file(export_data, tmp_path):
    with ResultStore(export_data.db) as store:
        page = build_cohort_report(store, export_data.cohort / "cohort.csv", annotations=export_data.cohort / "annotations", threshold=0.5)
    path = tmp_path / "report.html"
    path.write_text(page)
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I)
    assert not re.search(r"<link[^>]*\bhref\s*=", page, re.I)
    # plotly.js inlined once, six figures drawn with it.
    assert page.count("Plotly.newPlot(") == 6
    big_scripts = [s for s in re.findall(r"<script[^>]*>(.*?)</script>", page, re.S) if len(s) > 1_000_000]
    assert len(big_scripts) == 1
    # Outside plotly.js's own source (which holds links in strings), no remote reference at all.
    ours = page.replace(big_scripts[0], "")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", ours, re.I)
    for name in export_data.slides:
        assert name in page
    for question in QUESTIONS:
        assert question in page
    assert page.count("data:image/jpeg;base64,") == len(export_data.slides)
    assert "synthetic demo" in page.lower()  # demo_* slides


def test_report_camelyon16_mode_and_model_choice(export_data, tmp_path):
    db = tmp_path / "two.sqlite"
    shutil.copy(export_data.db, db)
    with ResultStore(db) as store:
        page = build_cohort_report(store, export_data.cohort / "cohort.csv", annotations=export_data.cohort / "annotations", mode="camelyon16")
        assert "Camelyon16 mode" in page
        store.register_model("other-model", arch="tiny", metadata={"demo": True})
        with pytest.raises(StoreError, match=f"2 models.*{MODEL}.*other-model"):
            store.choose_model()
        with pytest.raises(StoreError, match="not in the store"):
            store.choose_model("missing")
        with pytest.raises(ExportError, match="no complete prediction run"):
            load_slide_export(store, export_data.slides[0], "other-model")


# --------------------------------------------------------------------------- command line


def test_cli_export_and_report(export_data, tmp_path, capsys):
    db = str(export_data.db)
    slide = next(s for s, lab in zip(export_data.slides, export_data.labels) if lab == "tumor")
    outputs = {
        "qupath": tmp_path / "s.geojson.gz", "asap": tmp_path / "s.xml", "camelyon": tmp_path / "s.csv",
        "camelyon-slides": tmp_path / "slides.csv", "png": tmp_path / "s.png",
    }
    for fmt, out in outputs.items():
        args = ["export", "--db", db, "--format", fmt, "--threshold", "0.5", "--out", str(out)]
        if fmt != "camelyon-slides":
            args += ["--slide", slide]
        assert cli.main(args + (["--width", "500"] if fmt == "png" else [])) == 0, fmt
        assert out.is_file() and out.stat().st_size > 0
    assert json.loads(gzip.decompress(outputs["qupath"].read_bytes()))["properties"]["slide"] == slide
    assert Image.open(outputs["png"]).size[0] == 500
    report = tmp_path / "report.html"
    code = cli.main([
        "report", "--db", db, "--cohort", str(export_data.cohort / "cohort.csv"), "--annotations",
        str(export_data.cohort / "annotations"), "--out", str(report), "--figures", str(tmp_path / "figs"),
        "--figure-format", "svg",
    ])
    assert code == 0 and report.is_file() and len(list((tmp_path / "figs").glob("*.svg"))) == 6
    capsys.readouterr()

    assert cli.main(["export", "--db", db, "--slide", "no_such_slide", "--format", "qupath", "--out", str(tmp_path / "x.geojson")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no_such_slide" in err and "error:" in err
    assert not (tmp_path / "x.geojson").exists()
    assert cli.main(["export", "--db", str(tmp_path / "absent.sqlite"), "--slide", slide, "--format", "asap", "--out", str(tmp_path / "y.xml")]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "absent.sqlite").exists()
    assert cli.main(["export", "--db", db, "--format", "png", "--out", str(tmp_path / "z.png")]) == 2
    assert "--slide" in capsys.readouterr().err


def test_demo_note():
    from core.export import demo_note

    real = SimpleNamespace(name="case_17", path=None)
    assert demo_note({"label": "x"}, [real]) is None
    assert "demo model" in demo_note({"demo": True}, [real])
    assert "synthetic slides" in demo_note({}, [SimpleNamespace(name="demo_003", path=None)])


def test_core_export_imports_no_app_streamlit_or_torch():
    import ast

    for path in sorted((Path(__file__).resolve().parents[1] / "core" / "export").glob("*.py")) + [Path(__file__).resolve().parents[1] / "core" / "cli" / name for name in ("export.py", "report.py")]:
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & {"app", "pages", "streamlit", "torch"}, path
