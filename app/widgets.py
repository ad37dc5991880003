"""Small UI pieces shared by pages: progress callbacks, the demo label, patch pictures."""

from __future__ import annotations

from typing import Callable

import numpy as np
import streamlit as st

from app import context
from core.tiling import inner_squares


def progress_callback(text: str) -> tuple[Callable[[int, int], None], object]:
    """Return a ``(done, total)`` callback that drives a new st.progress bar, and the bar."""
    bar = st.progress(0.0, text=text)

    def update(done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        bar.progress(min(1.0, fraction), text=f"{text} {done}/{total}")

    return update, bar


def model_caption(loaded: context.LoadedModel) -> str:
    """Return one line naming the model, marked as demo where it is."""
    tag = " — demo, synthetic data" if loaded.is_demo else ""
    tiling = loaded.tiling
    return f"Model: {loaded.label}{tag} · id `{loaded.model_id}` · patches {tiling.patch_size} px at level {tiling.level}"


def patch_with_inner_square(image: np.ndarray, inner_fraction: float = 0.5, color=(0, 255, 255)) -> np.ndarray:
    """Return a copy of a patch picture with its inner square (the labelling region) outlined."""
    out = image.copy()
    height, width = out.shape[:2]
    x0, y0, x1, y1 = inner_squares([0], [0], width, height, inner_fraction)[0].astype(int)
    thickness = max(1, width // 128)
    out[y0 : y0 + thickness, x0:x1] = color
    out[y1 - thickness : y1, x0:x1] = color
    out[y0:y1, x0 : x0 + thickness] = color
    out[y0:y1, x1 - thickness : x1] = color
    return out


def require_model() -> context.LoadedModel:
    """Return the current model or stop the page with a message."""
    loaded = context.current_model()
    if loaded is None:
        st.warning("No model is available: train one (`python -m core train --preset demo`) or upload a checkpoint in the sidebar.")
        st.stop()
    return loaded
