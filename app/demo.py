"""Creates the demo cohort on first start, with a progress bar."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.demo import make_demo_cohort
from core.paths import demo_dir


def ensure_demo_cohort() -> Path:
    """Return the demo folder, generating the synthetic cohort first if it is absent."""
    folder = demo_dir()
    if (folder / "cohort.csv").exists():
        return folder
    bar = st.progress(0.0, text="Creating the synthetic demo cohort (first start only)...")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Creating the synthetic demo cohort: {done}/{total} slides")

    make_demo_cohort(folder, progress=progress)
    bar.empty()
    return folder
