"""Pathology Explorer: the Streamlit entry point (frame, shared sidebar, navigation).

Run from the repository root: ``python -m streamlit run app/main.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` puts only app/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import state  # noqa: E402
from app.demo import ensure_demo_cohort  # noqa: E402

st.set_page_config(page_title="Pathology Explorer", page_icon=":microscope:", layout="wide")

data_dir = ensure_demo_cohort()
st.session_state.setdefault(state.DATA_DIR, str(data_dir))
st.session_state.setdefault(state.THRESHOLD, state.DEFAULT_THRESHOLD)

with st.sidebar:
    st.markdown("### Pathology Explorer")
    st.caption(f"Data folder: `{st.session_state[state.DATA_DIR]}`")
    st.caption("Demo cohort: synthetic slides, not real tissue.")
    st.slider("Decision threshold t", 0.0, 1.0, step=0.01, key=state.THRESHOLD,
              help="A patch is called cancer when F(I) >= t; every page reads this value.")

pages = [st.Page(str(ROOT / "pages" / "slides.py"), title="Slides", icon=":material/biotech:", default=True)]
st.navigation(pages).run()
