"""Pathology Explorer: the Streamlit entry point (frame, shared sidebar, navigation).

Run from the repository root: ``python -m streamlit run app/main.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` puts only app/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import tile_server  # noqa: E402


def run_frame() -> None:
    """The script each browser session runs: sidebar shared by every page, then the page.

    The frame (navigation, the sidebar's title, the demo's progress line) is drawn before the
    modules that import torch: on a first start it shows at once, not after seconds of imports.
    """
    from app import navigation, state
    from app.demo import ensure_demo_cohort, show_demo_progress

    st.set_page_config(page_title="Pathology Explorer", page_icon=":microscope:", layout="wide")
    ensure_demo_cohort()  # on first start: written in the background, slide by slide
    st.sidebar.markdown("## Pathology Explorer")
    st.session_state[state.VIEW_FRAGMENT] = None  # the page names its view fragment, if it draws one
    page = st.navigation(navigation.pages())
    show_demo_progress()  # above the page, until the demo cohort is complete

    from app import context, widgets
    from app.demo import ensure_demo_model
    from core.device import device_label
    from core.errors import PathologyError
    from core.paths import data_dirs

    ensure_demo_model()
    from app import links

    links.apply_once()  # a reload or an opened link: its slide, view, t and patch (before the widgets)
    # Streamlit forgets a widget's value when a run (e.g. after st.switch_page) does not draw it;
    # writing the values back makes them plain session state, so the sidebar's choices, the
    # slide on Review and its viewer settings stay what the user chose, whatever page they visit.
    for key in state.PERSISTENT_KEYS:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]
    folders = [str(d) for d in data_dirs() if d.is_dir()]
    if st.session_state.get(state.DATA_DIR) not in folders:
        st.session_state[state.DATA_DIR] = folders[0]
    st.session_state.setdefault(state.THRESHOLD, state.DEFAULT_THRESHOLD)

    with st.sidebar:
        st.selectbox("Data folder", folders, key=state.DATA_DIR, format_func=lambda p: f"{Path(p).name}/ (demo, synthetic)" if p == folders[0] else p)
        choices = context.model_choices()
        if state.PENDING_MODEL_CHOICE in st.session_state:  # a checkpoint uploaded in the last run
            st.session_state[state.MODEL_CHOICE] = st.session_state.pop(state.PENDING_MODEL_CHOICE)
        if choices:
            st.session_state.setdefault(state.MODEL_CHOICE, next(iter(choices)))
            if st.session_state[state.MODEL_CHOICE] not in choices:
                st.session_state[state.MODEL_CHOICE] = next(iter(choices))
            st.selectbox("Model", list(choices), key=state.MODEL_CHOICE)
        uploaded = st.file_uploader("Upload a checkpoint (.pt)", type=["pt", "pth"], key="checkpoint_uploader")
        if uploaded is not None:
            try:
                from core.model import load_checkpoint

                path = context.save_upload(uploaded, "models")
                load_checkpoint(path)
            except PathologyError as exc:
                st.error(widgets.file_error(uploaded.name, exc))
            else:
                if st.session_state.get(state.MODEL_UPLOAD) != str(path):
                    st.session_state[state.MODEL_UPLOAD] = str(path)
                    # The Model selectbox is drawn already: choose the upload before it, next run.
                    st.session_state[state.PENDING_MODEL_CHOICE] = f"uploaded: {path.name}"
                    st.rerun()
        try:
            loaded = context.current_model()
        except PathologyError as exc:
            st.error(str(exc))
            loaded = None
        if loaded is not None:
            st.caption(("Demo model, trained on synthetic data. " if loaded.is_demo else "") + f"Device: {device_label(loaded.runner.device)}, {loaded.runner.precision}")
        # A t move reruns only the page's view of t (a fragment the page names), not the frame.
        st.slider(
            "Decision threshold t", 0.0, 1.0, step=0.01, key=state.THRESHOLD, on_change=context.rerun_view,
            help="A patch is called cancer when F(I) ≥ t, a slide when one of its patches is. Every page uses this t.",
        )

    page.run()


if __name__ == "__main__":  # a session's script run (also AppTest)
    run_frame()
else:  # imported by the server (`streamlit run` finds this st.App): the app with its tile routes
    # Sessions' scripts (explanations, evaluations) are CPU-bound Python threads; the event loop
    # that answers tiles and health checks needs the GIL for every response. Python hands the GIL
    # over every 5 ms by default, so under 8 busy sessions each response waited its turn many
    # times (health polls over 5 s); a shorter interval keeps the loop responsive (bench_load).
    sys.setswitchinterval(float(os.environ.get("PATHEX_GIL_SWITCH_S", "0.0005")))

    def _start_demo_cohort() -> None:
        try:
            from app.demo import ensure_demo_cohort

            ensure_demo_cohort()
            # Not also importing the sessions' modules here (torch): importing pandas in this thread
            # while the first session's script imported it failed with a SystemError in typing.
        except Exception:  # the first session's run tries again and shows the error
            import logging

            logging.getLogger(__name__).exception("the demo cohort could not be started with the server")

    # First start: the synthetic cohort is started with the server, not when the first browser
    # session arrives (seconds earlier); a thread, so the server does not wait for the imports.
    import threading

    threading.Thread(target=_start_demo_cohort, name="demo-cohort-start", daemon=True).start()
    app = st.App(__file__, routes=tile_server.routes(), lifespan=tile_server.lifespan)
