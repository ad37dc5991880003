"""Evaluation figures (ROC, precision-recall, FROC, confusion matrix) and their export.

The builders take plain arrays and return Plotly figures (as ``app/figures.py`` does for the
app; core cannot import app, so these few lines of layout are repeated here).
:func:`evaluation_figures` builds the three evaluation views of a
:class:`~core.evaluation.CohortEvaluation` at one threshold.

:func:`figure_bytes` exports a figure as HTML, PNG or SVG:

* **HTML**: Plotly's ``to_html(include_plotlyjs=True, full_html=True)``: one self-contained
  file (plotly.js inlined, ~4.8 MB) that opens offline.
* **PNG / SVG**: Plotly's own static export needs the ``kaleido`` package and a Chrome it
  downloads; neither can be installed here (no internet). When kaleido is absent, or fails,
  the same traces (lines, markers, heatmap cells with their text, axis titles, log axes,
  ranges) are drawn with matplotlib (Agg) instead, so PNG and SVG always work; they look
  plainer than Plotly's. :func:`static_engine` says which engine will be used.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from core.export.common import ExportError, write_bytes

__all__ = [
    "FIGURE_FORMATS",
    "MAX_CURVE_POINTS",
    "confusion_figure",
    "evaluation_figures",
    "figure_bytes",
    "froc_figure",
    "pr_figure",
    "roc_figure",
    "static_engine",
    "thin_curve",
    "write_figure",
]

log = logging.getLogger(__name__)

FIGURE_FORMATS = ("html", "png", "svg")
#: Curves are subsampled to this many points for drawing (a patch ROC can have millions).
MAX_CURVE_POINTS = 2000
_DASHES = {"dot": ":", "dash": "--", "dashdot": "-.", "longdash": "--", "solid": "-"}
_MARKERS = {"x": "x", "circle": "o", "square": "s", "diamond": "D", "cross": "P"}


# --------------------------------------------------------------------------- builders


def thin_curve(*arrays: Any, limit: int = MAX_CURVE_POINTS) -> list[np.ndarray]:
    """Return the arrays subsampled to at most ``limit`` points (both ends kept)."""
    n = len(arrays[0])
    if n <= limit:
        return [np.asarray(a, dtype=np.float64) for a in arrays]
    index = np.unique(np.r_[np.linspace(0, n - 1, limit).astype(int), n - 1])
    return [np.asarray(a, dtype=np.float64)[index] for a in arrays]


def _curve_figure(title: str, x_title: str, y_title: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title=dict(text=title, font=dict(size=15)), width=520, height=400, margin=dict(l=60, r=20, t=50, b=80),
        xaxis_title=x_title, yaxis_title=y_title, legend=dict(orientation="h", y=-0.22), template="plotly_white",
    )
    return fig


def _point_trace(point: tuple[float | None, float | None] | None, threshold: float) -> go.Scatter | None:
    if point is None or point[0] is None or point[1] is None:
        return None
    return go.Scatter(x=[point[0]], y=[point[1]], mode="markers", name=f"t = {threshold:.2f}", marker=dict(size=13, color="#d62728", symbol="x"))


def roc_figure(fpr, tpr, point=None, *, title: str = "ROC", auc: float | None = None, threshold: float = 0.5) -> go.Figure:
    """Return a ROC curve (false positive rate vs true positive rate), the point at t marked."""
    fig = _curve_figure(title, "false positive rate (1 - specificity)", "true positive rate (sensitivity)")
    fpr, tpr = thin_curve(fpr, tpr)
    fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"ROC (AUC {auc:.3f})" if auc is not None else "ROC (AUC undefined)", line=dict(color="#1f77b4", width=2)))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line=dict(color="grey", dash="dot", width=1)))
    marker = _point_trace(point, threshold)
    if marker is not None:
        fig.add_trace(marker)
    fig.update_xaxes(range=[-0.01, 1.01])
    fig.update_yaxes(range=[-0.01, 1.01])
    return fig


def pr_figure(precision, recall, point=None, *, ap: float | None = None, threshold: float = 0.5, title: str = "Patch precision-recall") -> go.Figure:
    """Return a precision-recall curve, the point (recall, precision) at t marked."""
    fig = _curve_figure(title, "recall (sensitivity)", "precision")
    recall, precision = thin_curve(recall, precision)
    fig.add_trace(go.Scatter(x=recall, y=precision, mode="lines", name=f"PR (AP {ap:.3f})" if ap is not None else "PR", line=dict(color="#2ca02c", width=2)))
    marker = _point_trace(point, threshold)
    if marker is not None:
        fig.add_trace(marker)
    fig.update_xaxes(range=[-0.01, 1.01])
    fig.update_yaxes(range=[-0.01, 1.01])
    return fig


def froc_figure(avg_fp, sensitivity, point=None, *, score: float | None = None, targets=(), target_sensitivity=(), threshold: float = 0.5, title: str = "FROC", x_title: str = "average false positives per normal slide (AvgFP)") -> go.Figure:
    """Return a FROC curve (AvgFP on a log axis vs sensitivity), the point at t and the score's targets.

    Zero false positives are drawn at AvgFP 1e-3 (a log axis has no 0).
    """
    fig = _curve_figure(title, x_title, "sensitivity (share of tumors found)")
    avg_fp = np.asarray(avg_fp, dtype=np.float64)
    sensitivity = np.asarray(sensitivity, dtype=np.float64)
    ok = np.isfinite(avg_fp) & np.isfinite(sensitivity)
    avg_fp, sensitivity = thin_curve(avg_fp[ok], sensitivity[ok])
    label = f"FROC (score {score:.3f})" if score is not None else "FROC (score undefined)"
    fig.add_trace(go.Scatter(x=np.maximum(avg_fp, 1e-3), y=sensitivity, mode="lines", name=label, line=dict(color="#9467bd", width=2, shape="hv")))
    if len(target_sensitivity):
        fig.add_trace(go.Scatter(x=list(targets), y=list(np.asarray(target_sensitivity, dtype=float)), mode="markers", name="score targets (1/4 ... 8 FP)", marker=dict(size=8, color="#ff7f0e")))
    if point is not None and point[0] is not None and point[1] is not None:
        point = (max(point[0], 1e-3), point[1])
    marker = _point_trace(point, threshold)
    if marker is not None:
        fig.add_trace(marker)
    fig.update_xaxes(type="log")
    fig.update_yaxes(range=[-0.01, 1.01])
    return fig


def confusion_figure(matrix, *, title: str, labels=("normal", "tumor")) -> go.Figure:
    """Return a 2 x 2 confusion matrix (rows: truth, columns: prediction) with the counts in the cells."""
    z = np.asarray(matrix)
    text = [[f"{int(v):,}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"predicted {lab}" for lab in labels], y=[f"true {lab}" for lab in labels], text=text,
        texttemplate="%{text}", colorscale="Blues", showscale=False, hoverinfo="skip",
    ))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=dict(text=title, font=dict(size=15)), width=400, height=300, margin=dict(l=10, r=10, t=50, b=10), template="plotly_white")
    return fig


def evaluation_figures(result: Any, threshold: float) -> dict[str, go.Figure]:
    """Return the figures of the three evaluation views at ``threshold``.

    Args:
        result: a :class:`core.evaluation.CohortEvaluation`.

    Returns:
        ``slide_roc``, ``slide_confusion`` (question 1), ``patch_roc``, ``patch_pr``,
        ``patch_confusion`` (question 2), ``froc`` (question 3).
    """
    from core.evaluation import FROC_TARGETS

    t = float(threshold)
    report = result.at_threshold(t)
    s, p, f = report.slide, report.patch, report.froc
    slide_point = (s.fp / (s.fp + s.tn), s.tp / (s.tp + s.fn)) if s.fp + s.tn and s.tp + s.fn else None
    patch_point = (1 - p.specificity, p.sensitivity) if p.specificity is not None and p.sensitivity is not None else None
    fpr, tpr, _ = result.patch.roc_curve()
    precision, recall, _ = result.patch.pr_curve()
    camelyon = result.mode.startswith("camelyon16")
    return {
        "slide_roc": roc_figure(result.slide.fpr, result.slide.tpr, slide_point, title="Slide ROC", auc=result.slide.auc, threshold=t),
        "slide_confusion": confusion_figure([[s.tn, s.fp], [s.fn, s.tp]], title=f"Slides at t = {t:.2f}"),
        "patch_roc": roc_figure(fpr, tpr, patch_point, title="Patch ROC", auc=result.patch.auc, threshold=t),
        "patch_pr": pr_figure(
            precision, recall, (p.sensitivity, p.precision) if p.sensitivity is not None and p.precision is not None else None,
            ap=result.patch.average_precision, threshold=t,
        ),
        "patch_confusion": confusion_figure(p.confusion_matrix, title=f"Patches at t = {t:.2f}"),
        "froc": froc_figure(
            result.froc.avg_fp, result.froc.sensitivity, (f.avg_fp, f.sensitivity), score=result.froc.score,
            targets=FROC_TARGETS, target_sensitivity=result.froc.target_sensitivity, threshold=t,
            title={"camelyon16": "FROC (Camelyon16 mode, official)", "camelyon16-polygons": "FROC (Camelyon16 rules on polygons)"}.get(result.mode, "FROC"),
            x_title="average false positives per slide (AvgFP)" if camelyon else "average false positives per normal slide (AvgFP)",
        ),
    }


# --------------------------------------------------------------------------- export


def static_engine() -> str:
    """Return the engine PNG/SVG exports use: ``"kaleido"`` when installed, else ``"matplotlib"``."""
    return "kaleido" if importlib.util.find_spec("kaleido") is not None else "matplotlib"


def figure_bytes(fig: go.Figure, fmt: str, *, scale: float = 2.0) -> bytes:
    """Return a figure as a file's content: ``"html"``, ``"png"`` or ``"svg"``.

    HTML is Plotly's self-contained page (plotly.js inlined). PNG and SVG come from Plotly's
    kaleido engine when it is installed and works, else from matplotlib drawing the same
    traces (see the module docstring); ``scale`` multiplies the pixel size of a PNG.

    Raises:
        ExportError: unknown format, or a trace type the matplotlib fallback cannot draw.
    """
    fmt = fmt.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise ExportError(f"figure format must be one of {', '.join(FIGURE_FORMATS)}, got {fmt!r}")
    if fmt == "html":
        return fig.to_html(include_plotlyjs=True, full_html=True, config={"displaylogo": False}).encode("utf-8")
    if static_engine() == "kaleido":
        try:
            return fig.to_image(format=fmt, scale=scale)
        except Exception as exc:  # noqa: BLE001 -- kaleido fails in many ways (no Chrome); fall back, and say so
            log.warning("Plotly static export (kaleido) failed, drawing with matplotlib instead: %s", exc)
    return _matplotlib_bytes(fig, fmt, scale)


def write_figure(path: str | os.PathLike, fig: go.Figure, fmt: str | None = None) -> Path:
    """Write a figure to ``path``, the format from ``fmt`` or else the file's suffix; return the path."""
    fmt = fmt or Path(path).suffix.lstrip(".")
    return write_bytes(path, figure_bytes(fig, fmt))


# --------------------------------------------------------------------------- matplotlib fallback


def _text(value: Any) -> str:
    """Return the plain text of a Plotly title (string or title object), HTML tags removed."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else getattr(value, "text", None) or ""
    return text.replace("<br>", "\n").replace("<b>", "").replace("</b>", "")


def _matplotlib_bytes(fig: go.Figure, fmt: str, scale: float) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layout = fig.layout
    width_px = layout.width or 700
    height_px = layout.height or 450
    dpi = 100
    mfig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    FigureCanvasAgg(mfig)
    ax = mfig.add_subplot(1, 1, 1)
    legend = False
    heatmap = False
    for trace in fig.data:
        if trace.type in ("scatter", "scattergl"):
            legend |= _draw_scatter(ax, trace)
        elif trace.type == "heatmap":
            _draw_heatmap(ax, trace)
            heatmap = True
        else:
            raise ExportError(f"the matplotlib fallback cannot draw a {trace.type!r} trace; install kaleido for this figure")
    xaxis, yaxis = layout.xaxis, layout.yaxis
    if xaxis.type == "log":
        ax.set_xscale("log")
    if yaxis.type == "log":
        ax.set_yscale("log")
    if xaxis.range is not None:
        ax.set_xlim(*xaxis.range)
    if yaxis.range is not None:
        ax.set_ylim(*yaxis.range)
    # Plotly draws heatmap row 0 at the bottom unless the axis is reversed; imshow at the top.
    if (yaxis.autorange == "reversed") != heatmap:
        ax.invert_yaxis()
    ax.set_xlabel(_text(xaxis.title))
    ax.set_ylabel(_text(yaxis.title))
    ax.set_title(_text(layout.title), fontsize=12)
    if legend:
        ax.legend(fontsize=8, loc="lower right")
    mfig.tight_layout()
    buffer = io.BytesIO()
    # SVG: the same drawing as vectors; metadata Date off so the bytes are reproducible.
    kwargs = {"dpi": dpi * scale} if fmt == "png" else {"metadata": {"Date": None}}
    mfig.savefig(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _draw_scatter(ax: Any, trace: Any) -> bool:
    """Draw a Plotly scatter trace; return True if it has a legend name."""
    x = np.asarray(trace.x if trace.x is not None else [], dtype=np.float64)
    y = np.asarray(trace.y if trace.y is not None else [], dtype=np.float64)
    mode = trace.mode or "lines"
    name = trace.name if trace.showlegend is not False else None
    label = name or None
    if "lines" in mode:
        line = trace.line
        style = dict(color=line.color or None, linewidth=line.width or 1.5, linestyle=_DASHES.get(line.dash or "solid", "-"))
        if line.shape == "hv":
            ax.step(x, y, where="post", label=label, **style)
        else:
            ax.plot(x, y, label=label, **style)
        label = None  # one legend entry per trace
    if "markers" in mode:
        marker = trace.marker
        size = marker.size if isinstance(marker.size, (int, float)) else 6
        ax.scatter(x, y, s=float(size) ** 2, marker=_MARKERS.get(marker.symbol or "circle", "o"), color=marker.color or None, label=label, zorder=3)
    return bool(name)


def _draw_heatmap(ax: Any, trace: Any) -> None:
    z = np.asarray(trace.z, dtype=np.float64)
    ax.imshow(z, cmap="Blues", aspect="auto")
    xs = list(trace.x) if trace.x is not None else list(range(z.shape[1]))
    ys = list(trace.y) if trace.y is not None else list(range(z.shape[0]))
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_yticks(range(len(ys)), [str(v) for v in ys])
    if trace.text is not None:
        top = z.max() if z.size else 0
        for r, row in enumerate(trace.text):
            for c, value in enumerate(row):
                ax.text(c, r, str(value), ha="center", va="center", fontsize=13, color="white" if z[r, c] > top / 2 else "black")
