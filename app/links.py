"""Links that reopen the same place: Review's slide, view, t and selected patch in the page's URL.

The URL (``st.query_params``) holds ``slide`` (a slide of the data folder, by name), ``t`` (the
decision threshold in [0, 1]), ``px``/``py`` (the selected patch's top-left corner, level-0 px)
and ``x``/``y``/``zoom`` (the viewer's centre in level-0 px and its zoom in screen px per level-0
px). Python writes slide, t and the patch on every Review run; the viewer (``app/viewer/viewer.js``)
writes the view whenever it stops moving, since only the browser knows it. Streamlit hands the
browser's query string to every run, so what the viewer wrote survives Python's writes.

A session's first run takes the URL back into session state (:func:`apply_once`): a reload keeps
the place, and a link opened elsewhere shows the same field of view.
"""

from __future__ import annotations

import math

import streamlit as st

from app import state

SLIDE, T, PATCH_X, PATCH_Y, VIEW_X, VIEW_Y, ZOOM = "slide", "t", "px", "py", "x", "y", "zoom"


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def apply_once() -> None:
    """On a session's first run, take slide, t, patch and view from the URL into session state.

    Values that do not parse are ignored (a link is user input); the slide is checked against the
    data folder by the Review page, the patch against the slide's predictions.
    """
    if st.session_state.get(state.LINK_APPLIED):
        return
    st.session_state[state.LINK_APPLIED] = True
    params = st.query_params
    t = _number(params.get(T))
    if t is not None and 0.0 <= t <= 1.0:
        st.session_state[state.THRESHOLD] = round(t, 2)
    slide = params.get(SLIDE)
    if not slide:
        return
    st.session_state[state.SELECTED_SLIDE] = slide
    px, py = _number(params.get(PATCH_X)), _number(params.get(PATCH_Y))
    if px is not None and py is not None:
        st.session_state[state.LINK_PATCH] = (slide, int(px), int(py))
    x, y, zoom = _number(params.get(VIEW_X)), _number(params.get(VIEW_Y)), _number(params.get(ZOOM))
    if x is not None and y is not None and zoom is not None and zoom > 0:
        # The viewer applies a focus once per nonce: the link's view, on the first drawing of this slide.
        st.session_state[state.VIEW_FOCUS] = (slide, x, y, f"link:{x:g}:{y:g}:{zoom:g}", zoom)


def write(**values: str | None) -> None:
    """Set these URL parameters (None removes one); only changed ones are sent to the browser."""
    params = st.query_params
    for key, value in values.items():
        if value is None:
            if key in params:
                del params[key]
        elif params.get(key) != value:
            params[key] = value


def pending_patch(slide: str) -> tuple[int, int] | None:
    """Return (and forget) the patch corner a link asked to select on ``slide``, if any."""
    pending = st.session_state.get(state.LINK_PATCH)
    if not pending or pending[0] != slide:
        return None
    del st.session_state[state.LINK_PATCH]
    return pending[1], pending[2]
