"""Plotly charts that stay on the page across reruns: a Streamlit component (components v2).

Why not ``st.plotly_chart``: Streamlit 1.67 keys a plotly chart's element by an id computed from
its figure, so a chart whose figure changes is a new element: the browser throws the old plot
away and draws a new one (``Plotly.newPlot``), 60-100 ms per chart on this CPU. On Threshold
tuning a t move changes the point at t on six charts, and their redrawing was most of what a
person waited for. Here the element is keyed by the caller (``key``), so it lives as long as the
page does, and a rerun hands the new figure to ``Plotly.react`` in place: the traces whose data
did not change (``figure["id"]`` the same) keep their arrays and a t move redraws the point and
the numbers, not the plot.

plotly.js is the copy the installed plotly package ships (``plotly/package_data/plotly.min.js``,
the version the figures are made with), served by the app's own route
(:data:`app.viewer.STATIC_ROUTE`), loaded once per browser tab: nothing comes from outside.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

HERE = Path(__file__).resolve().parent
COMPONENT_NAME = "pathex.plotly_chart"
#: The layout's font: Streamlit's own (the page's), so the charts read as part of it.
FONT = {"family": '"Source Sans", "Source Sans Pro", sans-serif', "size": 12, "color": "#31333f"}

_component: Callable[..., Any] | None = None


def _mount() -> Callable[..., Any]:
    global _component
    if _component is None:
        import streamlit as st

        _component = st.components.v2.component(
            COMPONENT_NAME, js=(HERE / "charts.js").read_text(), css=(HERE / "charts.css").read_text(), isolate_styles=False,
        )
    return _component


def chart_json(fig: go.Figure | dict) -> dict:
    """Return a figure as plain JSON data (lists, numbers, strings) for :func:`plotly_chart`.

    plotly's template is left out: the chart is drawn in plotly.js's plain style with the page's
    font (:data:`FONT`), as Streamlit draws its own charts, and the template (~10 kB) is not sent
    on every rerun.
    """
    figure = fig if isinstance(fig, go.Figure) else go.Figure(fig, _validate=False)
    data = json.loads(figure.to_json())
    layout = data.get("layout", {})
    layout.pop("template", None)
    layout["font"] = {**FONT, **layout.get("font", {})}
    if isinstance(layout.get("title"), dict):  # titles on the left, as Streamlit's own charts
        layout["title"] = {"x": 0, "xanchor": "left", "xref": "paper", **layout["title"]}
    if isinstance(layout.get("legend"), dict):
        layout["legend"] = {"font": {"size": 11}, **layout["legend"]}
    for axis in ("xaxis", "yaxis"):  # room for the tick labels and titles (plotly.py's templates turn this on)
        layout[axis] = {"automargin": True, **layout.get(axis, {})}
    return {"data": data.get("data", []), "layout": layout}


def plotly_chart(base: dict, *, key: str, figure_id: str, extra: list[dict] | None = None, layout: dict | None = None, height: int | None = None) -> None:
    """Draw a plotly figure that is updated in place on later reruns (same ``key``).

    Args:
        base: the figure's part that changes rarely, as :func:`chart_json` returns it.
        key: the element's identity on the page (one per chart).
        figure_id: names ``base``: while it is the same, the browser keeps the traces it has
            (a changed id redraws them all).
        extra: traces added after the base's (e.g. the point at t), plain JSON, sent every run.
        layout: layout properties that override the base's (e.g. a title with t in it).
        height: the chart's height in CSS px (default: the layout's height, else 360).
    """
    merged_layout = {**base["layout"], **(layout or {})}
    merged_layout.pop("width", None)  # the chart spans its column (plotly.js autosize)
    data = {
        "id": str(figure_id), "base": base["data"], "extra": list(extra or []), "layout": merged_layout,
        "height": int(height or merged_layout.get("height") or 360),
    }
    _mount()(key=key, data=data, height="content")
