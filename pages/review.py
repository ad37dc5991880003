"""Review: pick a slide, run the model, see the heatmap and the decision at t, select a patch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app import context, links, navigation, state, tile_server, widgets
from app.figures import colorbar_html, slide_overview_figure
from app.viewer import outline_spec, patches_at, slide_viewer, viewer_data
from core.cohort import SLIDE_SUFFIXES
from core.deepzoom import max_zoom
from core.errors import PathologyError
from core.export import (
    build_asap_xml,
    build_camelyon_csv,
    qupath_geojson_bytes,
    render_overview_png,
)
from core.heatmap import COLORMAPS, FADE_FROM, FADE_FULL, heatmap_over_thumbnail
from core.slide_io import SUPPORTED_HINT
from core.tiling import label_patches, slide_resolution

UPLOAD_TYPES = [suffix.lstrip(".") for suffix in SLIDE_SUFFIXES]

st.title("Review")
loaded = widgets.require_model()
st.caption(widgets.model_caption(loaded))
store = widgets.require_store()

# -- the cohort table -----------------------------------------------------------------------------
def status_of(summary: dict | None) -> str:
    """Return the table's status of a run summary: predicted, running, failed (with its reason), not yet."""
    if summary is None:
        return "not yet"
    if summary["status"] == "complete":
        return "predicted"
    if summary["status"] == "failed":
        return f"failed: {summary.get('message') or 'unknown reason'}"
    return summary["status"]


def cohort_table_height(rows: int, row_px: int = 35, most: int = 20) -> int:
    """Return the cohort table's height in CSS px: every row up to ``most``, then it scrolls (header and border included)."""
    return row_px * (min(max(rows, 1), most) + 1) + 3


def predict(name: str, path: str, progress=None) -> bool:
    """Run the model on one slide into the store; show the reason and return False when it fails."""
    try:
        loaded.runner.predict_slide(context.slide(path).path, store, loaded.tiling, progress=progress, slide_mpp=context.given_mpp(name))
    except PathologyError as exc:
        st.error(widgets.file_error(Path(path).name, exc))
        return False
    return True


with st.container():
    upload_cols = st.columns([3, 1])
    uploaded = upload_cols[0].file_uploader("Upload a slide or an image", type=UPLOAD_TYPES, help=SUPPORTED_HINT)
    if uploaded is not None:
        try:
            path = context.save_upload(uploaded, "slides")
            handle = context.slide(path)
        except PathologyError as exc:
            st.error(widgets.file_error(uploaded.name, exc))
        else:
            # The field belongs to this file (its key names it): typing never changes another upload.
            known = st.session_state.setdefault(state.UPLOADED_SLIDES, {})
            mpps = st.session_state.setdefault(state.UPLOADED_MPP, {})
            typed = upload_cols[1].number_input(
                f"Microns per pixel of {path.stem}", min_value=0.0, max_value=100.0, value=mpps.get(path.stem), step=0.01,
                format="%.4f", key=f"{state.UPLOAD_MPP_INPUT}-{path.name}",
                help="This file's level-0 resolution, needed for images without resolution metadata (PNG, JPEG, some "
                "TIFFs). Leave empty to use the file's own metadata. 0.25 is a typical 40x scan, 0.5 a 20x scan.",
            )
            given = float(typed) if typed else None
            if known.get(path.stem) != str(path) or mpps.get(path.stem) != given:
                known[path.stem] = str(path)
                mpps[path.stem] = given
                st.session_state[state.SELECTED_SLIDE] = path.stem
            if loaded.tiling.by_resolution and given is None and slide_resolution(handle) is None:
                st.warning(
                    f"{uploaded.name} has no usable resolution metadata: type its microns per pixel next to the upload so "
                    f"that the model sees {loaded.tiling.patch_size} px patches at {loaded.tiling.mpp:g} µm/px."
                )


@st.cache_data(show_spinner=False, max_entries=64)
def patch_picture(path: str, mtime: float, x: int, y: int, size0: int, model_id: str, slide_mpp: float | None, _loaded) -> bytes:
    """Return the picture of the patch at level-0 (x, y), side ``size0`` px, of the slide file ``path`` (``mtime``), its inner square outlined, as PNG bytes.

    Full resolution when it fits on screen, else the patch as the model ``model_id`` sees it; made
    once per patch, so a rerun (a t move) neither reads the slide nor encodes the picture again.
    """
    import io

    from PIL import Image

    level0 = context.slide(path).read_region((x, y), 0, (size0, size0)) if size0 <= 1024 else context.read_model_patch(_loaded, path, x, y, slide_mpp)
    buffer = io.BytesIO()
    Image.fromarray(widgets.patch_with_inner_square(level0)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_place(name: str, t: float, patch: dict | None) -> None:
    """Write where the page is to the URL (app/links.py): the slide, t and the selected patch (a dict
    with level-0 ``x``, ``y``; None: none), so that a reload or a sent link opens the same place.

    The view (centre and zoom) is the viewer's to write; it is cleared when the slide changes.
    """
    if st.query_params.get(links.SLIDE) not in (None, name):  # another slide: its view is not this one's
        links.write(**{links.VIEW_X: None, links.VIEW_Y: None, links.ZOOM: None})
    links.write(**{
        links.SLIDE: name, links.T: f"{t:.2f}", links.PATCH_X: str(patch["x"]) if patch else None,
        links.PATCH_Y: str(patch["y"]) if patch else None,
    })


@st.fragment(key=state.REVIEW_SLIDE)
def slide_view() -> None:
    """The cohort table, the slide choice and everything drawn from the chosen slide: its run button or
    its heatmap, the viewer settings and the view at t.

    A slide switch reruns only this (a fragment): the frame (sidebar, navigation) and the upload are
    not made and sent again. The table is read again (cached until the store or the folder changes).
    """
    table = context.cohort()
    summaries = context.run_summaries(loaded)
    scores = np.asarray([summaries.get(name, {}).get("max_prob") for name in table["slide"]], dtype=float)
    # Text cells, empty where there is nothing (never "None"): 0.xxx sorts as text in the same order as the numbers.
    table["max F(I)"] = ["" if np.isnan(m) else f"{m:.3f}" for m in scores]
    table["status"] = [status_of(summaries.get(name)) for name in table["slide"]]
    table["mpp"] = [("" if m is None or pd.isna(m) else f"{float(m):g}") for m in table["mpp"]]
    table = table.rename(columns={"mpp": "mpp given"})  # what the user gave; empty: the slide's own metadata
    # The table's last column is the decision at t: the view below redraws it here when t moves
    # (its own fragment's rerun), without running the rest of the page. A container, not st.empty:
    # Streamlit lets a nested fragment write into its parent's block (a container) on the parent's
    # rerun, not into an element's place (st.empty) made by the parent.
    table_slot = st.container()

    def draw_table(t: float) -> None:
        """Draw the cohort table with its decision at ``t`` into its place at the top of the page."""
        shown = table.drop(columns=["path"]).fillna("")
        shown[f"decision at t={t:.2f}"] = ["" if np.isnan(m) else ("cancer" if m >= t else "no cancer") for m in scores]
        table_slot.dataframe(
            shown, hide_index=True, width="stretch", height=cohort_table_height(len(shown)),
            column_config={"status": st.column_config.TextColumn("status", width="large")},
        )

    def stop() -> None:
        """End the page here (no view below): the table is drawn at the current t first."""
        draw_table(float(st.session_state[state.THRESHOLD]))
        st.stop()

    names = [n for n, p in zip(table["slide"], table["path"]) if p]
    if not names:
        making = context.demo_slides_in_progress()
        if making is not None:
            written, total = making
            st.info(
                f"The synthetic demo slides are being made (first start only): {written} of {total or '?'} written so far. "
                "They appear here as they are written (the button above the page shows them)."
            )
        else:
            st.info("This data folder holds no slides: put slide files in its slides/ folder, or upload one above.")
        stop()
    if st.session_state.get(state.SELECTED_SLIDE) not in names:
        st.session_state[state.SELECTED_SLIDE] = context.default_slide(table, summaries)

    missing = [n for n, p, st_ in zip(table["slide"], table["path"], table["status"]) if p and st_ != "predicted"]
    # The cohort's run; not when the only slide without predictions is the chosen one (its own run
    # button is below: two buttons for one run).
    if missing and missing != [st.session_state[state.SELECTED_SLIDE]] and st.button(f"Run the model on all {len(missing)} slides without predictions" if len(missing) > 1 else f"Run the model on the slide without predictions ({missing[0]})"):
        update, bar = widgets.progress_callback("Predicting the cohort: slide")
        paths = table.set_index("slide")["path"]
        for i, missing_name in enumerate(missing):
            predict(missing_name, paths[missing_name])
            update(i + 1, len(missing))
        bar.empty()
        st.rerun()

    name = st.selectbox("Slide", names, key=state.SELECTED_SLIDE, on_change=context.rerun_fragment, args=(state.REVIEW_SLIDE,))
    row = table.set_index("slide").loc[name]

    try:
        slide = context.slide(row["path"])
    except PathologyError as exc:
        st.error(f"Cannot open {name}: {exc}")
        stop()
    try:
        thumb = context.thumbnail(row["path"], 1024)
    except PathologyError as exc:
        # A slide that opens but cannot be read (damaged tiles): say so; a run records the reason.
        st.error(f"Cannot read {name}: {exc}")
        thumb = None

    summary = summaries.get(name)
    if summary is None or summary["status"] != "complete":
        write_place(name, float(st.session_state[state.THRESHOLD]), None)  # a slide to run is a place too
        if summary is not None and summary["status"] == "failed":
            st.error(f"The last run on {name} failed: {summary.get('message') or 'unknown reason'}")
            label = f"Retry the model on {name}"
        else:
            st.info(f"{name} has no complete predictions with this model yet.")
            label = f"Run the model on {name}"
        if loaded.tiling.by_resolution and row["split"] != "uploaded" and slide_resolution(slide) is None:
            # A data-folder slide without usable resolution metadata: ask here (the upload has its own field).
            typed = st.number_input(
                f"Microns per pixel of {name}", min_value=0.0, max_value=100.0, value=context.given_mpp(name), step=0.01,
                format="%.4f", key=f"mpp-of-{name}",
                help=f"{name} has no usable resolution metadata; the model cuts {loaded.tiling.patch_size} px patches at "
                f"{loaded.tiling.mpp:g} µm/px. 0.25 is a typical 40x scan, 0.5 a 20x scan. (A cohort.csv mpp column gives it for good.)",
            )
            given = st.session_state.setdefault(state.GIVEN_MPP, {})
            if (float(typed) if typed else None) != given.get(name):
                if typed:
                    given[name] = float(typed)
                else:
                    given.pop(name, None)
                st.rerun()
        if st.button(label, type="primary"):
            update, bar = widgets.progress_callback(f"Predicting {name}: patch")
            ok = predict(name, row["path"], update)
            bar.empty()
            if ok:
                st.rerun()
        if thumb is not None:
            # The slide in the viewer already, without a heatmap: it can be looked at in deep zoom
            # before any run, and its tiles are loaded while the person decides (a run then adds the heatmap's).
            try:
                outlines = context.tumors(name) if row["split"] != "uploaded" and st.session_state.get(state.SHOW_ANNOTATIONS, True) else None
            except PathologyError:
                outlines = None  # said on the page once there are predictions
            token = tile_server.register_slide(slide.path)
            slide_viewer(
                viewer_data(
                    slide_token=token, slide_tiles=tile_server.slide_url(token), dimensions=slide.dimensions,
                    max_level=max_zoom(slide.dimensions), mpp=slide_resolution(slide, context.given_mpp(name)), tumors=outlines,
                ),
                key=state.SLIDE_VIEWER,
            )
            st.caption(f"{name} ({slide.vendor}, {slide.dimensions[0]} x {slide.dimensions[1]} px): no heatmap until the model has run on it.")
        stop()
    if thumb is None:
        stop()

    predictions = context.predictions(summary["run_id"], summary["n_done"])
    size0 = int(predictions.width[0]) if len(predictions) else 0
    grid = context.probability_grid(summary["run_id"], summary["n_done"])  # once per run, not per rerun
    centres_x = predictions.x + size0 / 2
    centres_y = predictions.y + size0 / 2
    max_prob = float(predictions.prob.max()) if len(predictions) else 0.0
    try:
        tumors = context.tumors(name) if row["split"] != "uploaded" else []
    except PathologyError as exc:
        st.warning(f"Annotations of {name} not shown: {exc}")
        tumors = []
    slide_token = tile_server.register_slide(slide.path)
    grid_token = tile_server.register_grid(slide_token, summary["run_id"], grid)
    mpp = slide_resolution(slide, context.given_mpp(name))


    def select_patch(index: int, count: int = 1) -> None:
        """Make patch ``index`` the selected one (its record in session state, as Explain reads it)."""
        st.session_state[state.SELECTED_PATCH] = {
            "slide": name, "path": str(slide.path), "x": int(predictions.x[index]), "y": int(predictions.y[index]),
            "size0": size0, "slide_mpp": context.given_mpp(name), "prob": float(predictions.prob[index]),
        }
        st.session_state[state.SELECTION_COUNT] = count


    def select_picked() -> None:
        """The viewer's click or box (a callback, before the view reruns): select its most suspicious patch."""
        picked = (st.session_state.get(state.SLIDE_VIEWER) or {}).get("select")
        if not picked or picked.get("slide") != slide_token or not len(predictions):
            return
        chosen = patches_at(predictions.x, predictions.y, size0, picked)
        if picked.get("kind") == "point":
            chosen = chosen[:1]
        if len(chosen):
            select_patch(int(max(chosen, key=lambda i: predictions.prob[i])), len(chosen))  # in a box, the most suspicious patch


    def focus_on(x: float, y: float) -> None:
        """Have the deep-zoom viewer centre level-0 (x, y) at full resolution, once (a new nonce each time)."""
        import time

        st.session_state[state.VIEW_FOCUS] = (name, float(x), float(y), f"{time.time_ns()}")

    # -- the heatmap and the decision at t ------------------------------------------------------------
    controls = st.columns([1, 1, 1, 1, 1])
    # Defaults as session state (not value=): the frame keeps these keys across pages (app/main.py).
    for key, default in state.VIEWER_DEFAULTS.items():
        st.session_state.setdefault(key, default)
    # A change reruns the view below only (context.rerun_view), as a t move does: the page above stays.
    controls[0].slider("Heatmap opacity", 0.0, 1.0, step=0.05, key=state.OPACITY, on_change=context.rerun_view)
    controls[1].selectbox("Colour map", COLORMAPS, key=state.COLORMAP, on_change=context.rerun_view)
    controls[2].toggle("Annotation outlines", key=state.SHOW_ANNOTATIONS, on_change=context.rerun_view)
    controls[3].toggle("Hide patches below t", key=state.CUT_BELOW_T, on_change=context.rerun_view)
    controls[4].toggle(
        "Transparent low F(I)", key=state.FADE_LOW, on_change=context.rerun_view,
        help=f"Patches with F(I) ≤ {FADE_FROM:g} are not coloured at all and the colour grows to full opacity at {FADE_FULL:g}, so tissue the model finds normal stays as it is.",
    )


    @st.fragment(key=state.REVIEW_VIEW)
    def view_at_t() -> None:
        """Everything that depends on t, the viewer settings and the selected patch: the table's decision
        column, the metrics, the viewer, the colour bar, the downloads and the selected patch.

        A t move, a viewer setting, a click or a box in the viewer reruns only this (a fragment): the
        sidebar, the upload and the slide choice are not sent again.
        """
        t = float(st.session_state[state.THRESHOLD])
        opacity = float(st.session_state[state.OPACITY])
        colormap = st.session_state[state.COLORMAP]
        show_annotations = bool(st.session_state[state.SHOW_ANNOTATIONS])
        cut = bool(st.session_state[state.CUT_BELOW_T])
        fade = bool(st.session_state[state.FADE_LOW])
        draw_table(t)

        n_above = int((predictions.prob >= t).sum())
        metrics = st.columns(4)
        metrics[0].metric(f"Decision at t = {t:.2f}", "cancer" if n_above else "no cancer")
        metrics[1].metric("Slide score max F(I)", f"{max_prob:.3f}")
        metrics[2].metric("Patches with F(I) ≥ t", f"{n_above} / {len(predictions)}")
        metrics[3].metric("Ground truth", row["label"] or "unknown")

        linked = links.pending_patch(name)
        if linked is not None:  # a link's patch: selected once this slide's predictions are read
            hit = np.nonzero((predictions.x == linked[0]) & (predictions.y == linked[1]))[0]
            if hit.size:
                select_patch(int(hit[0]))
        view_cols = st.columns([2, 1])
        with view_cols[0]:
            view = st.segmented_control("View", ["Deep zoom", "Overview"], key=state.VIEW_MODE) or "Deep zoom"
        if len(predictions) and view_cols[1].button("Go to the most suspicious patch", help="Select the patch with the highest F(I) and zoom the viewer onto it at full resolution."):
            best = int(np.argmax(predictions.prob))
            select_patch(best)
            focus_on(centres_x[best], centres_y[best])
        selected_patch = st.session_state.get(state.SELECTED_PATCH)
        selected_index = None
        if selected_patch and selected_patch.get("slide") == name:
            hit = np.nonzero((predictions.x == selected_patch["x"]) & (predictions.y == selected_patch["y"]))[0]
            selected_index = int(hit[0]) if hit.size else None
        focus = st.session_state.get(state.VIEW_FOCUS)
        focus = (focus[3], focus[1], focus[2], *focus[4:]) if focus and focus[0] == name and len(focus) in (4, 5) else None
        if view == "Deep zoom":
            # The overlay's tiles do not depend on t (unless patches below t are hidden): the browser
            # draws the t outlines from the grid (fetched once per run), so a t move fetches no tile.
            overlay_token = tile_server.register_overlay(
                slide_token, summary["run_id"], grid, slide.dimensions, colormap=colormap, cut=t if cut else None, outline=None, fade=fade,
            )
            data = viewer_data(
                slide_token=slide_token, slide_tiles=tile_server.slide_url(slide_token), dimensions=slide.dimensions,
                max_level=max_zoom(slide.dimensions), mpp=mpp, overlay_token=overlay_token,
                overlay_tiles=tile_server.overlay_url(overlay_token), opacity=opacity,
                outline=outline_spec(grid_token, tile_server.grid_url(grid_token), grid, t),
                selected=None if selected_index is None else (float(predictions.x[selected_index]), float(predictions.y[selected_index]), size0),
                tumors=tumors if show_annotations else None, focus=focus,
            )
            # One key for every slide: the element (and the view it holds) lives across reruns; a new
            # slide token makes it fit the new slide. A click or box is taken by select_picked (a
            # callback) before this reruns, so the viewer is drawn with the new selection at once.
            slide_viewer(data, key=state.SLIDE_VIEWER, on_select=select_picked)
            note = "" if mpp else " This slide has no microns per pixel: no scale bar or magnification (give it next to the upload or above)."
            st.caption(
                "Scroll or +/− to zoom (down to 2 screen pixels per slide pixel), drag to pan, ⌂ Home fits the whole slide, 1:1 is full "
                "resolution; the inset (bottom right) shows where you are, click it to move. Click a patch to inspect it, shift-drag a "
                f"box to pick the most suspicious patch in it. Cyan outlines: patches with F(I) ≥ t.{note}"
            )
        else:
            picture = heatmap_over_thumbnail(
                thumb, slide.dimensions, grid, colormap=colormap, opacity=opacity, cut=t if cut else None, outline=t, fade=fade,
            )
            figure = slide_overview_figure(
                picture, slide.dimensions, centres_x=centres_x, centres_y=centres_y, probs=predictions.prob,
                tumors=tumors if show_annotations else None, selected=selected_index,
            )
            st.caption("Cyan outlines: patches with F(I) ≥ t. Click a patch (or box-select an area) to inspect it.")
            event = st.plotly_chart(
                figure, key=f"{state.OVERVIEW_CHART}-{view}-{name}", on_select="rerun", selection_mode=("points", "box"), width="stretch",
                config={"scrollZoom": True, "displaylogo": False},
            )
            chosen = [int(p["point_index"]) for p in (event.selection.points if event else []) if p.get("curve_number", 0) == 0]
            if chosen:
                best = max(chosen, key=lambda i: predictions.prob[i])  # in a box, the most suspicious patch
                if best != selected_index or len(chosen) != st.session_state.get(state.SELECTION_COUNT, 1):
                    # Rerun at once: Streamlit, which keys the chart by its figure, starts from a fresh
                    # selection, so the next one counts.
                    select_patch(best, len(chosen))
                    st.rerun()
        st.html(colorbar_html(colormap, t, fade=fade))

        on_slide = selected_patch if selected_patch and selected_patch.get("slide") == name else None
        write_place(name, t, on_slide)
        count = st.session_state.get(state.SELECTION_COUNT, 1)
        if on_slide and count > 1:
            st.caption(f"{count} patches selected; showing the one with the highest F(I).")

        # -- downloads: the result in the tools of the trade ------------------------------------------
        with st.expander("Download this slide's result"):
            note = "synthetic demo" if loaded.is_demo else None
            cols = st.columns(4)
            cols[0].download_button(
                "QuPath GeoJSON (.geojson.gz)", lambda: qupath_geojson_bytes(predictions, t, compress=True),
                file_name=f"{name}-t{t:.2f}.geojson.gz", mime="application/gzip", on_click="ignore",
                help="Every patch as a QuPath tile with its probability as a measurement, plus the merged tumor regions at t.",
            )
            cols[1].download_button(
                "ASAP XML regions", lambda: build_asap_xml(predictions, t).encode(), file_name=f"{name}-t{t:.2f}.xml",
                mime="application/xml", on_click="ignore", help="The merged regions with F(I) ≥ t as ASAP / Camelyon16 polygons.",
            )
            cols[2].download_button(
                "Camelyon16 detections (CSV)", lambda: build_camelyon_csv(predictions, header=True).encode(), file_name=f"{name}.csv",
                mime="text/csv", on_click="ignore", help="prob,x,y of the local maxima (non-maximum suppression), as the Camelyon16 evaluation reads them.",
            )
            cols[3].download_button(
                "Overview PNG", lambda title=f"{name} · model {loaded.model_id} · t = {t:.2f}", dims=slide.dimensions: render_overview_png(
                    thumb, dims, predictions, t, width=1600, title=title, note=note, colormap=colormap, opacity=opacity, cut=cut, fade=fade,
                ),
                file_name=f"{name}-overview-t{t:.2f}.png", mime="image/png", on_click="ignore",
                help="The whole slide as the viewer shows it (colour map, opacity, hidden or transparent low F(I), outlines at t).",
            )

        # -- the selected patch -----------------------------------------------------------------------
        if on_slide:
            x, y = on_slide["x"], on_slide["y"]
            label = bool(label_patches([x], [y], size0, size0, tumors)[0]) if tumors else None
            col_img, col_info = st.columns([1, 1])
            picture = patch_picture(str(slide.path), Path(slide.path).stat().st_mtime, x, y, size0, loaded.model_id, context.given_mpp(name), loaded)
            col_img.image(picture, caption=f"Patch at level-0 ({x}, {y}), {size0} px; cyan: inner square")
            with col_info:
                st.metric("F(I), probability of cancer", f"{on_slide['prob']:.3f}")
                st.write(f"Called **{'cancer' if on_slide['prob'] >= t else 'no cancer'}** at t = {t:.2f}.")
                if label is not None:
                    st.write(f"Annotation label (inner square touches a tumor): **{'tumor' if label else 'normal'}**.")
                if view == "Deep zoom" and st.button("Zoom the viewer to this patch"):
                    focus_on(x + size0 / 2, y + size0 / 2)
                    context.rerun_here()
                if st.button("Explain this patch", type="primary"):
                    st.switch_page(navigation.page("explain.py"))


    st.session_state[state.VIEW_FRAGMENT] = state.REVIEW_VIEW  # a t move reruns view_at_t only (context.rerun_view)
    view_at_t()


slide_view()
