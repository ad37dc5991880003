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

// Charts out of view are drawn when the browser is idle (or when scrolled into view, whichever
// comes first), so that opening a page or moving t draws first what a person sees.
const NEAR_VIEW = "200px";
const IDLE_WITHIN_MS = 1500;

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
    this.pending = null; // the latest data not drawn yet, with its Plotly
    this.idle = null;
    this.visible = false;
    this.observer = typeof IntersectionObserver === "function"
      ? new IntersectionObserver((entries) => {
          this.visible = entries.some((e) => e.isIntersecting);
          if (this.visible) this.flush();
        }, { rootMargin: NEAR_VIEW })
      : null;
    if (this.observer) this.observer.observe(this.root);
    else this.visible = true;
  }

  inView() {
    if (!this.observer) return true;
    // Before the observer's first report (a new element), measure.
    const r = this.root.getBoundingClientRect();
    const margin = parseInt(NEAR_VIEW, 10);
    return this.visible || (r.bottom >= -margin && r.top <= window.innerHeight + margin && r.width > 0);
  }

  request(Plotly, data) {
    this.root.style.height = `${data.height}px`; // the page's layout does not wait for the drawing
    this.pending = { Plotly, data };
    if (this.inView()) return this.flush();
    if (this.idle === null) {
      const later = window.requestIdleCallback || ((fn) => setTimeout(fn, 200));
      this.idle = later(() => { this.idle = null; this.flush(); }, { timeout: IDLE_WITHIN_MS });
    }
    return Promise.resolve();
  }

  flush() {
    const next = this.pending;
    if (!next) return this.queue;
    this.pending = null;
    this.queue = this.queue.then(() => this.draw(next.Plotly, next.data)).catch((error) => this.fail(error));
    return this.queue;
  }

  draw(Plotly, data) {
    if (data.id !== this.id) {
      this.id = data.id;
      this.base = data.base;
    }
    const layout = { ...data.layout, height: data.height, autosize: true };
    this.root.setAttribute("data-figure-id", data.id);
    const traces = this.base.concat(data.extra);
    const drawn = this.drawn ? Plotly.react(this.root, traces, layout, CONFIG) : Plotly.newPlot(this.root, traces, layout, CONFIG);
    this.drawn = true;
    return drawn.then(() => this.root.setAttribute("data-drawn", String((Number(this.root.getAttribute("data-drawn")) || 0) + 1)));
  }

  fail(error) {
    this.root.className = "pathex-chart-error";
    this.root.textContent = `The chart could not be drawn: ${error.message}`;
  }

  destroy() {
    if (this.observer) this.observer.disconnect();
    if (this.idle !== null && window.cancelIdleCallback) window.cancelIdleCallback(this.idle);
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
  loadPlotly()
    .then((Plotly) => chart.request(Plotly, data))
    .catch((error) => chart.fail(error));
  return () => {
    chart.destroy();
    parentElement.__pathexChart = undefined;
  };
}
