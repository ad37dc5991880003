"""Threshold tuning: slide ROC, patch ROC / PR, FROC and confusion matrices at the shared t."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import streamlit as st

from app import context, state, widgets
from app.charts import chart_json, plotly_chart
from app.figures import (
    confusion_cells,
    confusion_figure,
    froc_figure,
    point_at_t,
    pr_figure,
    roc_figure,
)
from core.cohort import Cohort, annotations_dir
from core.errors import PathologyError
from core.evaluation import FROC_TARGETS, evaluate_store_cohort
from core.export import evaluation_figures, figure_bytes, render_cohort_report
from core.inference import run_params

#: The figures core.export.evaluation_figures makes, in its order (the download buttons).
FIGURE_NAMES = ("slide_roc", "slide_confusion", "patch_roc", "patch_pr", "patch_confusion", "froc")

st.title("Threshold tuning")
loaded = widgets.require_model()
st.caption(widgets.model_caption(loaded))
store = widgets.require_store()


# A shared resource, not cached data: a t move gets the same (read-only) evaluation back without
# unpickling every patch's score and label.
@st.cache_resource(show_spinner="Evaluating the cohort (once; moving t does not recompute)...", max_entries=32)
def evaluate(db: str, model_id: str, params_json: str, runs_key: tuple, labels_json: str, annotations: str, mode: str, slide_params_json: str = "{}", mpp_json: str = "null"):
    """Return the cohort evaluation; keyed by the runs it reads, so new predictions refresh it."""
    results = evaluate_store_cohort(
        context._store(db), json.loads(labels_json), annotations=annotations or None, model_id=model_id,
        params=json.loads(params_json), slide_params=json.loads(slide_params_json), mode=mode, mpp=json.loads(mpp_json),
    )
    return results.evaluation


@st.cache_resource(show_spinner=False, max_entries=32)
def patch_curves(key: tuple, _result):
    """Return (fpr, tpr, precision, recall) of the patch ROC and PR curves of the evaluation ``key`` names (t-free: once per evaluation)."""
    fpr, tpr, _ = _result.patch.roc_curve()
    precision, recall, _ = _result.patch.pr_curve()
    return fpr, tpr, precision, recall


@st.cache_resource(show_spinner=False, max_entries=32)
def t_free_figures(key: tuple, _result, mode: str) -> dict[str, dict]:
    """Return the figures of the evaluation ``key`` without what t changes, as plain JSON (app.charts.chart_json;
    built and validated once per evaluation), and under "id" a name for them.

    The curves without their point at t; one confusion figure (its layout) for both matrices.
    app.figures.point_at_t and confusion_cells make what t changes on each rerun, and the charts
    (app.charts) keep the rest in the browser while "id" is the same.
    """
    fpr, tpr, precision, recall = patch_curves(key, _result)
    froc = _result.froc
    figures = {
        "slide_roc": roc_figure(_result.slide.fpr, _result.slide.tpr, None, title="Slide ROC", auc=_result.slide_auc).to_dict(),
        "patch_roc": roc_figure(fpr, tpr, None, title="Patch ROC", auc=_result.patch_auc).to_dict(),
        "patch_pr": pr_figure(precision, recall, None, ap=_result.patch.average_precision).to_dict(),
        "froc": froc_figure(
            froc.avg_fp, froc.sensitivity, None, score=_result.froc_score, targets=FROC_TARGETS, target_sensitivity=froc.target_sensitivity,
            title="FROC" + (" (Camelyon16 mode, official)" if mode == "camelyon16" else ""),
            x_title="average false positives per slide, all slides (AvgFP)" if mode == "camelyon16" else "average false positives per normal slide (AvgFP)",
        ).to_dict(),
        "confusion": confusion_figure([[0, 0], [0, 0]], title="").to_dict(),
    }
    charts = {name: chart_json(fig) for name, fig in figures.items()}
    charts["id"] = hashlib.sha1(repr(key).encode()).hexdigest()[:16]
    return charts


def curve_chart(name: str, figures: dict, point, t: float, *, log_x: bool = False) -> None:
    """Draw the curve ``name`` of ``figures`` (t_free_figures) with the point at t marked."""
    plotly_chart(figures[name], key=f"threshold-{name}", figure_id=f"{figures['id']}-{name}", extra=point_at_t(point, t, log_x=log_x))


def confusion_chart(name: str, figures: dict, matrix, title: str) -> None:
    """Draw a confusion matrix (rows: truth, columns: prediction) in the layout of ``figures``' confusion figure."""
    base = figures["confusion"]
    cells = confusion_cells(base, matrix)
    layout = {"title": {**base["layout"].get("title", {}), "text": title}}
    plotly_chart({"data": [], "layout": base["layout"]}, key=f"threshold-{name}", figure_id=f"{figures['id']}-{name}", extra=[cells], layout=layout)


table = context.cohort()
table = table[table["label"].isin(["tumor", "normal"])]
if table.empty:
    st.info(
        "Threshold tuning needs slides labelled tumor or normal, and tumor outlines for the patch and tumor questions: "
        "add a cohort.csv (columns slide,label[,split][,mpp]; labels tumor/normal) and annotations/<slide>.geojson or .xml "
        "files to the data folder."
    )
    st.stop()
splits = sorted(s for s in table["split"].unique() if s)
split = st.segmented_control("Slides", ["all", *splits], default="all", key="threshold_split") or "all"
if split != "all":
    table = table[table["split"] == split]
summaries = context.run_summaries(loaded)
done = [n for n in table["slide"] if summaries.get(n, {}).get("status") == "complete"]
missing = [n for n in table["slide"] if n not in done]
if missing:
    st.info(f"{len(missing)} of {len(table)} slides have no predictions with this model yet; the evaluation uses the {len(done)} that do.")
    if st.button(f"Run the model on the {len(missing)} missing slides"):
        update, bar = widgets.progress_callback("Predicting the cohort: slide")
        paths = table.set_index("slide")["path"]
        for i, name in enumerate(missing):
            try:
                loaded.runner.predict_slide(context.slide(paths[name]).path, store, loaded.tiling, slide_mpp=context.given_mpp(name))
            except PathologyError as exc:
                st.error(f"{name}: {exc}")
            update(i + 1, len(missing))
        bar.empty()
        st.rerun()
if not done:
    st.stop()

st.radio("FROC mode", ["patch (source material)", "Camelyon16 (official evaluation)"], horizontal=True, key=state.EVAL_MODE,
         help="Camelyon16: the challenge's evaluation, computed as its script does, but at each slide's own resolution "
         "(the script assumes 0.243 µm/px; `python -m core evaluate --mode camelyon16` does that, for leaderboard numbers).")
labels = {n: l for n, l in zip(table["slide"], table["label"]) if n in done}
splits = {n: (sp or None) for n, sp in zip(table["slide"], table["split"]) if n in done}
annotations = annotations_dir(context.data_dir()) if annotations_dir(context.data_dir()).is_dir() else None
if annotations is None:
    st.info(
        "This data folder has no annotations/ folder: slide-level numbers only. The patch and tumor questions need "
        "tumor outlines as annotations/<slide>.geojson or .xml (QuPath or ASAP)."
    )
runs_key = tuple(sorted(summaries[n]["run_id"] for n in done))
# Slides whose microns per pixel the user gave have runs of their own params.
slide_params = {
    n: run_params(loaded.tiling, float(m)) for n, m in zip(table["slide"], table["mpp"]) if n in labels and m is not None and not pd.isna(m)
}


def view_at_t() -> None:
    """The evaluation at the current t and FROC mode: every number, figure and table below the mode.

    The evaluation is cached (per runs, labels and mode) and so are its figures' t-free parts.
    """
    t = float(st.session_state[state.THRESHOLD])
    mode = "camelyon16" if str(st.session_state.get(state.EVAL_MODE, "")).startswith("Camelyon16") else "patch"
    # Camelyon16 mode here measures each slide at its own resolution (the official script assumes
    # 0.243 um/px for all; `python -m core evaluate --mode camelyon16` does that, for leaderboard numbers).
    own_mpp = {s.name: s.mpp for s in store.slides() if s.mpp and s.name in labels} if mode == "camelyon16" else None
    evaluation_key = (
        str(store.path), loaded.model_id, json.dumps(loaded.params, sort_keys=True), runs_key,
        json.dumps(labels, sort_keys=True), str(annotations) if annotations else "", mode, json.dumps(slide_params, sort_keys=True),
        json.dumps(own_mpp, sort_keys=True),
    )
    try:
        result = evaluate(*evaluation_key)
    except PathologyError as exc:
        st.error(f"The cohort cannot be evaluated: {exc}")
        st.stop()
    for warning in result.warnings:
        st.warning(warning)
    report = result.at_threshold(t)
    figures = t_free_figures(evaluation_key, result, mode)

    def pct(value) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}%"

    # -- 1. slides ------------------------------------------------------------------------------------
    st.header("1. Can we detect cancer somewhere in the slide?")
    st.markdown(
        "A slide is called positive when **at least one** of its patches has F(I) ≥ t; its score is the "
        "largest F(I) over its patches. The ROC curve sweeps t over the slide scores."
    )
    s = report.slide
    cols = st.columns(4)
    cols[0].metric(f"Slide accuracy at t = {t:.2f}", pct(s.accuracy))
    cols[1].metric("Sensitivity", pct(s.sensitivity))
    cols[2].metric("Specificity", pct(s.specificity))
    cols[3].metric("Slide ROC-AUC", "n/a" if result.slide_auc is None else f"{result.slide_auc:.3f}")
    left, right = st.columns(2)
    fpr_t = (s.fp / (s.fp + s.tn)) if s.fp + s.tn else None
    tpr_t = (s.tp / (s.tp + s.fn)) if s.tp + s.fn else None
    with left:
        curve_chart("slide_roc", figures, (fpr_t, tpr_t) if fpr_t is not None and tpr_t is not None else None, t)
    with right:
        confusion_chart("slide_confusion", figures, [[s.tn, s.fp], [s.fn, s.tp]], f"Slides at t = {t:.2f}")
    high = result.at_threshold(0.99).slide
    st.caption(
        f"At t = 0.99 the slide accuracy is {pct(high.accuracy)}: a threshold close to 1 can classify slides well "
        "while saying nothing about *where* the cancer is — which is what the next two questions ask."
    )

    # -- 2. patches -----------------------------------------------------------------------------------
    st.header("2. Can we detect cancer in patches?")
    st.markdown(
        f"A patch is a tumor patch when its inner square (the central {int(result.inner_fraction * 100)}% of its side) "
        "touches a tumor annotation. Each patch is called positive when F(I) ≥ t."
    )
    p = report.patch
    cols = st.columns(4)
    cols[0].metric("Patch ROC-AUC", "n/a" if result.patch_auc is None else f"{result.patch_auc:.3f}")
    cols[1].metric("Average precision", "n/a" if result.patch.average_precision is None else f"{result.patch.average_precision:.3f}")
    cols[2].metric(f"Sensitivity at t = {t:.2f}", pct(p.sensitivity))
    cols[3].metric("Precision", pct(p.precision))
    a, b, c = st.columns(3)
    point = (1 - p.specificity, p.sensitivity) if p.specificity is not None and p.sensitivity is not None else None
    with a:
        curve_chart("patch_roc", figures, point, t)
    with b:
        curve_chart("patch_pr", figures, (p.sensitivity, p.precision) if p.sensitivity is not None and p.precision is not None else None, t)
    with c:
        confusion_chart("patch_confusion", figures, p.confusion_matrix, f"Patches at t = {t:.2f}")
    example = result.at_threshold(0.75).patch
    st.caption(
        f"The source material's example threshold t = 0.75 gives here: {example.tp:,} true positives, {example.fp:,} false positives, "
        f"{example.fn:,} false negatives, {example.tn:,} true negatives."
    )

    # -- 3. tumors ------------------------------------------------------------------------------------
    st.header("3. Do we detect the individual tumors?")
    if mode == "patch":
        st.markdown(
            "**FROC** — for each t: *sensitivity* is the share of all tumors (connected annotated regions, all slides) "
            "that contain at least one patch with F(I) ≥ t; *AvgFP* is the mean number of patches with F(I) ≥ t on the "
            "slides without cancer. The FROC score is the mean sensitivity at AvgFP = 1/4, 1/2, 1, 2, 4 and 8."
        )
    else:
        st.markdown(
            "**Camelyon16 mode** (the challenge's official evaluation, computed as its script does): detections are local "
            "maxima of the probabilities (non-maximum suppression); tumors are the annotations on the level-5 mask dilated "
            "by 75 µm; isolated tumor cells (major axis < 275 µm) neither count nor are missed; the lowest probability is "
            "not a threshold; false positives are averaged over *all* slides."
        )
    f = report.froc
    cols = st.columns(4)
    cols[0].metric("FROC score", "n/a" if result.froc_score is None else f"{result.froc_score:.3f}")
    cols[1].metric(f"Tumors found at t = {t:.2f}", f"{f.n_detected} / {result.n_tumors}")
    cols[2].metric("Sensitivity", pct(f.sensitivity))
    cols[3].metric("AvgFP", "n/a" if f.avg_fp is None else f"{f.avg_fp:.2f}")
    if result.froc_score is None and result.froc.score_reason:
        st.caption(result.froc.score_reason)
    if mode == "camelyon16" and result.camelyon is not None:
        used = sorted({f"{v:g}" for v in result.camelyon.mpp.values()})
        st.caption(
            f"Camelyon16 mode: measured at each slide's own resolution ({', '.join(used)} µm/px), so distances in µm are right "
            "for these slides; the challenge's script assumes 0.243 µm/px for every slide (`python -m core evaluate --mode "
            "camelyon16` uses it, for numbers comparable with the leaderboard)."
        )
    curve_chart("froc", figures, (f.avg_fp, f.sensitivity), t, log_x=True)
    with st.expander("Per-slide table at t"):
        st.dataframe(result.slide_table(t), hide_index=True, width="stretch")

    # -- downloads ------------------------------------------------------------------------------------
    with st.expander("Download the figures and a cohort report"):
        fmt = st.radio("Figure format", ["html", "png", "svg"], horizontal=True, key="figure_format",
                       help="HTML is Plotly's own self-contained file; PNG and SVG are drawn with matplotlib (no browser engine here).")
        cols = st.columns(3)
        # The figures are made when a button is pressed, not on every rerun (a t move).
        for i, fig_name in enumerate(FIGURE_NAMES):
            cols[i % 3].download_button(
                f"{fig_name} (.{fmt})", (lambda n=fig_name, fmt=fmt, result=result, t=t: figure_bytes(evaluation_figures(result, t)[n], fmt)),
                file_name=f"{fig_name}-t{t:.2f}.{fmt}", on_click="ignore", key=f"download-{fig_name}",
            )

        # The download runs in another thread, without session state: bind everything it needs now.
        def report_html(store=store, cohort=Cohort(tuple(labels), tuple(labels.values()), tuple(splits[n] for n in labels)), annotations=annotations,
                        model_id=loaded.model_id, mode=mode, params=loaded.params, slide_params=dict(slide_params), mpp=own_mpp, t=t) -> bytes:
            cohort_results = evaluate_store_cohort(
                store, cohort, annotations=annotations, model_id=model_id, mode=mode, params=params, slide_params=slide_params, mpp=mpp,
            )
            return render_cohort_report(cohort_results, t).encode()

        st.download_button(
            "Cohort report (one offline HTML file)", report_html, file_name=f"cohort-report-t{t:.2f}.html", mime="text/html",
            on_click="ignore", type="primary",
            help="The cohort table, the three evaluation views at t and a thumbnail with the heatmap per slide, in one file that opens offline.",
        )

# Not named in state.VIEW_FRAGMENT: a t move or a change of mode reruns the whole page. Measured
# (bench_browser --against, interleaved with the tree before), a t move that reran only this
# fragment took longer in the browser than one that reran the page (1.86 s against 1.29 s median,
# load 11-19, 2 cores): the six plotly charts cost more when their fragment reruns alone (not
# investigated further). What a t move saves here is the figures' building (t_free_figures).
view_at_t()
