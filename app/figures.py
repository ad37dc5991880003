"""Plotly figure builders: plain data in, figures out (testable without a browser).

Coordinates on slide figures are level-0 pixels, y pointing down, as everywhere in core.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from core.export.figures import (
    confusion_figure,
    froc_figure,
    pr_figure,
    roc_figure,
    thin_curve,
)

__all__ = [
    "PATCH_TRACE",
    "colorbar_html",
    "confusion_cells",
    "confusion_figure",
    "froc_figure",
    "image_data_uri",
    "objective_figure",
    "outline_xy",
    "point_at_t",
    "pr_figure",
    "roc_figure",
    "slide_overview_figure",
    "thin_curve",
    "training_figures",
]

PATCH_TRACE = "patches"


def image_data_uri(image: np.ndarray, quality: int = 88) -> str:
    """Return an RGB uint8 image as a JPEG data URI (compact enough to resend on every rerun)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def outline_xy(polygons) -> tuple[list, list]:
    """Return x, y lists drawing the exterior and holes of shapely polygons, separated by None."""
    xs: list = []
    ys: list = []
    for polygon in polygons:
        for ring in [polygon.exterior, *polygon.interiors]:
            coords = np.asarray(ring.coords)
            xs += coords[:, 0].tolist() + [None]
            ys += coords[:, 1].tolist() + [None]
    return xs, ys


def slide_overview_figure(
    picture: np.ndarray,
    dimensions: tuple[int, int],
    *,
    centres_x: np.ndarray | None = None,
    centres_y: np.ndarray | None = None,
    probs: np.ndarray | None = None,
    tumors: list | None = None,
    selected: int | None = None,
    height: int = 640,
) -> go.Figure:
    """Return the slide overview: a picture of the whole slide, selectable patch markers, outlines.

    Args:
        picture: RGB picture covering the whole slide (e.g. thumbnail with heatmap).
        dimensions: (width, height) of level 0; the axes are level-0 pixels.
        centres_x, centres_y, probs: patch centres (level-0 px) and F(I); invisible markers
            that make each patch clickable / box-selectable, with the probability on hover.
        tumors: annotation polygons (level-0 px) drawn as outlines.
        selected: index of the selected patch, drawn as a square marker.
    """
    width0, height0 = dimensions
    fig = go.Figure()
    fig.add_layout_image(
        source=image_data_uri(picture), xref="x", yref="y", x=0, y=0, sizex=width0, sizey=height0,
        sizing="stretch", layer="below",
    )
    if centres_x is not None and len(centres_x):
        fig.add_trace(
            go.Scattergl(
                x=centres_x, y=centres_y, mode="markers", name=PATCH_TRACE,
                marker=dict(size=7, color="rgba(0,0,0,0)"),
                customdata=probs, hovertemplate="x %{x:.0f}, y %{y:.0f}<br>F(I) = %{customdata:.3f}<extra></extra>",
                selected=dict(marker=dict(color="cyan", size=10)),
                unselected=dict(marker=dict(opacity=0)),
                showlegend=False,
            )
        )
    if tumors:
        xs, ys = outline_xy(tumors)
        fig.add_trace(
            go.Scatter(x=xs, y=ys, mode="lines", name="tumor annotation", line=dict(color="#39ff14", width=1.6), hoverinfo="skip")
        )
    if selected is not None and centres_x is not None:
        # White over a dark halo, as in the deep-zoom viewer: apart from the cyan outlines at t.
        # The legend shows the halo (a white mark would not show on the legend's white).
        for name, colour, width in (("selected patch", "rgba(0,0,0,0.75)", 6), ("selected patch (white)", "white", 3)):
            fig.add_trace(
                go.Scatter(
                    x=[centres_x[selected]], y=[centres_y[selected]], mode="markers", name=name, showlegend=name == "selected patch",
                    marker=dict(symbol="square-open", size=16, color=colour, line=dict(width=width)), hoverinfo="skip",
                )
            )
    fig.update_xaxes(range=[0, width0], visible=False, constrain="domain")
    fig.update_yaxes(range=[height0, 0], visible=False, scaleanchor="x", constrain="domain")
    fig.update_layout(
        height=height, margin=dict(l=0, r=0, t=0, b=0), uirevision="overview", dragmode="zoom",
        legend=dict(orientation="h", yanchor="bottom", y=0.0, xanchor="left", x=0.0, bgcolor="rgba(255,255,255,0.7)"),
        plot_bgcolor="white",
    )
    return fig


def colorbar_html(colormap: str, threshold: float, *, fade: bool = False, label: str = "F(I), probability of cancer") -> str:
    """Return a self-contained HTML colour bar for F(I) in [0, 1], with the threshold t marked.

    Plain HTML and CSS (no plotly layout): a gradient from the same matplotlib colour map as the
    heatmap (so its colours are exactly the overlay's), shown with the overlay's alpha under
    ``fade`` ("transparent low F(I)") over a light checkerboard, ticks at 0, 0.25, ..., 1 and a
    cyan mark with its label at ``threshold``. It spans its container's width.
    """
    from matplotlib import colormaps

    from core.heatmap import OUTLINE_RGB, fade_weight

    stops = np.linspace(0, 1, 33)
    rgb = (colormaps[colormap](stops)[:, :3] * 255).round().astype(int)
    alpha = fade_weight(stops) if fade else np.ones_like(stops)
    gradient = ", ".join(f"rgba({r},{g},{b},{a:.3f}) {100 * p:.2f}%" for (r, g, b), a, p in zip(rgb, alpha, stops))
    t = float(np.clip(threshold, 0, 1))
    mark = "rgb({},{},{})".format(*OUTLINE_RGB)
    ticks = "".join(
        f'<span style="position:absolute;left:{100 * v:.0f}%;transform:translateX(-{100 * v:.0f}%);">{v:g}</span>'
        for v in (0, 0.25, 0.5, 0.75, 1)
    )
    checker = "repeating-conic-gradient(#e4e4e4 0% 25%, #ffffff 0% 50%) 0 0 / 12px 12px"
    return (
        '<div data-testid="pathexColorbar" role="img" '
        f'aria-label="Colour bar of {label} ({colormap}), t = {t:.2f}" '
        'style="position:relative;width:100%;box-sizing:border-box;padding:18px 2px 0 2px;font:12px/1.2 sans-serif;color:#333;">'
        f'<div style="position:absolute;top:0;left:calc(2px + (100% - 4px) * {t:.4f});transform:translateX(-50%);'
        f'font-weight:600;white-space:nowrap;" data-testid="pathexColorbarLabel">t = {t:.2f}</div>'
        f'<div style="position:relative;height:16px;border:1px solid #999;background:linear-gradient(to right, {gradient}), {checker};">'
        f'<div data-testid="pathexColorbarMark" style="position:absolute;top:-4px;bottom:-4px;left:calc({100 * t:.3f}% - 2px);'
        f'width:4px;background:{mark};outline:1px solid #00283c;"></div></div>'
        f'<div style="position:relative;height:16px;margin-top:2px;">{ticks}</div>'
        f'<div style="text-align:center;color:#555;">{label}{" · low F(I) transparent" if fade else ""}</div>'
        "</div>"
    )


# -- evaluation curves ------------------------------------------------------------------------
# The ROC, precision-recall, FROC and confusion figures are core's (the report and the CLI
# draw the same ones; imported above): plain arrays in, plotly figures out.


def _curve_figure(title: str, x_title: str, y_title: str, height: int = 360) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title=dict(text=title, font=dict(size=15)), height=height, margin=dict(l=50, r=10, t=40, b=45),
        xaxis_title=x_title, yaxis_title=y_title, legend=dict(orientation="h", y=-0.25),
        uirevision=title,
    )
    return fig


# -- training runs --------------------------------------------------------------------------------
def training_figures(epochs, train_loss, val_loss, val_auc, lr) -> tuple[go.Figure, go.Figure, go.Figure]:
    """Return three figures of a run's metrics.csv: losses, validation AUC, learning rate (per epoch)."""
    loss = _curve_figure("Loss (binary cross-entropy)", "epoch", "loss", height=300)
    loss.add_trace(go.Scatter(x=epochs, y=train_loss, mode="lines+markers", name="train"))
    loss.add_trace(go.Scatter(x=epochs, y=val_loss, mode="lines+markers", name="validation"))
    auc = _curve_figure("Validation patch ROC-AUC", "epoch", "AUC", height=300)
    auc.add_trace(go.Scatter(x=epochs, y=val_auc, mode="lines+markers", name="val AUC", line=dict(color="#2ca02c")))
    if len(val_auc):
        best = int(np.nanargmax(np.asarray(val_auc, dtype=float)))
        auc.add_trace(go.Scatter(x=[epochs[best]], y=[val_auc[best]], mode="markers", name="best (kept)", marker=dict(size=13, symbol="star", color="#d62728")))
    rate = _curve_figure("Learning rate", "epoch", "learning rate", height=300)
    rate.add_trace(go.Scatter(x=epochs, y=lr, mode="lines+markers", name="lr", line=dict(shape="hv", color="#9467bd")))
    rate.update_yaxes(type="log")
    return loss, auc, rate


def objective_figure(objective, activation) -> go.Figure:
    """Return activation maximization's objective y_i(x) - lambda ||x||^2 and y_i(x) per step."""
    fig = _curve_figure("Gradient ascent", "step", "value", height=300)
    steps = np.arange(len(objective))
    fig.add_trace(go.Scatter(x=steps, y=objective, mode="lines", name="y_i(x) − λ‖x‖²"))
    fig.add_trace(go.Scatter(x=steps, y=activation, mode="lines", name="y_i(x)", line=dict(dash="dot")))
    return fig


# -- figures at t from a cached t-free part ---------------------------------------------------
# Building a plotly figure validates every property (tens of ms per figure, most of a Threshold
# tuning rerun); a t move changes only the point at t (curves) or the counts (confusion matrices).
# The page builds each figure once per evaluation with core's builder, keeps it as plain JSON, and
# hands its charts (app.charts) what t changes: the base's traces plus these, the base's layout
# with the new title, the same figure as core's builder draws at t (tests/test_app_pages.py
# composes them as the charts do and compares).
def point_at_t(point: tuple[float | None, float | None] | None, threshold: float, *, log_x: bool = False) -> list[dict]:
    """Return the trace that marks the point at t on a curve figure, as plain JSON ([] when the point is undefined).

    ``log_x``: the FROC figure's log axis, where AvgFP 0 is drawn at 1e-3 (as core.export.figures.froc_figure does).
    """
    from core.export.figures import _point_trace

    if log_x and point is not None and point[0] is not None and point[1] is not None:
        point = (max(float(point[0]), 1e-3), point[1])
    if point is not None and point[0] is not None and point[1] is not None:
        point = (float(point[0]), float(point[1]))
    marker = _point_trace(point, threshold)
    return [] if marker is None else [json.loads(marker.to_json())]


def confusion_cells(base: dict, matrix) -> dict:
    """Return the heatmap trace of core's confusion figure ``base`` (as a dict) holding another matrix, as plain JSON."""
    z = [[int(v) for v in row] for row in np.asarray(matrix)]
    return {**base["data"][0], "z": z, "text": [[f"{v:,}" for v in row] for row in z]}
