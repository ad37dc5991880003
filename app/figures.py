"""Plotly figure builders: plain data in, figures out (testable without a browser).

Coordinates on slide figures are level-0 pixels, y pointing down, as everywhere in core.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import plotly.graph_objects as go
from PIL import Image

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
        fig.add_trace(
            go.Scatter(
                x=[centres_x[selected]], y=[centres_y[selected]], mode="markers", name="selected patch",
                marker=dict(symbol="square-open", size=16, color="cyan", line=dict(width=3)), hoverinfo="skip",
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


def colorbar_figure(colormap: str, threshold: float, height: int = 70) -> go.Figure:
    """Return a horizontal colour bar for F(I) in [0, 1] with a marker at the threshold t."""
    values = np.linspace(0, 1, 101)
    fig = go.Figure(go.Heatmap(z=[values], x=values, colorscale=colormap.replace("_r", ""), reversescale=colormap.endswith("_r"), showscale=False, hoverinfo="skip"))
    fig.add_vline(x=threshold, line=dict(color="cyan", width=3))
    fig.update_yaxes(visible=False)
    fig.update_xaxes(title=None, tickvals=[0, 0.25, 0.5, 0.75, 1.0])
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=5, b=20))
    return fig
