"""The cohort report: one self-contained HTML file to share an evaluation.

It holds, for one model and one threshold t:

* the cohort table: slide, label, split, max F(I), decision at t (and whether it is right),
  patches, tumors found;
* the three questions of the evaluation (:mod:`core.evaluation`), each with its numbers and
  figures at t: slide ROC and accuracy; patch ROC, precision-recall and confusion matrix;
  FROC and its score;
* one thumbnail per slide with the heatmap over it (patches with ``F(I) >= t`` outlined);
* the warnings of the evaluation and where the numbers come from; "synthetic demo" in the
  title and a banner when the model or the slides are the demo's.

Self-contained: plotly.js is inlined once in the head (each figure is a ``<div>`` and a
short script calling ``Plotly.newPlot``), pictures are ``data:`` URIs (JPEG), the CSS is
inline. No ``<script src>`` and no ``<link href>``: the file opens offline and anywhere.
It is ~5 MB, mostly plotly.js.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.evaluation.store_eval import CohortResults, evaluate_store_cohort
from core.export.common import check_threshold, demo_note, median_patch_side, write_bytes
from core.export.figures import evaluation_figures
from core.export.pictures import read_thumbnail, render_colorbar
from core.heatmap import heatmap_over_thumbnail, png_bytes, probability_grid

__all__ = ["QUESTIONS", "build_cohort_report", "render_cohort_report", "write_cohort_report"]

#: The three questions of the evaluation, as the report (and the app's threshold page) asks them.
QUESTIONS = (
    "Can we detect cancer somewhere in the slide?",
    "Can we detect cancer in patches?",
    "Do we detect the individual tumors?",
)

_TUMOR_OUTLINE = (57, 255, 20)  # the app's annotation colour (#39ff14)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto; max-width: 1180px; color: #222; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.meta { color: #555; font-size: 0.92em; }
.demo { background: #fdecea; border: 1px solid #f5c2c0; color: #8a1c1c; padding: 8px 12px; border-radius: 6px; margin: 12px 0; }
.warn { background: #fff8e1; border: 1px solid #ffe08a; padding: 6px 12px; border-radius: 6px; margin: 6px 0; font-size: 0.92em; }
table { border-collapse: collapse; font-size: 0.92em; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 4px 10px; text-align: left; }
th { background: #f6f6f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.wrong td { background: #fff1f0; }
.metrics { display: flex; gap: 28px; flex-wrap: wrap; margin: 8px 0 12px; }
.metric b { display: block; font-size: 1.35em; }
.metric span { color: #666; font-size: 0.85em; }
.figs { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.thumbs { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 14px; }
figure { margin: 0; }
figure img { width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #333; }
.note { color: #555; font-size: 0.9em; }
"""


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _metric(value: str, label: str) -> str:
    return f'<div class="metric"><b>{html.escape(value)}</b><span>{html.escape(label)}</span></div>'


def _jpeg_uri(image: np.ndarray, quality: int = 85) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure_div(fig: Any) -> str:
    # plotly.js is in the head once; each figure brings only its div and its newPlot call.
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": False})


def _draw_tumors(picture: np.ndarray, tumors: Any, scale: float) -> np.ndarray:
    """Return ``picture`` with the outlines of tumor polygons (level-0 px) drawn on it in green."""
    from PIL import ImageDraw
    from shapely.geometry import Polygon

    image = Image.fromarray(picture)
    draw = ImageDraw.Draw(image)
    for tumor in tumors or ():
        polygons = [tumor] if isinstance(tumor, Polygon) else list(getattr(tumor, "geoms", []))
        for polygon in polygons:
            for ring in (polygon.exterior, *polygon.interiors):
                xy = (np.asarray(ring.coords) / scale).ravel().tolist()  # level-0 px -> picture px
                draw.line(xy, fill=_TUMOR_OUTLINE, width=2, joint="curve")
    return np.asarray(image)


def _thumbnail_html(name: str, record: Any, pred: Any, tumors: Any, row: dict, threshold: float, width: int, colormap: str, opacity: float) -> str:
    caption = (
        f"<b>{html.escape(name)}</b> &middot; {html.escape(row['label'])} &middot; max F(I) {row['score']:.3f} "
        f"&middot; called {html.escape(row['predicted'])} at t = {threshold:.2f}"
    )
    if record is None or pred is None:
        return f"<figure><figcaption>{caption}<br><i>no slide record or predictions in the store</i></figcaption></figure>"
    dims = (int(record.width), int(record.height))
    thumb = read_thumbnail(record.path, width, dims)
    missing = thumb is None
    if missing:
        thumb = np.full((max(1, round(width * dims[1] / dims[0])), width, 3), 255, dtype=np.uint8)
    grid = probability_grid(pred.x, pred.y, pred.prob, median_patch_side(pred.width, pred.height) or 1.0)
    picture = heatmap_over_thumbnail(thumb, dims, grid, colormap=colormap, opacity=opacity, outline=threshold)
    if tumors:
        picture = _draw_tumors(picture, tumors, dims[0] / picture.shape[1])
    extra = "<br><i>slide image unavailable: heatmap on white</i>" if missing else ""
    return f'<figure><img alt="{html.escape(name)}" src="{_jpeg_uri(picture)}"><figcaption>{caption}{extra}</figcaption></figure>'


def build_cohort_report(store: Any, cohort: Any, *, threshold: float = 0.5, **options: Any) -> str:
    """Return the cohort report of one model at one threshold as one self-contained HTML page.

    ``options``: those of :func:`evaluate_store_cohort` (annotations, model_id, mode,
    params, allow_missing, nms_radius_um) and of :func:`render_cohort_report`
    (thumbnail_width, colormap, opacity, title).

    Raises:
        StoreError, EvaluationError, CohortError, AnnotationError: see
            :func:`core.evaluation.evaluate_store_cohort`.
    """
    style = {k: options.pop(k) for k in ("thumbnail_width", "colormap", "opacity", "title") if k in options}
    check_threshold(threshold)
    return render_cohort_report(evaluate_store_cohort(store, cohort, **options), threshold, **style)


def render_cohort_report(
    results: CohortResults,
    threshold: float = 0.5,
    *,
    thumbnail_width: int = 360,
    colormap: str = "inferno",
    opacity: float = 0.5,
    title: str | None = None,
) -> str:
    """Return the HTML page of evaluated cohort results at ``threshold`` (see the module docstring).

    Args:
        results: what :func:`evaluate_store_cohort` returns (or the app builds from its cache).
        threshold: t of the decisions, confusion matrices and marked points.
        thumbnail_width: width in pixels of each slide's picture.
        colormap, opacity: heatmap style of the thumbnails.
        title: the page's title (default "Cohort report: model <id>").

    Raises:
        ExportError: a threshold outside [0, 1].
    """
    from plotly.offline import get_plotlyjs

    t = check_threshold(threshold)
    result, model, cohort, predictions, records = results.evaluation, results.model, results.cohort, results.predictions, results.slides
    mode = result.mode
    figures = {name: _figure_div(fig) for name, fig in evaluation_figures(result, t).items()}
    report = result.at_threshold(t)
    s, p, f = report.slide, report.patch, report.froc
    rows = result.slide_table(t)
    splits = dict(zip(cohort.slides, cohort.splits))
    note = demo_note(model.get("metadata") or {}, [records[n] for n in cohort.slides if n in records])
    model_label = (model.get("metadata") or {}).get("label")
    heading = title or f"Cohort report: model {model['id']}" + (" (synthetic demo)" if note else "")
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    out: list[str] = []
    add = out.append
    add("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">")
    add(f"<title>{html.escape(heading)}</title>")
    add(f"<style>{_CSS}</style>")
    add(f'<script type="text/javascript">{get_plotlyjs()}</script>')
    add("</head>\n<body>")
    add(f"<h1>{html.escape(heading)}</h1>")
    add(
        f'<p class="meta">Model <b>{html.escape(model["id"])}</b>'
        + (f" ({html.escape(str(model_label))})" if model_label else "")
        + f", architecture {html.escape(str(model.get('arch')))} &middot; threshold t = {t:.2f} &middot; "
        f"FROC mode {html.escape(mode)} &middot; {len(cohort)} slides ({int(cohort.is_tumor.sum())} tumor, "
        f"{int((~cohort.is_tumor).sum())} normal) &middot; {result.patch.n:,} patches &middot; generated {now} "
        f"by Pathology Explorer" + (f" from {html.escape(results.source)}" if results.source else "") + "</p>"
    )
    if note:
        add(f'<div class="demo"><b>{html.escape(note[0].upper() + note[1:])}</b>: the numbers below show how the tools work, not how well a real model detects cancer.</div>')
    for message in result.warnings:
        add(f'<div class="warn">{html.escape(message)}</div>')

    # -- cohort table
    add("<h2>Cohort</h2>")
    add(
        "<table><thead><tr><th>slide</th><th>label</th><th>split</th><th>max F(I)</th>"
        f"<th>decision at t = {t:.2f}</th><th>right?</th><th>patches</th><th>tumors found</th></tr></thead><tbody>"
    )
    for row in rows:
        right = row["predicted"] == row["label"]
        tumors_cell = f"{row['n_detected']} / {row['n_tumors']}" if row["n_tumors"] else "&ndash;"
        add(
            f'<tr class="{"" if right else "wrong"}"><td>{html.escape(row["slide"])}</td><td>{row["label"]}</td>'
            f"<td>{html.escape(splits.get(row['slide']) or '')}</td><td class=\"num\">{row['score']:.3f}</td>"
            f"<td>{row['predicted']}</td><td>{'yes' if right else 'no'}</td><td class=\"num\">{row['n_patches']:,}</td>"
            f"<td class=\"num\">{tumors_cell}</td></tr>"
        )
    add("</tbody></table>")

    # -- question 1
    add(f"<h2>1. {QUESTIONS[0]}</h2>")
    add(
        '<p class="note">A slide is called positive when at least one of its patches has F(I) &ge; t; its score is '
        "the largest F(I) over its patches. The ROC curve sweeps t over the slide scores.</p>"
    )
    add('<div class="metrics">' + _metric(_pct(s.accuracy), f"slide accuracy at t = {t:.2f}") + _metric(_pct(s.sensitivity), "sensitivity")
        + _metric(_pct(s.specificity), "specificity") + _metric(_num(result.slide.auc), "slide ROC-AUC") + "</div>")
    if result.slide.auc_reason:
        add(f'<p class="note">{html.escape(result.slide.auc_reason)}</p>')
    add(f'<div class="figs">{figures["slide_roc"]}{figures["slide_confusion"]}</div>')

    # -- question 2
    add(f"<h2>2. {QUESTIONS[1]}</h2>")
    add(
        f'<p class="note">A patch is a tumor patch when its inner square (the central {int(round(result.inner_fraction * 100))}% '
        "of its side) touches a tumor annotation; it is called positive when F(I) &ge; t.</p>"
    )
    add('<div class="metrics">' + _metric(_num(result.patch.auc), "patch ROC-AUC") + _metric(_num(result.patch.average_precision), "average precision")
        + _metric(_pct(p.sensitivity), f"sensitivity at t = {t:.2f}") + _metric(_pct(p.precision), "precision")
        + _metric(_pct(p.specificity), "specificity") + "</div>")
    if result.patch.auc_reason:
        add(f'<p class="note">{html.escape(result.patch.auc_reason)}</p>')
    add(f'<div class="figs">{figures["patch_roc"]}{figures["patch_pr"]}{figures["patch_confusion"]}</div>')

    # -- question 3
    add(f"<h2>3. {QUESTIONS[2]}</h2>")
    if mode == "camelyon16":
        add(
            '<p class="note">Camelyon16 mode (the challenge\'s official rules): detections are local maxima of the '
            "probabilities (non-maximum suppression); tumors are the annotations dilated by 75 &micro;m; isolated tumor "
            "cells (major axis &lt; 275 &micro;m) neither count nor are missed; false positives are averaged over all slides.</p>"
        )
    else:
        add(
            '<p class="note">FROC: for each t, sensitivity is the share of all tumors (connected annotated regions, all '
            "slides) that contain at least one patch with F(I) &ge; t; AvgFP is the mean number of patches with F(I) &ge; t "
            "on the slides without cancer. The FROC score is the mean sensitivity at AvgFP = 1/4, 1/2, 1, 2, 4 and 8.</p>"
        )
    add('<div class="metrics">' + _metric(_num(result.froc.score), "FROC score") + _metric(f"{f.n_detected} / {result.froc.n_tumors}", f"tumors found at t = {t:.2f}")
        + _metric(_pct(f.sensitivity), "sensitivity") + _metric(_num(f.avg_fp, 2), "AvgFP") + "</div>")
    if result.froc.score_reason:
        add(f'<p class="note">{html.escape(result.froc.score_reason)}</p>')
    add(f'<div class="figs">{figures["froc"]}</div>')

    # -- slides
    add(f"<h2>Slides: heatmap of F(I), patches with F(I) &ge; {t:.2f} outlined</h2>")
    legend = "tumor annotations in green; " if results.tumors and any(results.tumors.values()) else ""
    add(f'<p class="note">{legend}colour of each patch: its F(I).</p>')
    add(f'<img alt="colour bar" style="width: 480px; max-width: 100%;" src="data:image/png;base64,{base64.b64encode(png_bytes(render_colorbar(480, t, colormap=colormap))).decode("ascii")}">')
    add('<div class="thumbs">')
    for row in rows:
        name = row["slide"]
        add(_thumbnail_html(name, records.get(name), predictions.get(name), results.tumors.get(name), row, t, thumbnail_width, colormap, opacity))
    add("</div>")
    add(
        '<p class="meta">Every number above is computed by Pathology Explorer (core.evaluation) from the stored patch '
        "predictions and the annotations; probabilities are F(I), the model's probability of cancer in patch I.</p>"
    )
    add("</body>\n</html>\n")
    return "\n".join(out)


def write_cohort_report(path: str | os.PathLike, store: Any, cohort: Any, **options: Any) -> Path:
    """Write :func:`build_cohort_report` to ``path`` (UTF-8 HTML); return the path."""
    return write_bytes(path, build_cohort_report(store, cohort, **options).encode("utf-8"))
