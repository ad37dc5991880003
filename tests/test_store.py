"""Tests of core.store: the SQLite results store (round trips, resume, crash safety, concurrency)."""

from __future__ import annotations

import ast
import json
import os
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from core.errors import SlideError, StoreError
from core.store import (
    SCHEMA_VERSION,
    PatchPredictions,
    ResultStore,
    RunRecord,
    SlideRecord,
    slide_fingerprint,
)

REPO = Path(__file__).resolve().parents[1]
PARAMS = {"patch_size": 512, "level": 0, "tissue": {"method": "otsu", "min_fraction": 0.25}}


def make_slide(path: Path, size: int = 3 * 2**20 + 123, seed: int = 0) -> Path:
    """Write a fake slide file of random bytes (the store only fingerprints it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


@pytest.fixture
def store(tmp_path: Path):
    with ResultStore(tmp_path / "db" / "results.sqlite") as s:
        yield s


@pytest.fixture
def slide(store: ResultStore, tmp_path: Path) -> SlideRecord:
    return store.register_slide(make_slide(tmp_path / "slides" / "tumor_001.tiff"), width=40_000, height=30_000, mpp=0.25)


@pytest.fixture
def run(store: ResultStore, slide: SlideRecord) -> RunRecord:
    store.register_model("vgg-abc123", arch="vgg16", metadata={"epoch": 3})
    return store.get_or_create_run(slide.id, "vgg-abc123", PARAMS)


def grid(n: int, y0: int = 0, side: int = 512, cols: int = 50):
    """Return x, y (level-0 px, top-left) of n patches of a row-major grid starting at row y0."""
    i = np.arange(n)
    return (i % cols) * side, (y0 + i // cols) * side


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def python_child(code: str, **kwargs) -> subprocess.Popen:
    """Start `python -c code` with the repository on sys.path."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, text=True, **kwargs)


# --------------------------------------------------------------------------- opening


def test_new_store_has_schema_wal_and_pragmas(tmp_path: Path):
    db = tmp_path / "a" / "b" / "results.sqlite"
    with ResultStore(db) as s:
        conn = s._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        assert int(version) == SCHEMA_VERSION
        assert s.slides() == [] and s.models() == [] and s.runs() == []
    assert db.is_file()
    with pytest.raises(StoreError, match="closed"):
        s.slides()
    s.close()  # closing twice is harmless


def test_data_persists_across_reopen(tmp_path: Path, run: RunRecord, store: ResultStore):
    x, y = grid(10)
    store.add_predictions(run.id, x, y, 512, 512, np.linspace(0, 1, 10))
    store.close()
    with ResultStore(store.path) as again:
        assert again.read_predictions(run.id).prob.tolist() == np.linspace(0, 1, 10).tolist()
        assert [r.id for r in again.runs()] == [run.id]


def test_non_sqlite_file_is_refused_and_left_unchanged(tmp_path: Path):
    bad = tmp_path / "notes.sqlite"
    content = b"this is a text file, not a database\n" * 200
    bad.write_bytes(content)
    with pytest.raises(StoreError, match="not a SQLite database") as err:
        ResultStore(bad)
    assert str(bad) in str(err.value)
    assert bad.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.sqlite"]  # no -wal / -shm


def test_foreign_sqlite_database_is_refused_and_left_unchanged(tmp_path: Path):
    db = tmp_path / "other.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE patients(id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO patients(name) VALUES ('x')")
    conn.commit()
    conn.close()
    content = db.read_bytes()
    with pytest.raises(StoreError, match="another application") as err:
        ResultStore(db)
    assert str(db) in str(err.value)
    assert db.read_bytes() == content


def test_newer_schema_is_refused_and_left_unchanged(tmp_path: Path):
    db = tmp_path / "results.sqlite"
    ResultStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    content = db.read_bytes()
    with pytest.raises(StoreError, match="newer version") as err:
        ResultStore(db)
    assert str(db) in str(err.value)
    assert db.read_bytes() == content


def test_folder_path_is_refused(tmp_path: Path):
    with pytest.raises(StoreError, match="folder"):
        ResultStore(tmp_path)


def test_store_module_imports_only_stdlib_numpy_and_core():
    tree = ast.parse((REPO / "core" / "store.py").read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert not roots & {"torch", "streamlit", "pandas", "app", "pages"}
    assert roots - set(sys.stdlib_module_names) == {"numpy", "core"}


# --------------------------------------------------------------------------- slides and models


def test_fingerprint_stable_across_copy_and_different_for_other_content(tmp_path: Path):
    a = make_slide(tmp_path / "one" / "slide.svs")
    b = tmp_path / "two" / "renamed.svs"
    b.parent.mkdir()
    shutil.copyfile(a, b)
    os.utime(b, (1, 1))  # another mtime does not matter
    fa = slide_fingerprint(a)
    assert len(fa) == 64 and int(fa, 16) >= 0
    assert slide_fingerprint(b) == fa
    assert slide_fingerprint(make_slide(tmp_path / "c.svs", seed=1)) != fa
    head = bytearray(a.read_bytes())
    head[10] ^= 0xFF
    (tmp_path / "d.svs").write_bytes(bytes(head))
    assert slide_fingerprint(tmp_path / "d.svs") != fa
    assert slide_fingerprint(make_slide(tmp_path / "e.svs", size=a.stat().st_size + 1)) != fa
    small = tmp_path / "small.tif"
    small.write_bytes(b"abc")
    assert slide_fingerprint(small) == slide_fingerprint(small) != fa
    with pytest.raises(SlideError, match="missing.svs"):
        slide_fingerprint(tmp_path / "missing.svs")


def test_register_slide_moved_file_keeps_id_and_updates_path(store: ResultStore, tmp_path: Path):
    src = make_slide(tmp_path / "in" / "tumor_007.tiff")
    first = store.register_slide(src, width=1000, height=800, mpp=None)
    assert (first.name, first.path, first.width, first.height, first.mpp) == (
        "tumor_007", str(src.absolute()), 1000, 800, None)
    assert first.size_bytes == src.stat().st_size
    dst = tmp_path / "archive" / "tumor_007_moved.tiff"
    dst.parent.mkdir()
    src.rename(dst)
    second = store.register_slide(dst, width=1000, height=800, mpp=0.5)
    assert second.id == first.id and second.fingerprint == first.fingerprint
    assert (second.path, second.name, second.mpp) == (str(dst.absolute()), "tumor_007_moved", 0.5)
    assert store.register_slide(dst, width=1000, height=800, mpp=None).mpp == 0.5  # known mpp kept
    assert store.slides() == [store.register_slide(dst, width=1000, height=800, mpp=0.5)]
    other = store.register_slide(make_slide(tmp_path / "normal_001.tiff", seed=5), width=10, height=10, mpp=None)
    assert other.id != first.id and len(store.slides()) == 2
    with pytest.raises(StoreError, match="another size"):
        store.register_slide(dst, width=999, height=800, mpp=0.5)
    with pytest.raises(SlideError):
        store.register_slide(tmp_path / "nope.tiff", width=1, height=1, mpp=None)


def test_register_model_upserts(store: ResultStore, tmp_path: Path):
    store.register_model("m1", arch="vgg16", metadata={"lr": 5e-5, "epochs": 3}, path=tmp_path / "m1.pt")
    store.register_model("m1", arch="vgg16-bn", metadata={"lr": 1e-4})
    store.register_model("m2", arch="tiny", metadata={})
    models = store.models()
    assert [m["id"] for m in models] == ["m1", "m2"]
    assert models[0]["arch"] == "vgg16-bn" and models[0]["metadata"] == {"lr": 1e-4}
    assert models[0]["path"] == str((tmp_path / "m1.pt").absolute())  # kept when None is passed
    with pytest.raises(StoreError, match="JSON"):
        store.register_model("m3", arch="x", metadata={"f": object()})
    with pytest.raises(StoreError, match="non-empty"):
        store.register_model("", arch="x", metadata={})


# --------------------------------------------------------------------------- runs


def test_get_or_create_run_keys_on_canonical_params(store: ResultStore, run: RunRecord, slide: SlideRecord):
    assert (run.status, run.n_done, run.n_total, run.finished, run.slide_name) == ("running", 0, None, None, "tumor_001")
    assert run.params == PARAMS
    reordered = {"tissue": {"min_fraction": 0.25, "method": "otsu"}, "level": np.int64(0), "patch_size": 512}
    assert store.get_or_create_run(slide.id, "vgg-abc123", reordered).id == run.id
    assert store.find_run(slide.id, "vgg-abc123", reordered).id == run.id
    changed = dict(PARAMS, patch_size=256)
    assert store.find_run(slide.id, "vgg-abc123", changed) is None
    other = store.get_or_create_run(slide.id, "vgg-abc123", changed)
    assert other.id != run.id and other.params == changed
    assert [r.id for r in store.runs()] == [run.id, other.id]
    raw = store._conn.execute("SELECT params FROM runs WHERE id = ?", (run.id,)).fetchone()[0]
    assert raw == json.dumps(PARAMS, sort_keys=True, separators=(",", ":"))
    with pytest.raises(StoreError, match="no model"):
        store.get_or_create_run(slide.id, "unknown", PARAMS)
    with pytest.raises(StoreError, match="no slide"):
        store.get_or_create_run(999, "vgg-abc123", PARAMS)
    with pytest.raises(StoreError, match="JSON"):
        store.get_or_create_run(slide.id, "vgg-abc123", {"t": float("nan")})


def test_runs_filters(store: ResultStore, run: RunRecord, slide: SlideRecord, tmp_path: Path):
    store.register_model("m2", arch="tiny", metadata={})
    s2 = store.register_slide(make_slide(tmp_path / "s2.tiff", seed=2), width=5, height=5, mpp=None)
    r2 = store.get_or_create_run(s2.id, "m2", PARAMS)
    r3 = store.get_or_create_run(slide.id, "m2", PARAMS)
    store.finish_run(r3.id)
    assert [r.id for r in store.runs(model_id="m2")] == [r2.id, r3.id]
    assert [r.id for r in store.runs(slide_id=slide.id)] == [run.id, r3.id]
    assert [r.id for r in store.runs(status="complete")] == [r3.id]
    assert [r.id for r in store.runs(model_id="m2", slide_id=slide.id, status="running")] == []
    with pytest.raises(StoreError, match="status"):
        store.runs(status="done")


def test_run_lifecycle_finish_fail_reset(store: ResultStore, run: RunRecord):
    store.set_total(run.id, 10)
    x, y = grid(10)
    store.add_predictions(run.id, x[:5], y[:5], 512, 512, np.full(5, 0.5))
    with pytest.raises(StoreError, match="5 of 10"):
        store.finish_run(run.id)
    assert store.run(run.id).status == "running"

    store.fail_run(run.id, "CUDA out of memory")
    failed = store.run(run.id)
    assert (failed.status, failed.message, failed.n_done) == ("failed", "CUDA out of memory", 5)
    assert failed.finished is not None
    # Resume: the same run comes back with its rows; only the missing locations remain.
    resumed = store.get_or_create_run(run.slide_id, run.model_id, PARAMS)
    assert resumed.id == run.id
    done = store.done_locations(run.id)
    assert done == set(zip(x[:5].tolist(), y[:5].tolist()))
    todo = [i for i in range(10) if (int(x[i]), int(y[i])) not in done]
    assert store.add_predictions(run.id, x[todo], y[todo], 512, 512, np.full(5, 0.25)) == 5
    store.finish_run(run.id)
    complete = store.run(run.id)
    assert (complete.status, complete.n_done, complete.n_total, complete.message) == ("complete", 10, 10, None)
    assert complete.finished >= complete.started

    with pytest.raises(StoreError, match="complete"):
        store.add_predictions(run.id, [0], [99999], [512], [512], [0.5])
    with pytest.raises(StoreError, match="complete"):
        store.fail_run(run.id, "late error")
    store.reset_run(run.id)
    reset = store.run(run.id)
    assert (reset.status, reset.n_done, reset.n_total, reset.finished) == ("running", 0, 10, None)
    with pytest.raises(StoreError, match="no run"):
        store.finish_run(12345)
    with pytest.raises(StoreError, match=">= 0"):
        store.set_total(run.id, -1)


# --------------------------------------------------------------------------- predictions


def test_round_trip_values_order_and_dtypes(store: ResultStore, run: RunRecord):
    rng = np.random.default_rng(3)
    x, y = grid(500, cols=25)
    prob = rng.random(500).astype(np.float32)
    w = np.full(500, 1024, dtype=np.int32)
    perm = rng.permutation(500)  # written in random order, read back sorted by (y, x)
    assert store.add_predictions(run.id, x[perm], y[perm], w[perm], w[perm], prob[perm]) == 500
    got = store.read_predictions(run.id)
    assert isinstance(got, PatchPredictions) and got.slide == "tumor_001" and len(got) == 500
    order = np.lexsort((x, y))
    np.testing.assert_array_equal(got.x, x[order])
    np.testing.assert_array_equal(got.y, y[order])
    np.testing.assert_array_equal(got.width, w[order])
    np.testing.assert_array_equal(got.height, w[order])
    np.testing.assert_array_equal(got.prob, prob[order].astype(np.float64))  # float32 -> float64 exactly
    assert [a.dtype for a in (got.x, got.y, got.width, got.height, got.prob)] == [np.int64] * 4 + [np.float64]
    assert np.all(np.diff(got.y * 10**9 + got.x) > 0)
    assert not got.prob.flags.writeable
    assert store.run(run.id).n_done == 500


def test_empty_run_reads_empty_typed_arrays(store: ResultStore, run: RunRecord):
    assert store.add_predictions(run.id, [], [], [], [], []) == 0
    got = store.read_predictions(run.id)
    assert len(got) == 0 and got.x.dtype == np.int64 and got.prob.dtype == np.float64
    assert store.done_locations(run.id) == set()


def test_overlapping_batches_never_duplicate(store: ResultStore, run: RunRecord):
    x, y = grid(150)
    assert store.add_predictions(run.id, x[:100], y[:100], 512, 512, np.full(100, 0.1)) == 100
    assert store.add_predictions(run.id, x[50:], y[50:], 512, 512, np.full(100, 0.9)) == 50
    assert store.add_predictions(run.id, x[:150], y[:150], 512, 512, np.full(150, 0.5)) == 0
    got = store.read_predictions(run.id)
    assert len(got) == 150 and store.run(run.id).n_done == 150
    assert len(store.done_locations(run.id)) == 150
    by_loc = dict(zip(zip(got.x.tolist(), got.y.tolist()), got.prob.tolist()))
    assert by_loc[(int(x[60]), int(y[60]))] == 0.1  # the first stored value wins
    assert by_loc[(int(x[120]), int(y[120]))] == 0.9


@pytest.mark.parametrize("bad", [1.5, float("nan"), -0.01, float("inf")])
def test_bad_probability_writes_nothing(store: ResultStore, run: RunRecord, bad: float):
    x, y = grid(20)
    prob = np.full(20, 0.5)
    prob[13] = bad
    with pytest.raises(StoreError, match=r"\[0, 1\]"):
        store.add_predictions(run.id, x, y, 512, 512, prob)
    assert store.run(run.id).n_done == 0 and len(store.read_predictions(run.id)) == 0


def test_bad_shapes_write_nothing(store: ResultStore, run: RunRecord):
    x, y = grid(20)
    with pytest.raises(StoreError, match="equal lengths"):
        store.add_predictions(run.id, x, y[:19], 512, 512, np.full(20, 0.5))
    with pytest.raises(StoreError, match="whole numbers"):
        store.add_predictions(run.id, x + 0.5, y, 512, 512, np.full(20, 0.5))
    with pytest.raises(StoreError, match="positive"):
        store.add_predictions(run.id, x, y, 0, 512, np.full(20, 0.5))
    with pytest.raises(StoreError, match="no run"):
        store.add_predictions(run.id + 100, x, y, 512, 512, np.full(20, 0.5))
    assert store.run(run.id).n_done == 0


def test_read_100k_rows(store: ResultStore, run: RunRecord):
    """100k rows come back whole and in (y, x) order (their speed is bench/bench_store.py's, not a test's)."""
    x, y = grid(100_000, cols=400)
    prob = np.random.default_rng(0).random(100_000)
    store.add_predictions(run.id, x, y, 512, 512, prob)
    got = store.read_predictions(run.id)
    assert len(got) == 100_000
    order = np.lexsort((x, y))
    np.testing.assert_array_equal(got.x, x[order])
    np.testing.assert_allclose(got.prob, prob[order])


def test_predictions_for_model_picks_complete_runs(store: ResultStore, run: RunRecord, slide: SlideRecord,
                                                   tmp_path: Path):
    s2 = store.register_slide(make_slide(tmp_path / "normal_002.tiff", seed=9), width=9, height=9, mpp=None)
    p2 = dict(PARAMS, patch_size=256)
    store.add_predictions(run.id, [0], [0], [512], [512], [0.1])
    store.finish_run(run.id)
    newer = store.get_or_create_run(slide.id, "vgg-abc123", p2)
    store.add_predictions(newer.id, [0, 256], [0, 0], 256, 256, [0.7, 0.8])
    store.finish_run(newer.id)
    unfinished = store.get_or_create_run(s2.id, "vgg-abc123", PARAMS)
    store.add_predictions(unfinished.id, [0], [0], [512], [512], [0.3])

    latest = store.predictions_for_model("vgg-abc123")
    assert list(latest) == ["tumor_001"]  # the running run of normal_002 is left out
    assert latest["tumor_001"].prob.tolist() == [0.7, 0.8]
    exact = store.predictions_for_model("vgg-abc123", PARAMS)
    assert exact["tumor_001"].prob.tolist() == [0.1]
    store.finish_run(unfinished.id)
    assert sorted(store.predictions_for_model("vgg-abc123", PARAMS)) == ["normal_002", "tumor_001"]
    assert store.predictions_for_model("no-such-model") == {}


def test_write_csv_exact(store: ResultStore, run: RunRecord, slide: SlideRecord, tmp_path: Path):
    store.add_predictions(run.id, [512, 0, 0], [0, 512, 0], 512, 512, [0.25, 1.0, 0.0])
    store.register_model("m2", arch="tiny", metadata={})
    s2 = store.register_slide(make_slide(tmp_path / "normal_002.tif", seed=4), width=9, height=9, mpp=None)
    r2 = store.get_or_create_run(s2.id, "m2", {})
    store.add_predictions(r2.id, [1024], [2048], [256], [128], [0.123456789])
    out = tmp_path / "out" / "patches.csv"
    assert store.write_csv(out, [r2.id, run.id, r2.id]) == 4
    assert out.read_text() == (
        "slide,x,y,width,height,prob\n"
        "normal_002,1024,2048,256,128,0.123456789\n"
        "tumor_001,0,0,512,512,0.0\n"
        "tumor_001,512,0,512,512,0.25\n"
        "tumor_001,0,512,512,512,1.0\n"
    )
    assert sorted(p.name for p in out.parent.iterdir()) == ["patches.csv"]
    with pytest.raises(StoreError, match="no run"):
        store.write_csv(tmp_path / "never.csv", [run.id, 999])
    assert not (tmp_path / "never.csv").exists()


# --------------------------------------------------------------------------- crash safety and concurrency


_KILLED_WRITER = """
    import sys, time
    import numpy as np
    from core.store import ResultStore

    DB, RUN, MODE = {db!r}, {run_id}, {mode!r}
    store = ResultStore(DB)
    n = 300_000
    x = np.arange(n) % 1000 * 64
    y = 64 * (1 + np.arange(n) // 1000)   # rows below the committed batch (y = 0)

    def ready():
        sys.stdout.write("ready\\n")
        sys.stdout.flush()
        time.sleep(600)  # killed here, before COMMIT runs

    if MODE == "api":
        # The real add_predictions; stop as the COMMIT statement starts.
        store._conn.set_trace_callback(lambda sql: ready() if sql.strip().upper().startswith("COMMIT") else None)
        store.add_predictions(RUN, x, y, 64, 64, np.full(n, 0.5))
    else:
        conn = store._conn
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO predictions VALUES (?, ?, ?, 64, 64, 0.5)",
                         zip([RUN] * n, x.tolist(), y.tolist()))
        conn.execute("UPDATE runs SET status = 'complete' WHERE id = ?", (RUN,))
        ready()
"""


@pytest.mark.parametrize("mode", ["api", "raw"])
def test_killed_writer_leaves_only_committed_batch(tmp_path: Path, mode: str):
    db = tmp_path / "results.sqlite"
    with ResultStore(db) as s:
        sl = s.register_slide(make_slide(tmp_path / "s.tiff"), width=64_000, height=64_000, mpp=0.25)
        s.register_model("m", arch="tiny", metadata={})
        run = s.get_or_create_run(sl.id, "m", {})
        x0 = np.arange(1000) * 64
        s.add_predictions(run.id, x0, np.zeros(1000, np.int64), 64, 64, np.full(1000, 0.25))

    child = python_child(_KILLED_WRITER.format(db=str(db), run_id=run.id, mode=mode), stdout=subprocess.PIPE)
    try:
        readable, _, _ = select.select([child.stdout], [], [], 60)
        assert readable and child.stdout.readline().strip() == "ready", "child never reached its COMMIT"
        # The uncommitted pages really reached the WAL: the kill hits a half-written file.
        assert Path(str(db) + "-wal").stat().st_size > 1_000_000
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    assert integrity(db) == "ok"
    with ResultStore(db) as s:
        after = s.run(run.id)
        assert (after.status, after.n_done) == ("running", 1000)
        got = s.read_predictions(run.id)
        np.testing.assert_array_equal(got.x, x0)
        assert np.all(got.y == 0) and np.all(got.prob == 0.25)
        # The dead writer's lock is gone: the next batch commits at once.
        assert s.add_predictions(run.id, [0], [64], [64], [64], [0.5]) == 1
    assert integrity(db) == "ok"


_SHARD_WRITER = """
    import sys
    import numpy as np
    from core.store import ResultStore

    DB, SLIDE, SHARD = {db!r}, {slide!r}, {shard}
    with ResultStore(DB) as store:
        sl = store.register_slide(SLIDE, width=100_000, height=100_000, mpp=0.25)
        store.register_model("m", arch="tiny", metadata={{"shard": SHARD}})
        run = store.get_or_create_run(sl.id, "m", {{"shard": SHARD}})
        store.set_total(run.id, 10_000)
        for b in range(40):
            i = np.arange(b * 250, (b + 1) * 250)
            store.add_predictions(run.id, i % 100 * 256, i // 100 * 256, 256, 256, np.full(250, SHARD / 10))
            store.read_predictions(run.id)
        store.finish_run(run.id)
        print(run.id)
"""


def test_two_processes_write_one_new_file_concurrently(tmp_path: Path):
    db = tmp_path / "shared" / "results.sqlite"  # does not exist yet: both race to create it
    slide_file = make_slide(tmp_path / "s.tiff")
    children = [
        python_child(_SHARD_WRITER.format(db=str(db), slide=str(slide_file), shard=k),
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for k in (1, 2)
    ]
    outputs = [c.communicate(timeout=120) for c in children]
    for c, (out, err) in zip(children, outputs):
        assert c.returncode == 0, err
    run_ids = sorted(int(out) for out, _ in outputs)
    assert len(set(run_ids)) == 2
    assert integrity(db) == "ok"
    with ResultStore(db) as s:
        assert len(s.slides()) == 1 and len(s.models()) == 1
        runs = s.runs()
        assert sorted(r.id for r in runs) == run_ids
        for r in runs:
            assert (r.status, r.n_done, r.n_total) == ("complete", 10_000, 10_000)
            assert np.all(s.read_predictions(r.id).prob == r.params["shard"] / 10)


def test_threads_share_one_store(store: ResultStore, slide: SlideRecord):
    store.register_model("m", arch="tiny", metadata={})
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            r = store.get_or_create_run(slide.id, "m", {"thread": k})
            for b in range(20):
                x, y = grid(100, y0=b * 2)
                store.add_predictions(r.id, x, y, 512, 512, np.full(100, k / 10))
                store.runs(model_id="m")
            store.finish_run(r.id)
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    runs = store.runs(model_id="m")
    assert len(runs) == 4 and all(r.status == "complete" and r.n_done == 2000 for r in runs)


def test_run_summaries_aggregate_per_slide(tmp_path):
    """The cohort table's query: max probability and counts per slide without reading every row."""
    import numpy as np

    from core.store import ResultStore

    slide_file = tmp_path / "s1.tiff"
    slide_file.write_bytes(b"slide one")
    with ResultStore(tmp_path / "r.sqlite") as store:
        record = store.register_slide(slide_file, width=100, height=100, mpp=None)
        store.register_model("m1", arch="tiny", metadata={})
        run = store.get_or_create_run(record.id, "m1", {"tiling": {"level": 0}})
        store.set_total(run.id, 3)
        store.add_predictions(run.id, np.array([0, 10]), np.array([0, 0]), 10, 10, np.array([0.2, 0.7]))
        summary = store.run_summaries("m1", {"tiling": {"level": 0}})
        assert summary == {"s1": {"run_id": run.id, "status": "running", "n_total": 3, "n_done": 2, "max_prob": 0.7, "message": None}}
        assert store.run_summaries("m1", {"tiling": {"level": 1}}) == {}
