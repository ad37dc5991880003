"""CNN basics: convolution of a real patch with a kernel, and max / average / L2 pooling side by side."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import widgets
from core.explain import KERNELS, convolve, filter_kernel, pool
from core.explain.overlay import rescale_uint8, upscale_nearest

# Pooled maps are drawn at least this many px wide, each pooling window as one block of equal pixels.
POOLED_PX = 512

st.title("CNN basics")
loaded = widgets.require_model()
picked = widgets.current_patch(loaded)
if picked is None:
    st.stop()
image = picked[0]

st.header("Convolution")
st.markdown(
    "A neuron of a convolutional layer sees a small receptive field and computes the weighted sum of its inputs "
    "(its inner potential), then an activation function; all neurons of one feature map share the same weights, so the "
    "map is the kernel slid over the image."
)
st.latex(r"\xi_j = \sum_{i \in j_{\leftarrow}} w_{ji}\, y_i \qquad y_j = \sigma_j(\xi_j)")
cols = st.columns(3)
kernel_names = list(KERNELS) + ["learned: first-layer filter of the model"]
choice = cols[0].selectbox("Kernel", kernel_names, index=kernel_names.index("edge"))
if choice.startswith("learned"):
    n_filters = int(loaded.model.layer(loaded.model.conv_layer_names()[0]).out_channels)
    index = int(cols[1].number_input("Filter", 0, n_filters - 1, 0))
    kernel = filter_kernel(loaded.model, None, index)
    source = image
else:
    kernel = KERNELS[choice]
    source = image.mean(axis=2).astype(np.uint8)  # a named 3 x 3 kernel acts on the grey image
stride = int(cols[2].number_input("Stride", 1, 4, 1))
feature_map = convolve(source, kernel, stride=stride)
relu = np.maximum(feature_map, 0)
a, b, c = st.columns(3)
a.image(image, caption="input patch", width="stretch")
b.image(rescale_uint8(feature_map), caption=f"ξ: the kernel applied ({feature_map.shape[1]} × {feature_map.shape[0]})", width="stretch")
c.image(rescale_uint8(relu), caption="y = ReLU(ξ)", width="stretch")
if kernel.ndim == 2:
    st.dataframe(np.round(kernel, 3), width=300)

st.header("Pooling")
st.markdown("Pooling neurons compute a simple function of disjoint receptive fields of the feature map above (here y = ReLU(ξ)):")
cols = st.columns(3)
cols[0].latex(r"\text{max: } y_j = \max_{i \in j_{\leftarrow}} y_i")
cols[1].latex(r"\text{average: } y_j = \frac{\sum_{i \in j_{\leftarrow}} y_i}{|j_{\leftarrow}|}")
cols[2].latex(r"L_2\text{: } y_j = \sqrt{\sum_{i \in j_{\leftarrow}} y_i^2}")
window = st.slider("Window (and stride)", 2, 16, 4)
for col, kind in zip(st.columns(3), ("max", "avg", "l2")):
    pooled = pool(relu, kind, window)
    # Nearest-neighbour enlargement: one flat block per pooling window (a smooth scaling would blur them).
    factor = max(1, -(-POOLED_PX // max(pooled.shape[:2])))
    col.image(upscale_nearest(rescale_uint8(pooled), factor), width="stretch")
    col.caption(f"{kind} pooling {window} × {window}: {pooled.shape[1]} × {pooled.shape[0]}, each value one block")
