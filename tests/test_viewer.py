"""The slide viewer's Python side (app/viewer): what a click or a box selects, the data the
browser gets, the vendored files it loads; and the Review page hands the component its data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import Polygon

from app.viewer import STATIC, STATIC_FILES, patches_at, static_file, viewer_data


def test_a_click_selects_the_patch_under_it():
    x, y = np.array([0, 512, 0, 512]), np.array([0, 0, 512, 512])
    assert patches_at(x, y, 512, {"kind": "point", "x": 700.0, "y": 100.0}).tolist() == [1]
    assert patches_at(x, y, 512, {"kind": "point", "x": 511.9, "y": 512.0}).tolist() == [2]  # [x, x + size) half-open
    assert patches_at(x, y, 512, {"kind": "point", "x": 1100.0, "y": 100.0}).tolist() == []  # off the grid
    assert patches_at(x, y, 512, {"kind": "point", "x": -5.0, "y": 5.0}).tolist() == []


def test_overlapping_patches_nearest_centre_first():
    # Stride 256 under a 512 side: a point lies in up to four patches; the one centred nearest wins.
    x, y = np.array([0, 256, 512]), np.array([0, 0, 0])
    assert patches_at(x, y, 512, {"kind": "point", "x": 600.0, "y": 256.0}).tolist() == [1, 2]
    assert patches_at(x, y, 512, {"kind": "point", "x": 300.0, "y": 256.0}).tolist() == [0, 1]


def test_a_box_selects_the_patches_whose_centre_it_holds():
    x, y = np.meshgrid(np.arange(4) * 100, np.arange(3) * 100)
    x, y = x.ravel(), y.ravel()
    # Centres at 50, 150, 250, 350 (x) and 50, 150, 250 (y): the box holds x 150, 250 and y 50, 150.
    box = {"kind": "box", "x0": 280.0, "y0": 160.0, "x1": 120.0, "y1": 20.0}  # corners in any order
    chosen = patches_at(x, y, 100, box)
    assert sorted(zip(x[chosen].tolist(), y[chosen].tolist())) == [(100, 0), (100, 100), (200, 0), (200, 100)]
    assert patches_at(x, y, 100, {"kind": "box", "x0": 0, "y0": 0, "x1": 40, "y1": 40}).size == 0


def test_viewer_data_is_json_in_level0_pixels():
    tumor = Polygon([(10, 10), (90, 10), (90, 60)], holes=[[(60, 20), (80, 20), (80, 30)]])
    data = viewer_data(
        slide_token="s", slide_tiles="/tiles/slide/s/{z}/{x}/{y}.jpg", dimensions=(3000, 2000), max_level=4, mpp=0.25,
        overlay_token="o", overlay_tiles="/tiles/overlay/o/{z}/{x}/{y}.png", opacity=0.6,
        selected=(512.0, 1024.0, 256), tumors=[tumor], focus=("n1", 640.0, 1152.0),
    )
    assert json.loads(json.dumps(data)) == data
    assert data["slide"] == {"token": "s", "tiles": "/tiles/slide/s/{z}/{x}/{y}.jpg", "width": 3000, "height": 2000, "maxLevel": 4, "mpp": 0.25}
    assert data["overlay"]["opacity"] == 0.6 and data["selected"] == {"x": 512.0, "y": 1024.0, "size": 256.0}
    assert len(data["tumors"]) == 2 and data["tumors"][0][1] == [90.0, 10.0]  # exterior and hole, closed rings
    assert data["focus"] == {"nonce": "n1", "x": 640.0, "y": 1152.0, "zoom": 1.0}
    bare = viewer_data(slide_token="s", slide_tiles="t", dimensions=(10, 10), max_level=0, mpp=None)
    assert bare["slide"]["mpp"] is None and bare["overlay"] is None and bare["selected"] is None and bare["focus"] is None


def test_vendored_files_are_served_and_nothing_else():
    assert STATIC_FILES  # OpenSeadragon and its licence
    import plotly

    for name in STATIC_FILES:
        data, media = static_file(name)
        # plotly.js (app.charts) is the copy of the installed plotly package, the version the figures are made with.
        where = Path(plotly.__file__).parent / "package_data" if name == "plotly.min.js" else STATIC
        assert data == (where / name).read_bytes() and media == "text/javascript" if name.endswith(".js") else media
    assert static_file("plotly.min.js")[0][:200].decode().lstrip("/* \n").startswith("plotly.js v")
    script = static_file("openseadragon.min.js")[0].decode()
    assert "OpenSeadragon" in script and "6.1.1" in script  # the version package.json pins
    for name in ("viewer.js", "../__init__.py", "..%2F__init__.py", "", "openseadragon.js"):
        assert static_file(name) is None


def test_the_component_never_loads_from_another_host():
    from app.viewer import HERE

    source = (HERE / "viewer.js").read_text() + (HERE / "viewer.css").read_text()
    assert "https://" not in source and "//cdn" not in source
    assert 'const OSD_URL = "/viewer/static/openseadragon.min.js"' in source
    from app.charts import HERE as CHARTS

    charts = (CHARTS / "charts.js").read_text() + (CHARTS / "charts.css").read_text()
    assert "https://" not in charts and "//cdn" not in charts
    assert 'const PLOTLY_URL = "/viewer/static/plotly.min.js"' in charts


@pytest.mark.slow
def test_review_hands_the_viewer_its_slide_overlay_and_scale(app_cohort, tmp_path, monkeypatch):
    """AppTest: after a run, the page mounts the component with the slide's tiles, its µm per pixel and the overlay."""
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    app_data = tmp_path / "cohort"
    shutil.copytree(app_cohort, app_data)
    monkeypatch.setenv("PATHEX_DEMO_DIR", str(app_data))
    monkeypatch.setenv("PATHEX_NO_DEMO_TRAINING", "1")
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=240)
    at.run()
    run = next((b for b in at.button if b.label.startswith("Run the model on demo_002")), None)
    assert run is not None, "a fresh copy of the cohort holds no predictions"
    # Before any run the slide is in the viewer already, without a heatmap, with its tumour outlines.
    [before] = [e for e in at.get("bidi_component")]
    shown = json.loads(before.proto.json)
    assert shown["slide"]["tiles"].startswith("/tiles/slide/") and shown["overlay"] is None and shown["outline"] is None
    assert shown["tumors"], "demo_002 is a tumour slide: its annotation outlines are drawn"
    at = run.click().run()
    assert not at.exception, at.exception
    [element] = [e for e in at.get("bidi_component")]
    data = json.loads(element.proto.json)
    assert data["slide"]["tiles"].startswith("/tiles/slide/") and data["slide"]["width"] > 0
    assert data["slide"]["mpp"] and 0.1 < data["slide"]["mpp"] < 2
    assert data["overlay"]["tiles"].startswith("/tiles/overlay/") and data["overlay"]["opacity"] == 0.6
