// A plotly chart that stays on the page across reruns (app/charts/__init__.py says why).
// Streamlit (components v2) calls this function with the new data on every rerun, with the same
// parentElement while the element lives. The plot is made once (Plotly.newPlot) and then updated
// in place (Plotly.react): while data.id is the same, the base traces are the very objects drawn
// before, so plotly sees them unchanged and only the extra traces (the point at t) and the layout
// (titles) are redrawn.

const PLOTLY_URL = "/viewer/static/plotly.min.js";
const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d"] };

function loadPlotly() {
  if (window.__pathexPlotly) return window.__pathexPlotly;
  window.__pathexPlotly = new Promise((resolve, reject) => {
    // plotly.min.js is a UMD bundle: with no module loader on the page it sets window.Plotly.
    // Streamlit's own plotly is module-scoped, so this does not replace it.
    const script = document.createElement("script");
    script.src = PLOTLY_URL;
    script.onload = () => resolve(window.Plotly);
    script.onerror = () => {
      window.__pathexPlotly = undefined;
      reject(new Error(`cannot load ${PLOTLY_URL}`));
    };
    document.head.appendChild(script);
  });
  return window.__pathexPlotly;
}

class Chart {
  constructor(parent) {
    this.root = document.createElement("div");
    this.root.className = "pathex-chart";
    this.root.setAttribute("data-testid", "pathexChart");
    parent.appendChild(this.root);
    this.id = null;
    this.base = [];
    this.queue = Promise.resolve();
    this.drawn = false;
  }

  draw(Plotly, data) {
    if (data.id !== this.id) {
      this.id = data.id;
      this.base = data.base;
    }
    const layout = { ...data.layout, height: data.height, autosize: true };
    this.root.style.height = `${data.height}px`;
    this.root.setAttribute("data-figure-id", data.id);
    const traces = this.base.concat(data.extra);
    const drawn = this.drawn ? Plotly.react(this.root, traces, layout, CONFIG) : Plotly.newPlot(this.root, traces, layout, CONFIG);
    this.drawn = true;
    return drawn.then(() => this.root.setAttribute("data-drawn", String((Number(this.root.getAttribute("data-drawn")) || 0) + 1)));
  }

  destroy() {
    if (window.Plotly && this.drawn) window.Plotly.purge(this.root);
    this.root.remove();
  }
}

export default function (component) {
  const { data, parentElement } = component;
  let chart = parentElement.__pathexChart;
  if (!chart) {
    chart = new Chart(parentElement);
    parentElement.__pathexChart = chart;
  }
  chart.queue = chart.queue
    .then(() => loadPlotly())
    .then((Plotly) => chart.draw(Plotly, data))
    .catch((error) => {
      chart.root.className = "pathex-chart-error";
      chart.root.textContent = `The chart could not be drawn: ${error.message}`;
    });
  return () => {
    chart.destroy();
    parentElement.__pathexChart = undefined;
  };
}
