"""First start: creates the demo cohort and the demo model when they are absent, with progress bars."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import streamlit as st

from core.demo import make_demo_cohort
from core.paths import demo_dir


# One generator per server process: a second browser session waits for the first one's work.
_first_start = threading.Lock()


def ensure_demo_cohort() -> Path:
    """Return the demo folder, generating the synthetic cohort first if it is absent."""
    folder = demo_dir()
    if (folder / "cohort.csv").exists():
        return folder
    waiting = st.empty()
    if _first_start.locked():
        waiting.info("Another session is creating the synthetic demo cohort; this page continues when it is ready.")
    with _first_start:
        waiting.empty()
        if (folder / "cohort.csv").exists():
            return folder
        bar = st.progress(0.0, text="Creating the synthetic demo cohort (first start only)...")

        def progress(done: int, total: int) -> None:
            bar.progress(done / max(total, 1), text=f"Creating the synthetic demo cohort: {done}/{total} slides")

        make_demo_cohort(folder, progress=progress)
        bar.empty()
    return folder


def ensure_demo_model() -> Path | None:
    """Return the demo checkpoint, training it first (with a progress bar) if it is absent.

    ``PATHEX_NO_DEMO_TRAINING=1`` turns the training off (tests that bring their own model).
    """
    if os.environ.get("PATHEX_NO_DEMO_TRAINING") == "1":
        return None
    try:
        from core.training import ensure_demo_model as ensure
    except ImportError:  # training not available: the app still works with other checkpoints
        return None
    from app.context import DEMO_MODEL

    if DEMO_MODEL.exists():
        return DEMO_MODEL
    with _first_start:
        if DEMO_MODEL.exists():
            return DEMO_MODEL
        bar = st.progress(0.0, text="Training the demo model on the synthetic cohort (first start only)...")

        def progress(done: int, total: int) -> None:
            bar.progress(done / max(total, 1), text=f"Training the demo model: {done}/{total}")

        path = ensure(progress=progress)
        bar.empty()
    return path
