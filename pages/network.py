"""Network: conv filters, feature maps of a patch, and activation maximization."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import streamlit as st

from app import state, widgets
from app.figures import objective_figure
from core.errors import PathologyError
from core.explain import conv_filters, feature_maps, maximize_activation

st.title("Network")
loaded = widgets.require_model()
st.caption(widgets.model_caption(loaded))
model = loaded.model
conv_layers = model.conv_layer_names()
all_layers = [name for name, _ in model.features.named_children()]
st.markdown(f"`{model.arch}`: {len(conv_layers)} convolutions (3 × 3, stride 1, padding 1), 2 × 2 max-pooling with stride 2, "
            "then global max-pooling and one dense unit with a logistic output.")


@st.cache_data(show_spinner=False, max_entries=64)
def filters(model_id: str, layer: str):
    return conv_filters(model, layer)


@st.cache_data(show_spinner=False, max_entries=128)
def maps(model_id: str, patch_key: str, image: np.ndarray, layer: str):
    return feature_maps(model, image, "features." + layer)


ASCENT, ASCENT_RUNS = state.ASCENT_RESULT, state.ASCENT_RUNS  # the result shown; this session's results by settings


def ascent(model_id: str, settings: tuple):
    """Return activation maximization for ``settings``, drawing its steps and objective while it runs.

    Not st.cache_data: the run draws its progress, and a cached function may not draw; the
    results are kept per session and settings instead, so a rerun with the same ones is instant.
    """
    runs = st.session_state.setdefault(ASCENT_RUNS, {})
    if (model_id, settings) in runs:
        return runs[(model_id, settings)]
    target, layer, channel, steps, lr, lam, jitter, blur_every, size = settings
    bar = st.progress(0.0, text=f"Gradient ascent: step 0 / {steps}")
    chart = st.empty()
    seen: list[float] = []
    drawn = [0.0]

    def show(step: int, total: int, objective: float, activation: float) -> None:
        seen.append(objective)
        now = time.perf_counter()
        if step < total and now - drawn[0] < 0.25:  # a few redraws per second are enough
            return
        drawn[0] = now
        bar.progress(step / total, text=f"Gradient ascent: step {step} / {total} · objective {objective:.4g} · y_i(x) {activation:.4g}")
        chart.line_chart(pd.DataFrame({"objective": seen}, index=range(1, len(seen) + 1)), height=160, x_label="step", y_label="objective")

    result = maximize_activation(
        model, target=target, layer=layer, channel=channel, steps=steps, lr=lr, lam=lam, jitter=jitter,
        blur_every=blur_every, size=size, progress=show,
    )
    bar.empty()
    chart.empty()
    runs[(model_id, settings)] = result
    return result


tab_filters, tab_maps, tab_ascent = st.tabs(["Filters", "Feature maps", "Activation maximization"])

with tab_filters:
    layer = st.selectbox("Convolution", conv_layers, key="filters_layer")
    result = filters(loaded.model_id, layer)
    if result.rgb:
        st.image(result.grid(scale=12), caption=f"{layer}: {len(result.tiles)} filters of 3 × 3 × 3, each rescaled to 0..255 and shown as an RGB tile")
    else:
        count = st.slider("Filters shown", 1, result.weights.shape[0], min(16, result.weights.shape[0]))
        st.image(result.grid(scale=8, max_filters=count),
                 caption=f"{layer}: one row per filter, its {result.weights.shape[1]} input-channel slices (3 × 3 each) side by side")

with tab_maps:
    picked = widgets.current_patch(loaded)
    if picked is not None:
        image, patch_key, _ = picked
        layer = st.selectbox("Layer", all_layers, index=1, format_func=lambda n: f"features.{n} ({type(model.features[int(n)]).__name__})", key="maps_layer")
        normalize = st.radio("Scale", ["each", "global"], horizontal=True, format_func=lambda v: "each map on its own" if v == "each" else "one scale for all")
        try:
            fm = maps(loaded.model_id, patch_key, image, layer)
        except PathologyError as exc:
            st.error(str(exc))
        else:
            left, right = st.columns([1, 3])
            left.image(image, caption="the patch")
            right.image(fm.grid(normalize=normalize, scale=max(1, 128 // fm.maps.shape[-1])), caption=f"features.{layer}: {fm.maps.shape[0]} maps of {fm.maps.shape[1]} × {fm.maps.shape[2]}")
            stats = pd.DataFrame({"map": np.arange(len(fm.max)), "max": fm.max, "mean": fm.mean}).sort_values("max", ascending=False)
            right.dataframe(stats.head(12), hide_index=True)

with tab_ascent:
    st.latex(r"x^* = \arg\max_x \; y_i(x) - \lambda \lVert x \rVert^2")
    cols = st.columns(4)
    what = cols[0].selectbox("Maximise", ["output logit", "F(I) (cancer)", "a conv channel"])
    layer, channel, target = None, 0, "logit"
    if what == "F(I) (cancer)":
        target = "cancer"
    if what == "a conv channel":
        layer = cols[1].selectbox("Layer", conv_layers, index=len(conv_layers) - 1)
        channel = int(cols[2].number_input("Channel", 0, int(model.layer(layer).out_channels) - 1, 0))
    steps = int(cols[3].number_input("Steps", 10, 500, 100))
    cols = st.columns(4)
    lr = float(cols[0].number_input("Learning rate", 0.001, 1.0, 0.05, format="%.3f"))
    lam = float(cols[1].number_input("λ", 0.0, 1.0, 1e-5, format="%.6f"))
    jitter = int(cols[2].number_input("Jitter (px)", 0, 16, 2))
    blur_every = int(cols[3].number_input("Blur every n steps (0 = off)", 0, 50, 4))
    if st.button("Run gradient ascent", type="primary"):
        try:
            st.session_state[ASCENT] = ascent(loaded.model_id, (target, layer, channel, steps, lr, lam, jitter, blur_every, loaded.tiling.patch_size))
        except PathologyError as exc:
            st.error(str(exc))
    result = st.session_state.get(ASCENT)
    if result is not None:
        left, right = st.columns([1, 2])
        left.image(result.image, caption=f"{result.unit} · {result.seconds:.1f} s")
        right.plotly_chart(objective_figure(result.objective, result.activation), width="stretch")
