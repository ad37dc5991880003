"""Explain: one patch through saliency, SmoothGrad, Grad-CAM, occlusion, LIME and integrated gradients."""

from __future__ import annotations

import json
import re

import numpy as np
import streamlit as st

# The title first: the explanation libraries (Captum, LIME, scikit-image) take seconds to import
# on a session's first visit, and the page should say where the user is meanwhile.
st.title("Explain")

from app import state, widgets
from core.errors import PathologyError
from core.explain import (
    METHODS,
    explain_patch,
    explanation_key,
    method_defaults,
    patch_probability,
)
from core.explain.overlay import (
    explanation_scale,
    label_superpixels,
    upscale_nearest,
    with_colour_scale,
)
from core.export import render_explanations_png

TITLES = {
    "saliency": "Saliency |∂F/∂x|",
    "smoothgrad": "SmoothGrad",
    "gradcam": "Grad-CAM",
    "occlusion": "Occlusion",
    "lime": "LIME on SLIC superpixels",
    "ig": "Integrated gradients",
}

# The settings' session keys are app/state.py's; the frame keeps them across runs and pages.
TARGET, CHOSEN = state.EXPLAIN_TARGET, state.EXPLAIN_METHODS
LAYER, SG_SAMPLES, SG_NOISE = state.EXPLAIN_LAYER, state.EXPLAIN_SG_SAMPLES, state.EXPLAIN_SG_NOISE
OCC_WINDOW, OCC_STRIDE = state.EXPLAIN_OCC_WINDOW, state.EXPLAIN_OCC_STRIDE
LIME_SEGMENTS, LIME_SAMPLES, LIME_COMPACTNESS = state.EXPLAIN_LIME_SEGMENTS, state.EXPLAIN_LIME_SAMPLES, state.EXPLAIN_LIME_COMPACTNESS
IG_BASELINE, IG_STEPS = state.EXPLAIN_IG_BASELINE, state.EXPLAIN_IG_STEPS

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


@st.cache_data(show_spinner=False, max_entries=256)
def probability(model_id: str, patch_key: str, _model, image: np.ndarray) -> float:
    """Return F(I) of a patch that has no stored prediction (an uploaded image); cached per model and patch."""
    return patch_probability(_model, image)


# Explain's pictures are drawn at least this many px wide (nearest-neighbour), so LIME's numbers and the scales stay legible.
PICTURE_PX = 384


# -- parameters ---------------------------------------------------------------------------------
def setting(key: str, default, *, low=None, high=None, options=None):
    """Give a setting its default once; keep a kept value valid for this model and patch (range, options)."""
    value = st.session_state.setdefault(key, default)
    if options is not None and value not in options:
        st.session_state[key] = default
    elif low is not None and not low <= value <= high:
        st.session_state[key] = min(max(value, low), high)


side = image.shape[0]
conv_layers = loaded.model.conv_layer_names()
defaults = {m: method_defaults(m) for m in METHODS}
setting(TARGET, "cancer", options=["cancer", "not_cancer"])
setting(CHOSEN, list(METHODS))
st.session_state[CHOSEN] = [m for m in st.session_state[CHOSEN] if m in METHODS]
setting(LAYER, conv_layers[-1], options=conv_layers)
setting(SG_SAMPLES, defaults["smoothgrad"]["n_samples"], low=5, high=200)
setting(SG_NOISE, float(defaults["smoothgrad"]["noise"]), low=0.01, high=0.5)
setting(OCC_WINDOW, min(defaults["occlusion"]["window"], side // 2), low=4, high=side)
setting(OCC_STRIDE, min(defaults["occlusion"]["stride"], side // 4), low=2, high=side)
setting(LIME_SEGMENTS, defaults["lime"]["n_segments"], low=5, high=400)
setting(LIME_SAMPLES, defaults["lime"]["n_samples"], low=50, high=5000)
setting(LIME_COMPACTNESS, float(defaults["lime"]["compactness"]), low=0.1, high=100.0)
setting(IG_BASELINE, "white", options=["white", "blurred", "black"])
setting(IG_STEPS, defaults["ig"]["n_steps"], low=8, high=300)

target = st.radio("Explain the output", ["cancer", "not_cancer"], horizontal=True, key=TARGET,
                  format_func=lambda t: "F(I): cancer" if t == "cancer" else "1 − F(I): not cancer")
chosen = st.multiselect("Methods", list(METHODS), key=CHOSEN, format_func=lambda m: TITLES[m])
with st.expander("Method parameters"):
    cols = st.columns(3)
    params = {m: {"target": target} for m in METHODS}
    for fast in ("gradcam", "occlusion", "lime"):  # forward-only methods may use bf16 where it is native
        params[fast]["precision"] = "auto"
    params["gradcam"]["layer"] = cols[0].selectbox("Grad-CAM layer", conv_layers, key=LAYER)
    params["smoothgrad"]["n_samples"] = int(cols[1].number_input("SmoothGrad samples", 5, 200, key=SG_SAMPLES))
    params["smoothgrad"]["noise"] = float(cols[2].number_input("SmoothGrad noise (std, 0..1 image)", 0.01, 0.5, step=0.01, key=SG_NOISE))
    params["occlusion"]["window"] = int(cols[0].number_input("Occlusion window (px)", 4, side, key=OCC_WINDOW))
    params["occlusion"]["stride"] = int(cols[1].number_input("Occlusion stride (px)", 2, side, key=OCC_STRIDE))
    params["lime"]["n_segments"] = int(cols[2].number_input("LIME superpixels (SLIC n_segments)", 5, 400, key=LIME_SEGMENTS))
    params["lime"]["n_samples"] = int(cols[0].number_input("LIME samples", 50, 5000, step=50, key=LIME_SAMPLES))
    params["lime"]["compactness"] = float(cols[1].number_input("SLIC compactness", 0.1, 100.0, key=LIME_COMPACTNESS))
    params["ig"]["baseline"] = cols[2].selectbox("IG baseline", ["white", "blurred", "black"], key=IG_BASELINE)
    params["ig"]["n_steps"] = int(cols[0].number_input("IG steps", 8, 300, key=IG_STEPS))

left, right = st.columns([1, 3])
left.image(widgets.patch_with_inner_square(image), caption=f"{info.get('slide')} ({image.shape[1]} px at the model's input)")
if info.get("prob") is not None:
    left.metric("F(I)", f"{info['prob']:.3f}", help="the stored prediction of this model for this patch")
else:  # an uploaded image: no stored prediction, one forward pass of the model
    try:
        left.metric("F(I)", f"{probability(loaded.model_id, patch_key, loaded.model, image):.3f}",
                    help="the model's probability of cancer for this image, computed now")
    except PathologyError as exc:
        left.error(f"F(I) cannot be computed for this image: {exc}")

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
            picture, scale = result.overlay(image), max(1, -(-PICTURE_PX // side))
            if method == "lime":  # the superpixels the caption lists, numbered on the picture
                extras = result.extras
                listed = extras["top_positive"] + extras["top_negative"]
                picture, _ = label_superpixels(picture, extras["segments"], listed, scale=scale)
            else:
                picture = upscale_nearest(picture, scale)
            cell.image(with_colour_scale(picture, *explanation_scale(result)), width="stretch")  # the map, its scale below
            shown = {k: v for k, v in result.params.items() if k not in ("target", "precision", "batch_size", "seed")}
            cell.caption(", ".join(f"{k}={v}" for k, v in shown.items() if v is not None))
            if method == "lime":
                cell.caption(
                    f"{extras['n_superpixels']} superpixels; surrogate R² = {extras['r2']:.2f}; "
                    f"supporting: {extras['top_positive']}; against: {extras['top_negative']} (numbered on the picture)"
                )
            if method == "gradcam":
                cell.caption(f"layer {result.extras['layer']} ({result.extras['layer_map_size'][0]} px map, upsampled)")
st.caption(
    "Warm colours: the pixels or regions that raise the explained output; for occlusion, LIME and integrated gradients "
    "blue marks what lowers it. Under each picture its colour scale, in the map's own units (occlusion: the drop of "
    "the explained output when a window is hidden; LIME: the surrogate's weight of a superpixel; gradients: ∂output/∂pixel); "
    "weaker values are blended more lightly over the tissue. Pixel-gradient methods always run in float32."
)

if results:
    # slide_x_y for a slide's patch, the file's stem for an uploaded image: a name any file system takes.
    where = [info.get("slide"), info.get("x"), info.get("y")] if info.get("x") is not None else [info.get("slide")]
    download_name = re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(str(v) for v in where if v is not None)).strip("_.") or "patch"
    st.download_button(
        "Download the patch with its explanations (PNG)",
        lambda: render_explanations_png(image, {TITLES[m]: r for m, r in results.items()}, title=f"{info.get('slide')} · model {loaded.model_id}"),
        file_name=f"explanations-{download_name}.png", mime="image/png", on_click="ignore",
    )
