"""Small UI pieces shared by pages: progress callbacks, the demo label, patch pictures."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import numpy as np
import streamlit as st

from app import context
from core.errors import PathologyError
from core.store import ResultStore
from core.tiling import inner_squares


def progress_callback(text: str) -> tuple[Callable[[int, int], None], object]:
    """Return a ``(done, total)`` callback that drives a new st.progress bar, and the bar."""
    bar = st.progress(0.0, text=text)

    def update(done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        bar.progress(min(1.0, fraction), text=f"{text} {done}/{total}")

    return update, bar


def file_error(name: str, exc: Exception) -> str:
    """Return the message of ``exc`` about the file ``name``, naming the file once, without its folders.

    core's messages name the file themselves (the command line prints them as they are); the
    app prefixes the name only when a message does not, so both say the same sentence. The
    folders before the name (the server's upload folder) are dropped: the user knows the file by
    its name, and the server's layout is not theirs to see.
    """
    text = re.sub(r"/[^\s'\"]*/" + re.escape(name), name, str(exc))
    return text if name in text else f"{name}: {text}"


def require_store() -> ResultStore:
    """Return the data folder's results store, or stop the page with the reason it cannot be opened."""
    try:
        return context.store()
    except PathologyError as exc:
        st.error(str(exc))
        st.info("Choose another data folder in the sidebar, or move the damaged file away.")
        st.stop()


def model_caption(loaded: context.LoadedModel) -> str:
    """Return one line naming the model, marked as demo where it is."""
    # The demo model's own label already says it is a demo on synthetic data: say it once.
    said = "demo" in loaded.label.lower() and "synthetic" in loaded.label.lower()
    tag = " — demo, synthetic data" if loaded.is_demo and not said else ""
    tiling = loaded.tiling
    scale = f"{tiling.mpp:g} µm/px" if tiling.by_resolution else f"level {tiling.level}"
    return f"Model: {loaded.label}{tag} · id `{loaded.model_id}` · patches {tiling.patch_size} px at {scale}"


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


def current_patch(loaded: context.LoadedModel) -> tuple[np.ndarray, str, dict] | None:
    """Return (patch RGB at the model's input scale, cache key, info) for the pages that study one patch.

    The patch is the one selected on the Review page; otherwise the user may take the most
    suspicious patch of a predicted slide, or upload a patch image. None if there is none yet.
    """
    from app import state

    selected = st.session_state.get(state.SELECTED_PATCH)
    source = st.radio(
        "Patch", ["selected on the Review page", "most suspicious patch of a slide", "upload an image"],
        horizontal=True, key="patch_source", index=0 if selected else 1,
    )
    tiling = loaded.tiling
    if source == "selected on the Review page":
        if not selected:
            st.info("No patch selected yet: click one on the Review page, or pick another source.")
            return None
        info = selected
    elif source == "most suspicious patch of a slide":
        require_store()  # a damaged store: its reason, not an exception box
        summaries = context.run_summaries(loaded)
        done = sorted(n for n, s in summaries.items() if s["status"] == "complete")
        if not done:
            st.info("No slide has predictions with this model yet: run the model on the Review page.")
            return None
        table = context.cohort().set_index("slide")
        # Default: a tumour slide, whose most suspicious patch is tissue worth looking at.
        tumour = [n for n in done if n in table.index and table.loc[n, "label"] == "tumor"]
        name = st.selectbox("Slide", done, key="patch_slide", index=done.index(tumour[0]) if tumour else 0)
        predictions = require_store().read_predictions(summaries[name]["run_id"])
        best = int(np.argmax(predictions.prob))
        path = table.loc[name, "path"]
        info = {
            "slide": name, "path": path, "x": int(predictions.x[best]), "y": int(predictions.y[best]),
            "size0": int(predictions.width[best]), "slide_mpp": context.given_mpp(name), "prob": float(predictions.prob[best]),
        }
    else:
        uploaded = st.file_uploader("Patch image (PNG, JPEG or TIFF)", type=["png", "jpg", "jpeg", "tif", "tiff"], key="patch_upload")
        if uploaded is None:
            return None
        from PIL import Image

        from core.explain.base import check_image
        from core.slide_io import read_image_rgb

        try:
            # core's reader: 16-bit data scaled (not clipped white), oversized images refused from their header.
            rgb = check_image(read_image_rgb(context.save_upload(uploaded, "patches")))
        except PathologyError as exc:
            st.error(file_error(uploaded.name, exc))
            return None
        array = np.asarray(Image.fromarray(rgb).resize((tiling.patch_size, tiling.patch_size)))
        key = f"upload:{uploaded.name}:{uploaded.size}:{hash(array.tobytes())}"
        return array, key, {"slide": uploaded.name, "prob": None}
    try:
        image = context.read_model_patch(loaded, info["path"], info["x"], info["y"], info.get("slide_mpp"))
    except PathologyError as exc:
        st.error(f"The patch of {info['slide']} cannot be read: {exc}")
        return None
    key = f"{info['slide']}:{info['x']}:{info['y']}:{json.dumps(tiling.to_dict(), sort_keys=True)}:{info.get('slide_mpp')}"
    return image, key, info
