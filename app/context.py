"""What every page works on: the data folder, its slides, the results store, the model.

Models, stores and slide handles are shared resources (``st.cache_resource``, read-only
use); tables and pictures are cached data keyed by ids and file times. Every slide path goes
through ``core.paths.resolve_within`` before it is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from app import state
from core.annotations import load_tumors
from core.cohort import COHORT_FILE, annotations_dir, find_annotation_file, folder_rows, slides_dir
from core.errors import PathologyError
from core.uploads import UploadStore
from core.inference import PredictionRunner, adopt_level_run, model_tiling, run_params
from core.model import load_checkpoint
from core.paths import REPO_ROOT, data_dirs, resolve_within
from core.slide_io import Slide, open_slide
from core.store import ResultStore
from core.tiling import TilingParams, read_patches, read_plan

DEMO_MODEL = REPO_ROOT / "models" / "demo-tiny.pt"
DEMO_LABEL = "Demo model (tiny CNN, synthetic data)"


# -- partial reruns ----------------------------------------------------------------------------
def rerun_view() -> None:
    """Widget callback (the sidebar's t, Review's viewer settings): rerun only the current page's view.

    The page names its fragment in ``state.VIEW_FRAGMENT`` on each full run (the frame clears it
    first); without one, or when it was not drawn in the last run, the app reruns as usual.
    """
    rerun_fragment(st.session_state.get(state.VIEW_FRAGMENT))


def rerun_fragment(key: str | None) -> None:
    """Widget callback: rerun only the fragment ``key`` (a full rerun when it is None or was not drawn in the last run).

    A widget inside a fragment reruns it from the browser anyway; the callback says so on the server
    too, so that AppTest (which sends no fragment with a widget's change) plays it as a person does.
    """
    from streamlit.errors import StreamlitAPIException

    if not key:
        return
    try:
        st.rerun(key)  # raises Streamlit's rerun request: only that fragment runs
    except StreamlitAPIException:
        return  # the fragment was not drawn in the last run: a full rerun, as without a callback


def rerun_here() -> None:
    """Rerun the fragment this is called from when it runs alone, else the whole app."""
    ctx = get_script_run_ctx()
    st.rerun(scope="fragment" if ctx is not None and ctx.fragment_ids_this_run else "app")


# -- folders and uploads ----------------------------------------------------------------------
def data_dir() -> Path:
    """Return the data folder chosen in the sidebar."""
    return Path(st.session_state[state.DATA_DIR])


@st.cache_resource(show_spinner=False)
def _uploads() -> UploadStore:
    store = UploadStore()
    store.sweep()  # server start: folders of servers that are gone, sessions past their age
    return store


def upload_dir() -> Path:
    """Return this session's private folder for uploaded files (created on first use, in this server's folder)."""
    if state.UPLOAD_DIR not in st.session_state or not Path(st.session_state[state.UPLOAD_DIR]).is_dir():
        ctx = get_script_run_ctx()  # named by the session, so the server can remove it when the session ends
        st.session_state[state.UPLOAD_DIR] = str(_uploads().new_session(ctx.session_id if ctx else None))
    return Path(st.session_state[state.UPLOAD_DIR])


def allowed_roots() -> list[Path]:
    """Return the folders whose files may be opened: the data folders and this session's uploads."""
    return [*data_dirs(), upload_dir()]


def save_upload(uploaded, subfolder: str) -> Path:
    """Write a Streamlit UploadedFile into this session's upload folder; return its path.

    Raises:
        UploadError: the upload quota would be passed, or the file cannot be written.
    """
    return _uploads().save(upload_dir(), subfolder, uploaded.name, uploaded.getvalue())  # getvalue: the upload's own bytes; getbuffer would copy them


# -- slides -------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False)
def _cohort(folder: str, stamp: float) -> pd.DataFrame:
    rows = folder_rows(folder)  # the data folder's one rule (core.cohort): table, slides, labels
    return pd.DataFrame(
        {
            "slide": [r.slide for r in rows],
            "label": [r.label or "" for r in rows],
            "split": [r.split or "" for r in rows],
            "mpp": [r.mpp for r in rows],
            "path": [str(r.path) if r.path else "" for r in rows],
        },
        columns=["slide", "label", "split", "mpp", "path"],
    )


def cohort() -> pd.DataFrame:
    """Return the slides of the data folder and the uploads: slide, label (tumor/normal/''), split, mpp, path.

    ``mpp`` is the microns per level-0 pixel the user gave (cohort.csv column, the field next to
    the upload), None where the slide's own metadata is used.
    """
    folder = data_dir()
    table_file = folder / COHORT_FILE
    stamp = max(table_file.stat().st_mtime if table_file.exists() else 0, folder.stat().st_mtime, slides_dir(folder).stat().st_mtime)
    table = _cohort(str(folder), stamp).copy()
    typed = st.session_state.get(state.GIVEN_MPP, {})
    if typed:  # microns per pixel typed on Review for slides whose files lack them
        table["mpp"] = [typed.get(n, m) for n, m in zip(table["slide"], table["mpp"])]
    uploaded = st.session_state.get(state.UPLOADED_SLIDES, {})
    if uploaded:
        given = st.session_state.get(state.UPLOADED_MPP, {})
        extra = pd.DataFrame(
            {"slide": list(uploaded), "label": "", "split": "uploaded", "mpp": [given.get(n) for n in uploaded], "path": list(uploaded.values())}
        )
        table = pd.concat([table, extra], ignore_index=True)
    return table


@st.cache_resource(show_spinner=False, max_entries=64)
def _slide(path: str, mtime: float) -> Slide:
    return open_slide(path)


def slide(path: str | Path) -> Slide:
    """Return the shared handle of a slide, after checking it lies in an allowed folder."""
    resolved = resolve_within(path, allowed_roots())
    return _slide(str(resolved), resolved.stat().st_mtime)


@st.cache_data(show_spinner=False, max_entries=256)
def _thumbnail(path: str, mtime: float, max_size: int) -> np.ndarray:
    return _slide(path, mtime).thumbnail(max_size)


def thumbnail(path: str | Path, max_size: int = 1024) -> np.ndarray:
    """Return an RGB thumbnail (longer side ``max_size``) of an allowed slide."""
    resolved = resolve_within(path, allowed_roots())
    return _thumbnail(str(resolved), resolved.stat().st_mtime, max_size)


@st.cache_data(show_spinner=False, max_entries=256)
def _tumors(path: str, mtime: float) -> list:
    return load_tumors(path)


def annotation_path(slide_name: str) -> Path | None:
    """Return the annotation file of a slide in the data folder (:func:`core.cohort.find_annotation_file`), or None."""
    return find_annotation_file(annotations_dir(data_dir()), slide_name)


def tumors(slide_name: str) -> list:
    """Return the tumor polygons (level-0 px) of a slide, [] if it has no annotation file."""
    path = annotation_path(slide_name)
    if path is None:
        return []
    return _tumors(str(path), path.stat().st_mtime)


def default_slide(table: pd.DataFrame, summaries: dict) -> str | None:
    """Return the slide a page opens on: a tumour slide, one with complete predictions first.

    ``table`` is :func:`cohort` (slides without a file are skipped), ``summaries`` is
    :func:`run_summaries`. Without tumour slides: a predicted slide, else the first one; None
    when no slide has a file.
    """
    names = [n for n, p in zip(table["slide"], table["path"]) if p]
    labels = dict(zip(table["slide"], table["label"]))
    predicted = {n for n in names if (summaries.get(n) or {}).get("status") == "complete"}
    for wanted in (
        lambda n: labels.get(n) == "tumor" and n in predicted, lambda n: labels.get(n) == "tumor", lambda n: n in predicted,
    ):
        found = next((n for n in names if wanted(n)), None)
        if found is not None:
            return found
    return names[0] if names else None


def demo_slides_in_progress() -> tuple[int, int] | None:
    """Return (slides written, slides planned; 0 when not known yet) while the data folder is the demo
    cohort being made on first start, else None."""
    from core.demo import cohort_in_progress
    from core.paths import demo_dir

    folder = data_dir()
    if folder.resolve() != demo_dir() or not cohort_in_progress(folder):
        return None
    from app.demo import demo_generation

    job = demo_generation(folder)  # already running (the frame started it): its counts, nothing new started
    if job is None:
        return None
    return job.done, job.total


# -- store and model ----------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _store(path: str) -> ResultStore:
    return ResultStore(path)


def store() -> ResultStore:
    """Return the results store of the data folder (``results.sqlite`` inside it)."""
    return _store(str(data_dir() / "results.sqlite"))


def store_stamp() -> tuple:
    """Return what changes whenever the store's file is written (database and WAL file times)."""
    path = store().path
    stamps = []
    for candidate in (path, path.with_name(path.name + "-wal")):
        try:
            stat = candidate.stat()
            stamps.append((stat.st_mtime_ns, stat.st_size))
        except FileNotFoundError:
            stamps.append(None)
    return tuple(stamps)


@st.cache_data(show_spinner=False, max_entries=64)
def _summaries(db: str, model_id: str, params_json: str, stamp: tuple) -> dict:
    import json

    return _store(db).run_summaries(model_id, json.loads(params_json))


def given_mpp(slide_name: str) -> float | None:
    """Return the microns per level-0 pixel the user gave for a slide (cohort column or upload field), or None."""
    table = cohort()
    rows = table[table["slide"] == slide_name]
    if rows.empty:
        return None
    value = rows["mpp"].iloc[0]
    return None if value is None or pd.isna(value) else float(value)


def run_summaries(loaded: "LoadedModel") -> dict:
    """Return slide -> run summary (status, counts, max F(I), message) for the model, cached until the store changes.

    Slides whose mpp the user gave have runs of their own params (:func:`core.inference.run_params`):
    they are looked up per given value.
    """
    import json

    adopt_level_runs(loaded)
    db, stamp = str(store().path), store_stamp()
    table = cohort()
    summaries = dict(_summaries(db, loaded.model_id, json.dumps(loaded.params, sort_keys=True), stamp))
    if loaded.tiling.by_resolution:
        given = {float(m) for m in table["mpp"] if m is not None and not pd.isna(m)}
        for mpp in sorted(given):
            names = set(table.loc[table["mpp"] == mpp, "slide"])
            params = run_params(loaded.tiling, mpp)
            per_mpp = _summaries(db, loaded.model_id, json.dumps(params, sort_keys=True), stamp)
            summaries.update({n: v for n, v in per_mpp.items() if n in names})
            for name in names - set(per_mpp):
                summaries.pop(name, None)  # a run at another (or no) given mpp is not this one
    return summaries


@st.cache_data(show_spinner=False, max_entries=16)
def _adopt(db: str, model_id: str, tiling_json: str, paths: tuple[str, ...], stamp: tuple) -> int:
    import json

    tiling = TilingParams.from_dict(json.loads(tiling_json))
    shop = _store(db)
    # Only slides that hold a complete level-based run of this model can have one to re-key:
    # one query, then the few slides concerned are opened (none at all once migrated).
    legacy = {r.slide_id for r in shop.runs(model_id=model_id, status="complete") if "mpp" not in r.params.get("tiling", {})}
    records = {r.path: r for r in shop.slides() if r.id in legacy}
    adopted = 0
    for path in paths:
        record = records.get(path)
        if record is None:
            continue
        try:
            if adopt_level_run(shop, record.id, model_id, open_slide(path), tiling) is not None:
                adopted += 1
        except PathologyError:
            continue  # an unreadable slide keeps its old run; Review says why when it is opened
    return adopted


def adopt_level_runs(loaded: "LoadedModel") -> None:
    """Re-key this model's level-based runs that read exactly its resolution-based patches (see core.inference).

    The paths are the data folder's and this session's uploads (the cohort table), all inside
    the allowed folders.
    """
    import json

    if not loaded.tiling.by_resolution:
        return
    paths = tuple(sorted(str(Path(p).absolute()) for p in cohort()["path"] if p))
    _adopt(str(store().path), loaded.model_id, json.dumps(loaded.tiling.to_dict(), sort_keys=True), paths, store_stamp())


def read_model_patch(loaded: "LoadedModel", path: str | Path, x: int, y: int, slide_mpp: float | None) -> np.ndarray:
    """Return the patch at level-0 (x, y) as the model sees it (its resolution or level, resized): uint8 RGB."""
    handle = slide(path)
    plan = read_plan(handle, loaded.tiling, slide_mpp)
    return read_patches(handle, np.array([x]), np.array([y]), plan)[0]


# A shared resource, not cached data: a rerun gets the same arrays back without unpickling
# 100k rows (the pages only read them).
@st.cache_resource(show_spinner=False, max_entries=16)
def _predictions(db: str, run_id: int, n_done: int, finished: float | None):
    return _store(db).read_predictions(run_id)


def predictions(run_id: int, n_done: int | None = None):
    """Return a complete run's patch predictions, shared and read-only (a run's rows never change once complete).

    ``n_done`` (the run summary's count of rows, :func:`run_summaries`) saves the look-up of the run's record.
    """
    if n_done is None:
        run = store().run(run_id)
        return _predictions(str(store().path), run_id, run.n_done, run.finished)
    return _predictions(str(store().path), run_id, int(n_done), None)


@st.cache_resource(show_spinner=False, max_entries=16)
def _grid(db: str, run_id: int, n_done: int):
    from core.heatmap import probability_grid

    rows = _predictions(db, run_id, n_done, None)
    size0 = int(rows.width[0]) if len(rows) else 0
    return probability_grid(rows.x, rows.y, rows.prob, size0)


def probability_grid(run_id: int, n_done: int):
    """Return the probability grid (core.heatmap.probability_grid) of a complete run, computed once per run."""
    return _grid(str(store().path), run_id, int(n_done))


@dataclass(frozen=True)
class LoadedModel:
    """A checkpoint ready to predict: the runner (model on its device) and its metadata."""

    path: Path
    label: str
    runner: PredictionRunner
    metadata: dict

    @property
    def model_id(self) -> str:
        return self.metadata["model_id"]

    @property
    def model(self):
        return self.runner.model

    @property
    def tiling(self) -> TilingParams:
        """The checkpoint's tiling: by its recorded resolution, else by its level."""
        return model_tiling(self.metadata)

    @property
    def params(self) -> dict:
        return run_params(self.tiling)

    @property
    def is_demo(self) -> bool:
        return bool(self.metadata.get("demo"))


@st.cache_resource(show_spinner="Loading the model...", max_entries=8)
def _runner(path: str, mtime: float) -> tuple[PredictionRunner, dict]:
    model, metadata = load_checkpoint(path)
    return PredictionRunner(model, model_id=metadata["model_id"], metadata=metadata), metadata


def model_choices() -> dict[str, Path]:
    """Return label -> checkpoint path: the demo model, models/ folders, runs/*/best.pt, the upload."""
    choices: dict[str, Path] = {}
    if DEMO_MODEL.exists():
        choices[DEMO_LABEL] = DEMO_MODEL
    for folder in (REPO_ROOT / "models", data_dir() / "models"):
        for path in sorted(folder.glob("*.pt")) if folder.is_dir() else []:
            if path != DEMO_MODEL:
                choices[f"{path.stem} ({folder.name}/)"] = path
    runs = REPO_ROOT / "runs"
    for path in sorted(runs.glob("*/best.pt")) if runs.is_dir() else []:
        choices[f"run {path.parent.name} (best)"] = path
    uploaded = st.session_state.get(state.MODEL_UPLOAD)
    if uploaded:
        choices[f"uploaded: {Path(uploaded).name}"] = Path(uploaded)
    return choices


def current_model() -> LoadedModel | None:
    """Return the model chosen in the sidebar, loaded (None if there is none)."""
    choices = model_choices()
    label = st.session_state.get(state.MODEL_CHOICE)
    if label not in choices:
        if not choices:
            return None
        label = next(iter(choices))
    path = choices[label]
    runner, metadata = _runner(str(path), path.stat().st_mtime)
    shown = DEMO_LABEL if path == DEMO_MODEL else label
    return LoadedModel(path, shown, runner, metadata)
