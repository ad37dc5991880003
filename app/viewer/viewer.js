// The Review page's slide viewer: OpenSeadragon (vendored in static/, served by the app's own
// route) with the slide and its probability overlay as tiled images, a navigator inset, Home,
// a zoom cap of 2 screen px per level-0 px, a scale bar and magnification readout, the selected
// patch and the tumour annotations as vector outlines. The outlines of the patches with F(I) >= t
// are drawn here from the run's probability grid (fetched once per run), so a t move fetches no
// tile: only the outlines' path changes. Clicks and shift-drag boxes go back to Python as level-0
// coordinates (a trigger value); Python picks the patches.
//
// Streamlit (components v2) calls this function again with the new data on every rerun, with
// the same parentElement while the element lives: the viewer is made once and updated in place,
// so the view survives reruns. Coordinates: "image" = level-0 pixels of the slide.

const OSD_URL = "/viewer/static/openseadragon.min.js";
const VIEW_STORE = "pathex-viewer-view:"; // sessionStorage: the view of a slide, kept across page switches
const SVG_NS = "http://www.w3.org/2000/svg";

function loadOpenSeadragon() {
  if (window.OpenSeadragon) return Promise.resolve(window.OpenSeadragon);
  if (!window.__pathexOSD) {
    window.__pathexOSD = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = OSD_URL;
      script.onload = () => resolve(window.OpenSeadragon);
      script.onerror = () => {
        window.__pathexOSD = undefined;
        reject(new Error(`cannot load ${OSD_URL}`));
      };
      document.head.appendChild(script);
    });
  }
  return window.__pathexOSD;
}

function tileSource(slide, template) {
  // The server's tile (z, x, y) is OpenSeadragon's (level, x, y) with maxLevel = the slide's
  // max zoom: at that level one tile pixel is one level-0 pixel. Edge tiles are 256 px, padded
  // with white (slide) or transparent (overlay); OpenSeadragon crops them to the slide.
  return {
    width: slide.width, height: slide.height, tileSize: 256, tileOverlap: 0, minLevel: 0, maxLevel: slide.maxLevel,
    getTileUrl: (level, x, y) => template.replace("{z}", level).replace("{x}", x).replace("{y}", y),
  };
}

// The border of the cells with value >= t (float32, as Python compares: core.heatmap.outline_runs)
// as runs of cell edges: horizontal [r, c0, c1) on the line between cell rows r - 1 and r,
// vertical [c, r0, r1) between columns c - 1 and c. Cells outside the grid and NaN count as below.
function outlineRuns(values, rows, cols, t) {
  const tf = Math.fround(t);
  const above = new Uint8Array(rows * cols);
  for (let i = 0; i < values.length; i++) above[i] = values[i] >= tf ? 1 : 0;
  const at = (r, c) => (r >= 0 && r < rows && c >= 0 && c < cols ? above[r * cols + c] : 0);
  const horizontal = [];
  for (let r = 0; r <= rows; r++) {
    let start = -1;
    for (let c = 0; c <= cols; c++) {
      const edge = c < cols && at(r - 1, c) !== at(r, c);
      if (edge && start < 0) start = c;
      else if (!edge && start >= 0) { horizontal.push([r, start, c]); start = -1; }
    }
  }
  const vertical = [];
  for (let c = 0; c <= cols; c++) {
    let start = -1;
    for (let r = 0; r <= rows; r++) {
      const edge = r < rows && at(r, c - 1) !== at(r, c);
      if (edge && start < 0) start = r;
      else if (!edge && start >= 0) { vertical.push([c, start, r]); start = -1; }
    }
  }
  return { horizontal, vertical };
}

// The runs as one SVG path in level-0 px.
function outlinePath(runs, x0, y0, step) {
  const parts = [];
  for (const [r, c0, c1] of runs.horizontal) parts.push(`M${x0 + c0 * step} ${y0 + r * step}H${x0 + c1 * step}`);
  for (const [c, r0, r1] of runs.vertical) parts.push(`M${x0 + c * step} ${y0 + r0 * step}V${y0 + r1 * step}`);
  return parts.join("");
}

// A length near `target` among 1, 2, 5 x 10^k.
function niceLength(target) {
  const power = Math.pow(10, Math.floor(Math.log10(target)));
  for (const step of [5, 2, 1]) if (step * power <= target) return step * power;
  return power;
}

function formatLength(um) {
  if (um >= 1000) return `${+(um / 1000).toPrecision(3)} mm`;
  if (um >= 1) return `${+um.toPrecision(3)} µm`;
  return `${+(um * 1000).toPrecision(3)} nm`;
}

// A new image (a slide opened, a new overlay) loads only the tiles of the level it is drawn at,
// not every coarser level first (OpenSeadragon's immediateRender): a slide switch asks for a
// third of the tiles. Once it is fully drawn, zooming and panning blend from coarse to sharp
// again, as usual.
function loadBestLevelFirst(item) {
  item.immediateRender = true;
  const handler = (event) => {
    if (!event.fullyLoaded) return;
    item.removeHandler("fully-loaded-change", handler);
    item.immediateRender = false;
  };
  item.addHandler("fully-loaded-change", handler);
}

// The viewer of an element Streamlit has just removed, kept a few seconds for the next element to
// adopt: a rerun that draws the viewer at another place on the page (the Review page before and
// after "Run the model") or a quick return to the page then keeps the OpenSeadragon canvas, its
// loaded tiles and its view, instead of building a new one and loading every tile again.
// Streamlit may also mount the new element first and remove the old one when the run ends: a
// viewer removed within YOUNG_MS of a new one's creation takes that new element's place instead.
const STASH_MS = 10000;
const YOUNG_MS = 5000;
let STASHED = null; // { viewer: SlideViewer, timer }
let YOUNG = null; // { parent, viewer: SlideViewer, at }: the last viewer made new (not adopted)

// The runs' probability grids (float32), fetched once per token and kept for the window, not the
// element: Review opened again, or a slide switched back to, draws its outlines without a fetch.
// The last ones used are kept, up to GRID_BYTES.
const GRIDS = new Map(); // token -> { promise: Promise<Float32Array>, bytes }
const GRID_BYTES = 64e6;

function gridValues(spec) {
  let entry = GRIDS.get(spec.token);
  if (entry) {
    GRIDS.delete(spec.token); // most recently used last
    GRIDS.set(spec.token, entry);
    return entry.promise;
  }
  const promise = fetch(spec.url, { credentials: "same-origin" })
    .then((response) => {
      if (!response.ok) throw new Error(`grid ${response.status}`);
      return response.arrayBuffer();
    })
    .then((buffer) => new Float32Array(buffer));
  entry = { promise, bytes: spec.rows * spec.cols * 4 };
  GRIDS.set(spec.token, entry);
  promise.catch(() => { if (GRIDS.get(spec.token) === entry) GRIDS.delete(spec.token); });
  let total = 0;
  for (const e of GRIDS.values()) total += e.bytes;
  for (const [token, e] of GRIDS) {
    if (total <= GRID_BYTES || token === spec.token) break;
    GRIDS.delete(token);
    total -= e.bytes;
  }
  return promise;
}

class SlideViewer {
  constructor(parent, setTrigger) {
    this.setTrigger = setTrigger;
    this.root = document.createElement("div");
    this.root.className = "pathex-viewer";
    this.root.setAttribute("data-testid", "pathexViewer");
    parent.appendChild(this.root);
    this.stage = document.createElement("div");
    this.stage.className = "pathex-stage";
    this.root.appendChild(this.stage);
    this.tools = document.createElement("div");
    this.tools.className = "pathex-tools";
    this.root.appendChild(this.tools);
    const button = (label, title, action, testid) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = label;
      b.title = title;
      b.setAttribute("data-testid", testid);
      b.addEventListener("click", (e) => { e.preventDefault(); action(); });
      this.tools.appendChild(b);
      return b;
    };
    button("⌂ Home", "Fit the whole slide", () => this.home(), "pathexHome");
    button("−", "Zoom out", () => this.zoomBy(0.5), "pathexZoomOut");
    button("+", "Zoom in", () => this.zoomBy(2), "pathexZoomIn");
    button("1:1", "Full resolution: one screen pixel per level-0 pixel", () => this.zoomToImage(1), "pathexFull");
    this.scale = document.createElement("div");
    this.scale.className = "pathex-scale";
    this.scale.setAttribute("data-testid", "pathexScale");
    this.scaleBar = document.createElement("div");
    this.scaleBar.className = "pathex-scale-bar";
    this.scaleLabel = document.createElement("span");
    this.scaleLabel.className = "pathex-scale-label";
    this.scale.append(this.scaleBar, this.scaleLabel);
    this.root.appendChild(this.scale);
    this.magnification = document.createElement("div");
    this.magnification.className = "pathex-magnification";
    this.magnification.setAttribute("data-testid", "pathexMagnification");
    this.root.appendChild(this.magnification);
    this.box = document.createElement("div");
    this.box.className = "pathex-box";
    this.root.appendChild(this.box);
    this.viewer = null;
    this.slide = null;
    this.overlay = null; // {token, item}
    this.pendingOverlay = null;
    this.focusNonce = null;
    this.queue = Promise.resolve();
    this.overlayDrawn = { token: null, at: 0 }; // for the tests and the latency bench
    this.overlayRequested = { token: null, at: 0 };
    this.outlineSpec = null; // {token, url, rows, cols, x0, y0, step0, t}: the t outlines asked for
    this.grid = null; // {token, values: Float32Array}: the last grid fetched
    this.gridLoading = null; // the token of the grid being fetched
    this.outlinesDrawn = { key: null, at: 0 }; // key: `${token}:${t}` ("none" without outlines)
    this.vectorsKey = null;
    // The view in the URL is kept there: a run can rewrite the query string from Streamlit's own
    // copy, which lacks what this viewer wrote, and a run whose data are unchanged (t moved on a
    // slide without predictions) calls no applyData to write it back. A check a second, on the page only.
    this.urlWatch = setInterval(() => this.writeUrlView(), 1000);
  }

  update(OSD, data) {
    this.data = data;
    if (data.outline) gridValues(data.outline).catch(() => {}); // on its way while the slide opens
    this.root.style.height = `${data.height}px`;
    if (!this.viewer) this.create(OSD);
    if (!this.slide || this.slide.token !== data.slide.token) {
      return this.openSlide(OSD, data);
    }
    this.slide = data.slide; // the same slide, whose µm per pixel may just have been given (the scale bar follows)
    this.applyData(OSD, data, false);
    return Promise.resolve();
  }

  create(OSD) {
    this.viewer = OSD({
      element: this.stage,
      drawer: "canvas",
      showNavigationControl: false,
      showNavigator: true,
      navigatorPosition: "BOTTOM_RIGHT",
      navigatorSizeRatio: 0.2,
      navigatorAutoFade: false,
      navigatorBackground: "#f4f4f4",
      navigatorBorderColor: "#555",
      navigatorDisplayRegionColor: "#00c8ff",
      maxZoomPixelRatio: 2, // level 0 at 2 screen px per pixel at most
      minZoomImageRatio: 0.8,
      visibilityRatio: 0.2,
      homeFillsViewer: false, // Home: the whole slide, letterboxed
      preserveViewport: true,
      animationTime: 0.4,
      springStiffness: 9,
      zoomPerScroll: 1.4,
      imageLoaderLimit: 8,
      timeout: 60000,
      crossOriginPolicy: false,
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true, flickEnabled: false },
    });
    const v = this.viewer;
    this.svg = document.createElementNS(SVG_NS, "svg");
    this.svg.setAttribute("class", "pathex-vectors");
    this.svgGroup = document.createElementNS(SVG_NS, "g");
    this.svg.appendChild(this.svgGroup);
    // Below the annotations and the selection: the t outlines (a dark halo under a cyan line).
    this.outlineGroup = document.createElementNS(SVG_NS, "g");
    this.outlineGroup.setAttribute("data-testid", "pathexOutlines");
    for (const cls of ["pathex-outline-halo", "pathex-outline"]) {
      const path = document.createElementNS(SVG_NS, "path");
      path.setAttribute("class", cls);
      this.outlineGroup.appendChild(path);
    }
    this.vectorGroup = document.createElementNS(SVG_NS, "g");
    this.svgGroup.append(this.outlineGroup, this.vectorGroup);
    v.canvas.appendChild(this.svg);
    const redraw = () => { this.placeVectors(); this.drawScale(); };
    v.addHandler("update-viewport", redraw);
    v.addHandler("resize", redraw);
    v.addHandler("animation-finish", () => this.saveView());
    // A click selects the patch under it; shift-drag draws a box that selects the patches in it.
    v.addHandler("canvas-click", (e) => {
      if (!e.quick || this.dragStart) return;
      const p = this.item().viewerElementToImageCoordinates(e.position);
      this.trigger({ kind: "point", x: p.x, y: p.y });
    });
    v.addHandler("canvas-press", (e) => {
      if (e.originalEvent && e.originalEvent.shiftKey) {
        this.dragStart = e.position;
        this.drawBox(e.position, e.position);
      }
    });
    v.addHandler("canvas-drag", (e) => {
      if (!this.dragStart) return;
      e.preventDefaultAction = true; // no pan while boxing
      this.dragEnd = e.position;
      this.drawBox(this.dragStart, e.position);
    });
    v.addHandler("canvas-release", () => {
      if (!this.dragStart) return;
      const a = this.dragStart;
      const b = this.dragEnd || a;
      this.dragStart = this.dragEnd = null;
      this.box.style.display = "none";
      if (Math.abs(a.x - b.x) < 3 && Math.abs(a.y - b.y) < 3) return;
      const p = this.item().viewerElementToImageCoordinates(a);
      const q = this.item().viewerElementToImageCoordinates(b);
      this.trigger({ kind: "box", x0: Math.min(p.x, q.x), y0: Math.min(p.y, q.y), x1: Math.max(p.x, q.x), y1: Math.max(p.y, q.y) });
    });
  }

  trigger(value) {
    this.setTrigger("select", { ...value, slide: this.slide.token, at: Date.now() });
  }

  drawBox(a, b) {
    const s = this.box.style;
    s.display = "block";
    s.left = `${Math.min(a.x, b.x)}px`;
    s.top = `${Math.min(a.y, b.y)}px`;
    s.width = `${Math.abs(a.x - b.x)}px`;
    s.height = `${Math.abs(a.y - b.y)}px`;
  }

  openSlide(OSD, data) {
    const first = this.slide === null;
    this.slide = data.slide;
    if (this.pendingOverlay) this.cancel(this.pendingOverlay);
    this.overlay = null; // v.open() below replaces every item of the world
    this.focusNonce = null;
    for (const path of this.outlineGroup.children) path.setAttribute("d", ""); // the last slide's
    this.outlinesDrawn = { key: null, at: 0 };
    return new Promise((resolve) => {
      const v = this.viewer;
      const opened = () => {
        v.removeHandler("open", opened);
        v.removeHandler("open-failed", opened);
        if (v.world.getItemCount()) loadBestLevelFirst(v.world.getItemAt(0));
        // A fresh element (first mount, e.g. back from another page) restores this slide's
        // last view; a change of slide fits the new one.
        const saved = first ? this.loadView() : null;
        if (saved) this.setView(saved.x, saved.y, saved.zoom, true);
        else v.viewport.goHome(true);
        this.applyData(OSD, data, true);
        resolve();
      };
      v.addHandler("open", opened);
      v.addHandler("open-failed", opened);
      v.open(tileSource(data.slide, data.slide.tiles));
    });
  }

  applyData(OSD, data, opened) {
    this.setOverlay(data.overlay);
    this.setOutlines(data.outline);
    this.drawVectors(data);
    const focus = data.focus;
    if (focus && focus.nonce !== this.focusNonce && focus.nonce !== this.loadFocusNonce()) {
      this.focusNonce = focus.nonce;
      this.saveFocusNonce(focus.nonce);
      this.setView(focus.x, focus.y, focus.zoom || 1, false);
    } else if (focus) {
      this.focusNonce = focus.nonce;
    }
    this.drawScale();
    // After a rerun (Python may have rewritten the query string) and once a new slide is fitted;
    // once more when the run's last messages are in: Python writes the query string late in the
    // run, from the one the browser sent when the run began, which may have lacked the view.
    if (opened) setTimeout(() => this.writeUrlView(), 0);
    else this.writeUrlView();
    clearTimeout(this.urlTimer);
    this.urlTimer = setTimeout(() => this.writeUrlView(), 500);
  }

  setOverlay(spec) {
    const v = this.viewer;
    if (!spec) {
      if (this.pendingOverlay) this.cancel(this.pendingOverlay);
      if (this.overlay) v.world.removeItem(this.overlay.item);
      this.overlay = null;
      return;
    }
    if (this.overlay && this.overlay.token === spec.token) {
      if (this.pendingOverlay) this.cancel(this.pendingOverlay); // t moved away and back
      this.overlay.item.setOpacity(spec.opacity);
      return;
    }
    if (this.pendingOverlay && this.pendingOverlay.token === spec.token) {
      this.pendingOverlay.opacity = spec.opacity;
      return;
    }
    // The new overlay is added above the old one, which goes once the new one is drawn (no
    // flash); an overlay superseded before it is drawn (t moved again) is dropped at once.
    if (this.pendingOverlay) this.cancel(this.pendingOverlay);
    const pending = { token: spec.token, opacity: spec.opacity, item: null, cancelled: false, timer: null };
    this.pendingOverlay = pending;
    this.overlayRequested = { token: spec.token, at: performance.now() }; // the rerun's part of a t move ends here
    v.addTiledImage({
      tileSource: tileSource(this.slide, spec.tiles),
      opacity: spec.opacity,
      success: (event) => {
        const item = event.item;
        if (pending.cancelled) { v.world.removeItem(item); return; }
        loadBestLevelFirst(item);
        pending.item = item;
        item.setOpacity(pending.opacity);
        const done = () => {
          if (pending.cancelled || this.pendingOverlay !== pending) return;
          clearTimeout(pending.timer);
          item.removeHandler("fully-loaded-change", handler);
          const old = this.overlay;
          this.overlay = { token: pending.token, item };
          this.pendingOverlay = null;
          if (old) v.world.removeItem(old.item);
          this.overlayDrawn = { token: pending.token, at: performance.now() };
        };
        const handler = (e) => { if (e.fullyLoaded) done(); };
        item.addHandler("fully-loaded-change", handler);
        pending.timer = setTimeout(done, 15000); // a tile that never comes must not keep the old overlay forever
        if (item.getFullyLoaded()) done();
      },
      error: () => {
        if (this.pendingOverlay === pending) this.pendingOverlay = null;
      },
    });
  }

  cancel(pending) {
    pending.cancelled = true;
    clearTimeout(pending.timer);
    if (pending.item) this.viewer.world.removeItem(pending.item);
    if (this.pendingOverlay === pending) this.pendingOverlay = null;
  }

  // The t outlines: the grid is fetched once per run (token); each t only recomputes the path.
  setOutlines(spec) {
    this.outlineSpec = spec || null;
    if (!spec) {
      for (const path of this.outlineGroup.children) path.setAttribute("d", "");
      this.outlinesDrawn = { key: "none", at: performance.now() };
      return;
    }
    if (this.grid && this.grid.token === spec.token) { this.drawOutlines(); return; }
    if (this.gridLoading === spec.token) return; // drawn when it comes
    this.gridLoading = spec.token;
    gridValues(spec)
      .then((values) => {
        if (this.gridLoading !== spec.token) return; // another run asked for meanwhile
        this.gridLoading = null;
        this.grid = { token: spec.token, values };
        this.drawOutlines();
      })
      .catch(() => { if (this.gridLoading === spec.token) this.gridLoading = null; });
  }

  drawOutlines() {
    const spec = this.outlineSpec;
    if (!spec || !this.grid || this.grid.token !== spec.token) return;
    const key = `${spec.token}:${spec.t}`;
    if (this.outlinesDrawn.key === key) return;
    if (this.grid.values.length !== spec.rows * spec.cols) return; // not this grid's shape: draw nothing rather than a wrong line
    this.outlineRuns = outlineRuns(this.grid.values, spec.rows, spec.cols, spec.t);
    const d = outlinePath(this.outlineRuns, spec.x0, spec.y0, spec.step0);
    for (const path of this.outlineGroup.children) path.setAttribute("d", d);
    this.outlinesDrawn = { key, at: performance.now() };
  }

  // Is what the last data asked for drawn: the overlay's tiles and the t outlines (tests, bench)?
  drawn() {
    if (!this.data || !this.viewer || this.pendingOverlay) return false;
    const spec = this.data.outline;
    const outlines = spec ? this.outlinesDrawn.key === `${spec.token}:${spec.t}` : this.outlinesDrawn.key === "none";
    const overlay = this.data.overlay ? !!this.overlay && this.overlay.token === this.data.overlay.token : true;
    return outlines && overlay && this.viewer.world.getItemCount() >= 1 && this.viewer.world.getItemAt(0).getFullyLoaded();
  }

  drawVectors(data) {
    // Rebuilt only when they change (a t move leaves them as they are).
    const key = JSON.stringify([data.tumors, data.selected]);
    if (key === this.vectorsKey) { this.placeVectors(); return; }
    this.vectorsKey = key;
    const g = this.vectorGroup;
    while (g.firstChild) g.removeChild(g.firstChild);
    for (const ring of data.tumors || []) {
      const path = document.createElementNS(SVG_NS, "polygon");
      path.setAttribute("points", ring.map((p) => `${p[0]},${p[1]}`).join(" "));
      path.setAttribute("class", "pathex-tumor");
      g.appendChild(path);
    }
    const s = data.selected;
    if (s) {
      for (const cls of ["pathex-selected-halo", "pathex-selected"]) {
        const rect = document.createElementNS(SVG_NS, "rect");
        rect.setAttribute("x", s.x);
        rect.setAttribute("y", s.y);
        rect.setAttribute("width", s.size);
        rect.setAttribute("height", s.size);
        rect.setAttribute("class", cls);
        if (cls === "pathex-selected") rect.setAttribute("data-testid", "pathexSelected");
        g.appendChild(rect);
      }
    }
    this.placeVectors();
  }

  placeVectors() {
    if (!this.viewer || !this.viewer.world.getItemCount()) return;
    const item = this.item();
    const OSD = window.OpenSeadragon;
    const p0 = item.imageToViewerElementCoordinates(new OSD.Point(0, 0));
    const p1 = item.imageToViewerElementCoordinates(new OSD.Point(this.slide.width, 0));
    const k = (p1.x - p0.x) / this.slide.width; // screen px per level-0 px
    this.svgGroup.setAttribute("transform", `translate(${p0.x} ${p0.y}) scale(${k})`);
  }

  // The slide's tiled image (the first item; overlays come above it): its image frame is level 0.
  item() { return this.viewer.world.getItemAt(0); }

  imageZoom() {
    return this.item().viewportToImageZoom(this.viewer.viewport.getZoom(true));
  }

  drawScale() {
    if (!this.viewer || !this.viewer.world.getItemCount()) return;
    const mpp = this.slide.mpp;
    const zoom = this.imageZoom(); // screen px per level-0 px
    if (!mpp) {
      this.scale.style.display = "none";
      this.magnification.textContent = "No µm per pixel: no scale";
      this.magnification.title = "This slide has no resolution metadata and none was given; type its microns per pixel on the Review page.";
      return;
    }
    const umPerScreenPx = mpp / zoom;
    const length = niceLength(umPerScreenPx * 140);
    this.scale.style.display = "flex";
    this.scaleBar.style.width = `${Math.round(length / umPerScreenPx)}px`;
    this.scaleLabel.textContent = formatLength(length);
    // Equivalent objective: 10x = 1 µm per screen pixel (40x ~ 0.25 µm/px, 20x ~ 0.5 µm/px).
    const mag = 10 / umPerScreenPx;
    this.magnification.textContent = `≈ ${mag >= 10 ? mag.toFixed(0) : mag.toFixed(1)}x`;
    this.magnification.title = `Equivalent objective magnification (10x = 1 µm per screen pixel); slide ${mpp.toPrecision(3)} µm/px`;
  }

  home() { this.viewer.viewport.goHome(); }

  zoomBy(factor) {
    const vp = this.viewer.viewport;
    vp.zoomBy(factor);
    vp.applyConstraints();
  }

  zoomToImage(zoom) {
    const vp = this.viewer.viewport;
    vp.zoomTo(this.item().imageToViewportZoom(zoom));
    vp.applyConstraints();
  }

  view() {
    const vp = this.viewer.viewport;
    const c = this.item().viewportToImageCoordinates(vp.getCenter(true));
    return { x: c.x, y: c.y, zoom: this.imageZoom() };
  }

  setView(x, y, zoom, immediately) {
    const vp = this.viewer.viewport;
    const OSD = window.OpenSeadragon;
    vp.zoomTo(this.item().imageToViewportZoom(zoom), null, immediately);
    vp.panTo(this.item().imageToViewportCoordinates(new OSD.Point(x, y)), immediately);
    vp.applyConstraints(immediately);
  }

  saveView() {
    if (!this.slide || !this.viewer || !this.viewer.world.getItemCount()) return;
    // Not while the element is off the page or collapsed (Streamlit replacing it, a run hiding
    // it): its canvas then measures a few px and the "view" would be a zoom of ~0.0005, which
    // the next element of this slide would restore (clamped to the minimum zoom).
    const box = this.root.getBoundingClientRect();
    if (!this.root.isConnected || box.width < 50 || box.height < 50) return;
    try {
      sessionStorage.setItem(VIEW_STORE + this.slide.token, JSON.stringify(this.view()));
    } catch (e) { /* storage full or denied: the view is only not restored */ }
    this.writeUrlView();
  }

  // The page's URL holds the view (x, y: centre in level-0 px; zoom: screen px per level-0 px),
  // beside what Python writes there (slide, t, patch: app/links.py), so a reload or a sent link
  // reopens this field of view. Streamlit hands the browser's query string to every run.
  writeUrlView() {
    if (!this.slide || !this.viewer || !this.viewer.world.getItemCount() || !this.root.isConnected) return;
    try {
      const v = this.view();
      const url = new URL(window.location.href);
      url.searchParams.set("x", String(Math.round(v.x)));
      url.searchParams.set("y", String(Math.round(v.y)));
      url.searchParams.set("zoom", String(Number(v.zoom.toPrecision(4))));
      if (url.href !== window.location.href) window.history.replaceState(window.history.state, "", url.href);
    } catch (e) { /* a sandboxed page may refuse: the link then only lacks the view */ }
  }

  loadView() {
    try {
      const text = sessionStorage.getItem(VIEW_STORE + this.slide.token);
      return text ? JSON.parse(text) : null;
    } catch (e) { return null; }
  }

  saveFocusNonce(nonce) {
    try { sessionStorage.setItem(VIEW_STORE + "focus", String(nonce)); } catch (e) { /* see saveView */ }
  }

  loadFocusNonce() {
    try { return sessionStorage.getItem(VIEW_STORE + "focus"); } catch (e) { return null; }
  }

  // Its element is gone: take the place of a viewer made new just before (its element drawn by the
  // same run), else wait off the page for the next element (stash).
  leave() {
    const young = YOUNG;
    if (young && young.viewer !== this && performance.now() - young.at < YOUNG_MS
        && young.parent.isConnected && young.parent.__pathexViewer === young.viewer) {
      YOUNG = null;
      young.viewer.destroy();
      young.parent.appendChild(this.root);
      if (this.viewer) this.viewer.autoResize = true;
      young.parent.__pathexViewer = this;
      this.setTrigger = young.viewer.setTrigger;
      window.pathexViewer = this;
      show(this, young.viewer.latest);
    } else {
      this.stash();
    }
  }

  // Off the page but alive for STASH_MS: the next viewer element adopts it (adopt), else it is destroyed.
  stash() {
    this.saveView();
    if (STASHED) STASHED.viewer.destroy();
    if (this.viewer) this.viewer.autoResize = false; // no resize to the 0 px of a detached element
    this.root.remove();
    const timer = setTimeout(() => {
      if (STASHED && STASHED.viewer === this) {
        STASHED = null;
        this.destroy();
      }
    }, STASH_MS);
    STASHED = { viewer: this, timer };
  }

  // Take the stashed viewer into a new element: its canvas, tiles and view move with it.
  static adopt(parent) {
    if (!STASHED) return null;
    const viewer = STASHED.viewer;
    clearTimeout(STASHED.timer);
    STASHED = null;
    parent.appendChild(viewer.root);
    if (viewer.viewer) viewer.viewer.autoResize = true;
    return viewer;
  }

  destroy() {
    clearTimeout(this.urlTimer);
    clearInterval(this.urlWatch);
    if (STASHED && STASHED.viewer === this) {
      clearTimeout(STASHED.timer);
      STASHED = null;
    }
    this.saveView();
    if (this.viewer) this.viewer.destroy();
    this.viewer = null;
    this.root.remove();
    if (window.pathexViewer === this) window.pathexViewer = undefined;
  }
}

function show(viewer, data) {
  viewer.latest = data;
  viewer.queue = viewer.queue
    .then(() => loadOpenSeadragon())
    .then((OSD) => viewer.update(OSD, data))
    .catch((error) => {
      viewer.root.textContent = `The slide viewer could not start: ${error.message}`;
    });
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let viewer = parentElement.__pathexViewer;
  if (!viewer) {
    viewer = SlideViewer.adopt(parentElement);
    if (!viewer) {
      viewer = new SlideViewer(parentElement, setTriggerValue);
      YOUNG = { parent: parentElement, viewer, at: performance.now() };
    }
    parentElement.__pathexViewer = viewer;
  }
  viewer.setTrigger = setTriggerValue;
  window.pathexViewer = viewer; // one viewer per page; the browser tests read its view here
  show(viewer, data);
  return () => {
    // The element's viewer now, which may be one that took its place (leave).
    const current = parentElement.__pathexViewer;
    parentElement.__pathexViewer = undefined;
    if (current) current.leave();
  };
}
