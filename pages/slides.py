"""Slides page: the cohort table and a slide's thumbnail and pyramid."""

from pathlib import Path

import streamlit as st

from app import cache, state
from core.errors import SlideError

st.title("Slides")
data_dir = Path(st.session_state[state.DATA_DIR])
table = cache.cohort_table(str(data_dir), (data_dir / "cohort.csv").stat().st_mtime)
st.caption(f"{len(table)} slides in `{data_dir}` (synthetic demo data).")
st.dataframe(table[["slide", "label", "split"]], hide_index=True, width="stretch")

name = st.selectbox("Slide", table["slide"], key=state.SELECTED_SLIDE)
path = table.set_index("slide").loc[name, "path"]
try:
    handle = cache.slide_handle(path, Path(path).stat().st_mtime)
    left, right = st.columns([2, 1])
    left.image(cache.thumbnail(path, Path(path).stat().st_mtime, 768), caption=f"{name} (synthetic demo slide)")
    right.json(handle.info.to_dict())
except (SlideError, OSError) as exc:
    st.error(f"Cannot show {name}: {exc}")
