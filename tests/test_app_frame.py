"""The Streamlit frame on the demo cohort, driven by AppTest."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT


@pytest.fixture()
def app_env(demo_cohort, monkeypatch):
    monkeypatch.setenv("PATHEX_DEMO_DIR", str(demo_cohort))
    return demo_cohort


def test_frame_and_slides_page_render(app_env):
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Slides"
    assert at.slider[0].value == 0.5
    assert list(at.dataframe[0].value["slide"]) == ["demo_001", "demo_002", "demo_003", "demo_004"]
    at.selectbox[0].select("demo_002").run()
    assert not at.exception
    assert at.json[0].value and '"demo_002"' in at.json[0].value
