"""Streamlit cache wrappers over core: handles in cache_resource, pixels and tables in cache_data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.slide_io import Slide, open_slide


@st.cache_resource(show_spinner=False, max_entries=64)
def slide_handle(path: str, mtime: float) -> Slide:
    """Return the shared handle of a slide (``mtime`` makes a changed file reopen)."""
    return open_slide(path)


@st.cache_data(show_spinner=False, max_entries=256)
def thumbnail(path: str, mtime: float, max_size: int = 512) -> np.ndarray:
    """Return an RGB thumbnail of a slide (longer side ``max_size`` px)."""
    return slide_handle(path, mtime).thumbnail(max_size)


@st.cache_data(show_spinner=False)
def cohort_table(data_dir: str, mtime: float) -> pd.DataFrame:
    """Return the cohort table (slide, label, split, path) of a data folder."""
    folder = Path(data_dir)
    table = pd.read_csv(folder / "cohort.csv", dtype=str)
    table["path"] = [str(folder / "slides" / f"{name}.tiff") for name in table["slide"]]
    return table
