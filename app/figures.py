"""Plotly figure builders: plain data in, figures out (testable without a browser).

Coordinates on slide figures are level-0 pixels, y pointing down, as everywhere in core.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from core.export.figures import confusion_figure, froc_figure, pr_figure, roc_figure, thin_curve

__all__ = [
    "PATCH_TRACE", "image_data_uri", "outline_xy", "slide_overview_figure", "colorbar_figure", "slide_viewer_figure",
    "training_figures", "objective_figure", "roc_figure", "pr_figure", "froc_figure", "confusion_figure", "thin_curve",
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


def colorbar_figure(colormap: str, threshold: float, height: int = 80) -> go.Figure:
    """Return a horizontal colour bar for F(I) in [0, 1] with the threshold t marked.

    The bar is drawn from the same matplotlib colour map as the heatmap, so its colours are
    exactly the overlay's.
    """
    from matplotlib import colormaps

    lut = (colormaps[colormap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    fig = go.Figure(go.Image(z=np.repeat(lut[None], 12, axis=0), x0=0.0, dx=1 / 255, y0=0, dy=1, hoverinfo="skip"))
    fig.add_vline(x=threshold, line=dict(color="cyan", width=3))
    # The image trace ties the axes' scales (scaleanchor): a 1-pixel-high bar then shrinks to a
    # sliver (3 px wide in a 940 px figure with plotly 7.1); free the y axis so it spans the width.
    fig.update_yaxes(visible=False, scaleanchor=False)
    fig.update_xaxes(title=None, tickvals=[0, 0.25, 0.5, 0.75, 1.0], range=[-0.005, 1.005], showgrid=False)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=22, b=25), plot_bgcolor="white", paper_bgcolor="white",
                      annotations=[dict(x=threshold, y=1.0, yref="paper", text=f"t = {threshold:.2f}", showarrow=False, yanchor="bottom")])
    return fig


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


# -- the deep-zoom viewer -------------------------------------------------------------------------
def slide_viewer_figure(
    dimensions: tuple[int, int],
    slide_tiles: str,
    overlay_tiles: str | None,
    *,
    opacity: float = 0.45,
    centres_x: np.ndarray | None = None,
    centres_y: np.ndarray | None = None,
    probs: np.ndarray | None = None,
    tumors: list | None = None,
    selected: int | None = None,
    height: int = 620,
    revision: str = "viewer",
    focus: tuple[float, float] | None = None,
) -> go.Figure:
    """Return a pan-and-zoom viewer: slide and overlay tiles in a MapLibre map (plotly Scattermap).

    The slide lives on a Web-Mercator world square (core.deepzoom); ``slide_tiles`` and
    ``overlay_tiles`` are root-relative URL templates ``.../{z}/{x}/{y}``. ``focus`` (level-0
    x, y) opens the view there at full resolution instead of fitting the slide. Patch centres are
    an invisible, selectable marker trace (click or box-select); tumors are outlines.
    Everything works offline: the style has no glyphs, sprites or remote sources.
    """
    from core.deepzoom import max_zoom, to_lonlat

    width0, height0 = dimensions
    top = max_zoom(dimensions)
    (west, east), (north, south) = to_lonlat([0, width0], [0, height0], dimensions)
    bounds = [float(max(west, -179.99)), float(max(south, -85.05)), float(min(east, 179.99)), float(min(north, 85.05))]
    sources = {"slide": {"type": "raster", "tiles": [slide_tiles], "tileSize": 256, "maxzoom": top, "bounds": bounds}}
    layers = [
        {"id": "glass", "type": "background", "paint": {"background-color": "#f4f4f4"}},
        {"id": "slide", "type": "raster", "source": "slide", "paint": {"raster-fade-duration": 0}},
    ]
    if overlay_tiles:
        sources["overlay"] = {"type": "raster", "tiles": [overlay_tiles], "tileSize": 256, "maxzoom": top, "bounds": bounds}
        layers.append(
            {"id": "overlay", "type": "raster", "source": "overlay",
             "paint": {"raster-opacity": float(opacity), "raster-fade-duration": 0, "raster-resampling": "nearest"}}
        )
    style = {"version": 8, "sources": sources, "layers": layers}

    fig = go.Figure()
    if centres_x is not None and len(centres_x):
        lon, lat = to_lonlat(centres_x, centres_y, dimensions)
        fig.add_trace(
            go.Scattermap(
                lon=lon, lat=lat, mode="markers", name=PATCH_TRACE, customdata=probs,
                marker=dict(size=9, color="rgba(0,0,0,0)"),
                hovertemplate="F(I) = %{customdata:.3f}<extra></extra>",
                selected=dict(marker=dict(color="cyan", size=12)), unselected=dict(marker=dict(opacity=0)),
                showlegend=False,
            )
        )
    if tumors:
        xs, ys = outline_xy(tumors)
        valid = np.array([v is not None for v in xs])
        lon = np.full(len(xs), np.nan)
        lat = np.full(len(xs), np.nan)
        if valid.any():
            lon[valid], lat[valid] = to_lonlat(np.array(xs, dtype=object)[valid].astype(float), np.array(ys, dtype=object)[valid].astype(float), dimensions)
        fig.add_trace(
            go.Scattermap(lon=[None if np.isnan(v) else v for v in lon], lat=[None if np.isnan(v) else v for v in lat], mode="lines",
                          name="tumor annotation", line=dict(color="#39ff14", width=2), hoverinfo="skip")
        )
    if selected is not None and centres_x is not None:
        lon, lat = to_lonlat([centres_x[selected]], [centres_y[selected]], dimensions)
        fig.add_trace(go.Scattermap(lon=lon, lat=lat, mode="markers", name="selected patch", marker=dict(size=18, color="cyan", opacity=0.6), hoverinfo="skip"))
    # Fit the slide in an ~900 x 600 px view: MapLibre's world is 512 * 2**zoom px wide.
    fit = np.log2(min(900 / (512 * width0 / (256 * 2**top)), 600 / (512 * height0 / (256 * 2**top))))
    centre_lon, centre_lat = to_lonlat([width0 / 2], [height0 / 2], dimensions)
    if focus is not None:  # centre a level-0 point at full resolution (one screen px = one level-0 px)
        centre_lon, centre_lat = to_lonlat([focus[0]], [focus[1]], dimensions)
        fit = top - 1
    fig.update_layout(
        map=dict(style=style, center=dict(lon=float(centre_lon[0]), lat=float(centre_lat[0])), zoom=float(fit),
                 bounds=dict(west=bounds[0], south=bounds[1], east=bounds[2], north=bounds[3])),
        height=height, margin=dict(l=0, r=0, t=0, b=0), uirevision=revision, showlegend=bool(tumors),
        legend=dict(orientation="h", yanchor="bottom", y=0.0, xanchor="left", x=0.0, bgcolor="rgba(255,255,255,0.7)"),
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
