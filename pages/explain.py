"""Explain: one patch through saliency, SmoothGrad, Grad-CAM, occlusion, LIME and integrated gradients."""

from __future__ import annotations

import json

import numpy as np
import streamlit as st

from app import widgets
from core.explain import METHODS, explain_patch, explanation_key, method_defaults
from core.errors import PathologyError
from core.export import render_explanations_png

TITLES = {
    "saliency": "Saliency |∂F/∂x|",
    "smoothgrad": "SmoothGrad",
    "gradcam": "Grad-CAM",
    "occlusion": "Occlusion",
    "lime": "LIME on SLIC superpixels",
    "ig": "Integrated gradients",
}

st.title("Explain")
loaded = widgets.require_model()
st.caption(widgets.model_caption(loaded))
picked = widgets.current_patch(loaded)
if picked is None:
    st.stop()
image, patch_key, info = picked


@st.cache_data(show_spinner=False, max_entries=512)
def explain(key: str, _model, image: np.ndarray, method: str, params_json: str):
    """Return an explanation; cached per (model, patch, method, parameters) through ``key``."""
    return explain_patch(_model, image, method, **json.loads(params_json))


# -- parameters -------------------------------------------------------------------------------
target = st.radio("Explain the output", ["cancer", "not_cancer"], horizontal=True, format_func=lambda t: "F(I): cancer" if t == "cancer" else "1 − F(I): not cancer")
chosen = st.multiselect("Methods", list(METHODS), default=list(METHODS), format_func=lambda m: TITLES[m])
with st.expander("Method parameters"):
    cols = st.columns(3)
    conv_layers = loaded.model.conv_layer_names()
    params = {m: {"target": target} for m in METHODS}
    for fast in ("gradcam", "occlusion", "lime"):  # forward-only methods may use bf16 where it is native
        params[fast]["precision"] = "auto"
    params["gradcam"]["layer"] = cols[0].selectbox("Grad-CAM layer", conv_layers, index=len(conv_layers) - 1)
    params["smoothgrad"]["n_samples"] = int(cols[1].number_input("SmoothGrad samples", 5, 200, method_defaults("smoothgrad")["n_samples"]))
    params["smoothgrad"]["noise"] = float(cols[2].number_input("SmoothGrad noise (std, 0..1 image)", 0.01, 0.5, method_defaults("smoothgrad")["noise"], step=0.01))
    side = image.shape[0]
    params["occlusion"]["window"] = int(cols[0].number_input("Occlusion window (px)", 4, side, min(method_defaults("occlusion")["window"], side // 2)))
    params["occlusion"]["stride"] = int(cols[1].number_input("Occlusion stride (px)", 2, side, min(method_defaults("occlusion")["stride"], side // 4)))
    params["lime"]["n_segments"] = int(cols[2].number_input("LIME superpixels (SLIC n_segments)", 5, 400, method_defaults("lime")["n_segments"]))
    params["lime"]["n_samples"] = int(cols[0].number_input("LIME samples", 50, 5000, method_defaults("lime")["n_samples"], step=50))
    params["lime"]["compactness"] = float(cols[1].number_input("SLIC compactness", 0.1, 100.0, float(method_defaults("lime")["compactness"])))
    params["ig"]["baseline"] = cols[2].selectbox("IG baseline", ["white", "blurred", "black"], index=0)
    params["ig"]["n_steps"] = int(cols[0].number_input("IG steps", 8, 300, method_defaults("ig")["n_steps"]))

left, right = st.columns([1, 3])
left.image(widgets.patch_with_inner_square(image), caption=f"{info.get('slide')} ({image.shape[1]} px at the model's input)")
if info.get("prob") is not None:
    left.metric("F(I)", f"{info['prob']:.3f}")

# -- the explanations, side by side ----------------------------------------------------------------
results = {}
progress = right.progress(0.0, text="Explaining...")
for i, method in enumerate(chosen):
    key = explanation_key(loaded.model_id, patch_key, method, params[method])
    try:
        results[method] = explain(key, loaded.model, image, method, json.dumps(params[method], sort_keys=True))
    except PathologyError as exc:
        right.error(f"{TITLES[method]}: {exc}")
    progress.progress((i + 1) / max(len(chosen), 1), text=f"Explained {i + 1}/{len(chosen)}")
progress.empty()

with right:
    for row in range(0, len(results), 3):
        cells = st.columns(3)
        for cell, (method, result) in zip(cells, list(results.items())[row : row + 3]):
            cell.markdown(f"**{TITLES[method]}** · {result.seconds:.2f} s")
            cell.image(result.overlay(image), width="stretch")
            shown = {k: v for k, v in result.params.items() if k not in ("target", "precision", "batch_size", "seed")}
            cell.caption(", ".join(f"{k}={v}" for k, v in shown.items() if v is not None))
            if method == "lime":
                extras = result.extras
                cell.caption(
                    f"{extras['n_superpixels']} superpixels; surrogate R² = {extras['r2']:.2f}; "
                    f"supporting: {extras['top_positive']}; against: {extras['top_negative']}"
                )
            if method == "gradcam":
                cell.caption(f"layer {result.extras['layer']} ({result.extras['layer_map_size'][0]} px map, upsampled)")
st.caption(
    "Warm colours: the pixels or regions that raise the explained output; for occlusion, LIME and integrated gradients "
    "blue marks what lowers it. Pixel-gradient methods always run in float32."
)

if results:
    st.download_button(
        "Download the patch with its explanations (PNG)",
        lambda: render_explanations_png(image, {TITLES[m]: r for m, r in results.items()}, title=f"{info.get('slide')} · model {loaded.model_id}"),
        file_name=f"explanations-{patch_key.replace(':', '_')}.png", mime="image/png", on_click="ignore",
    )
