"""Cohorts bigger than one machine: store merge, per-node data roots, and torchrun over two simulated nodes.

A "node" here is a torchrun agent started with ``--nnodes 2 --rdzv-backend c10d`` in its own
working folder, with its own copy of the slides (``--data-root``) and nothing shared on disk
with the other node: what one node writes, the other never opens.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cli import main
from core.errors import CohortError, StoreError
from core.store import ResultStore
from tests.conftest import ROOT

TORCHRUN = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")

# --------------------------------------------------------------------------------------------
# Helpers


def dump(path: Path) -> dict:
    """Return every row of a store's tables (leases aside), for 'nothing changed' comparisons."""
    conn = sqlite3.connect(path)
    try:
        return {
            table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall())
            for table in ("meta", "slides", "models", "runs", "predictions")
        }
    finally:
        conn.close()


def by_slide(path: Path) -> dict[str, tuple]:
    """Return slide name -> (status, sorted (x, y, w, h) rows, probabilities in that order) of a store's runs."""
    out = {}
    with ResultStore(path) as store:
        for run in store.runs():
            p = store.read_predictions(run.id)
            out[run.slide_name] = (run.status, np.stack([p.x, p.y, p.width, p.height], axis=1).tolist(), p.prob.copy())
    return out


def assert_same_results(got: dict, want: dict, atol: float = 1e-5) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name][0] == want[name][0] == "complete", name
        assert got[name][1] == want[name][1], name  # the same patches, level-0 px
        np.testing.assert_allclose(got[name][2], want[name][2], atol=atol, err_msg=name)


def fake_store(path: Path, slide: Path, probs: list[float], *, complete: bool = True, total: int = 4, xs=None) -> Path:
    """Write a store with one run of model 'm' on ``slide`` (a 100 x 100 px stand-in): patches at x = 0, 10, ..."""
    with ResultStore(path) as store:
        record = store.register_slide(slide, width=100, height=100, mpp=0.5)
        store.register_model("m", arch="tiny", metadata={"patch_size": 10})
        run = store.get_or_create_run(record.id, "m", {"tiling": {"patch_size": 10}})
        store.set_total(run.id, total)
        xs = xs if xs is not None else [10 * i for i in range(len(probs))]
        store.add_predictions(run.id, xs, [0] * len(probs), 10, 10, probs)
        if complete:
            store.finish_run(run.id)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_command(port: int, nnodes: int, nproc: int, script: list[str]) -> list[str]:
    return [
        TORCHRUN, "--nnodes", str(nnodes), "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d",
        "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"job{port}", *script,
    ]


def start_node(folder: Path, command: list[str]) -> subprocess.Popen:
    """Start one node's torchrun agent in its own folder (its own process group, so it can be killed whole)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("PATHEX_DATA_ROOT", None)
    log = open(folder / "node.log", "a")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def descendants(pid: int) -> list[int]:
    """Return the process ids below ``pid`` (torchrun starts its workers in sessions of their own)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found += [child, *descendants(child)]
    return found


def kill_node(proc: subprocess.Popen) -> None:
    """SIGKILL a node's agent and every process below it: the machine is gone."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def run_nodes(folders: list[Path], command: list[str], timeout: float = 300) -> None:
    """Start one node per folder (in order, so the first is normally rank 0) and wait for all; assert they succeed."""
    procs = []
    for folder in folders:
        procs.append(start_node(folder, command))
        time.sleep(0.5)
    for folder, proc in zip(folders, procs):
        assert proc.wait(timeout=timeout) == 0, (folder / "node.log").read_text()[-4000:]


def make_node(tmp_path: Path, name: str, demo_cohort: Path) -> Path:
    """A node's working folder: its own copy of the slides under data/, a cohort table with paths relative to it."""
    node = tmp_path / name
    shutil.copytree(demo_cohort / "slides", node / "data" / "slides")
    shutil.copytree(demo_cohort / "annotations", node / "data" / "annotations")
    rows = [("demo_001", "normal", "train"), ("demo_002", "tumor", "train"), ("demo_003", "tumor", "val"), ("demo_004", "normal", "val")]
    with open(node / "cohort.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide", "label", "split", "path"])
        writer.writerows([(s, label, split, f"slides/{s}.tiff") for s, label, split in rows])
    return node


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from core.model import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, build_model("tiny"), {"patch_size": 64, "level": 1})
    return path


# --------------------------------------------------------------------------------------------
# store merge


def test_merge_adds_completes_and_is_idempotent(tmp_path):
    a, b = tmp_path / "a.tiff", tmp_path / "b.tiff"
    a.write_bytes(os.urandom(4000))
    b.write_bytes(os.urandom(5000))
    node0 = fake_store(tmp_path / "n0.sqlite", a, [0.1, 0.2, 0.3, 0.4])
    node1_partial = fake_store(tmp_path / "n1p.sqlite", b, [0.5, 0.6], complete=False)
    node1 = fake_store(tmp_path / "n1.sqlite", b, [0.5, 0.6, 0.7, 0.8])
    target = tmp_path / "merged.sqlite"
    with ResultStore(target) as store:
        first = store.merge(node0)
        assert (first.slides_added, first.models_added, first.runs_added, first.rows_added) == (1, 1, 1, 4)
        partial = store.merge(node1_partial)
        assert (partial.runs_added, partial.rows_added) == (1, 2)
        done = store.merge(node1)  # the complete run replaces the unfinished one
        assert (done.runs_completed, done.rows_added) == (1, 2)
    merged = dump(target)
    with ResultStore(target) as store:
        for source in (node0, node1, node1_partial, node0):
            again = store.merge(source)
            assert not again.changed and again.runs_same == 1
        assert {r.slide_name: (r.status, r.n_done) for r in store.runs()} == {"a": ("complete", 4), "b": ("complete", 4)}
        np.testing.assert_allclose(store.read_predictions(store.runs()[1].id).prob, [0.5, 0.6, 0.7, 0.8])
    assert dump(target) == merged  # merging twice changes nothing
    # The sources were opened read-only.
    assert by_slide(node1_partial)["b"][0] == "running"


def test_merge_refuses_conflicting_runs_and_leaves_the_target_unchanged(tmp_path, capsys):
    a = tmp_path / "a.tiff"
    a.write_bytes(os.urandom(4000))
    target = tmp_path / "merged.sqlite"
    with ResultStore(target) as store:
        store.merge(fake_store(tmp_path / "ok.sqlite", a, [0.1, 0.2, 0.3, 0.4]))
    before = dump(target)
    conflicts = {
        "other probabilities": (fake_store(tmp_path / "p.sqlite", a, [0.1, 0.2, 0.9, 0.4]), "0.6 apart"),
        "other patches": (fake_store(tmp_path / "x.sqlite", a, [0.1, 0.2, 0.3, 0.4], xs=[0, 10, 20, 40]), "3 in common"),
        "other expected count": (fake_store(tmp_path / "n.sqlite", a, [0.1, 0.2, 0.3], total=3), "expects 3 patches"),
    }
    for what, (source, message) in conflicts.items():
        with ResultStore(target) as store, pytest.raises(StoreError, match=message):
            store.merge(source)
        assert dump(target) == before, what
    # Within the tolerance (bf16 on one node, fp32 on another) the runs are the same result.
    close = fake_store(tmp_path / "close.sqlite", a, [0.11, 0.2, 0.29, 0.4])
    with ResultStore(target) as store:
        assert not store.merge(close).changed
    # The command line: one error line, exit 2, the target unchanged; a good source first is merged.
    status = main(["store", "merge", str(conflicts["other probabilities"][0]), "--into", str(target)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("error:") == 1 and "conflicts with results store" in err
    assert dump(target) == before
    for bad in (tmp_path / "missing.sqlite", a):
        assert main(["store", "merge", str(bad), "--into", str(target)]) == 2
        assert capsys.readouterr().err.startswith("error: ")
    assert main(["store", "merge", str(target), "--into", str(target)]) == 2
    assert "itself" in capsys.readouterr().err
    assert dump(target) == before


def test_store_merge_command_writes_the_csv_of_the_merged_store(tmp_path, capsys):
    a, b = tmp_path / "a.tiff", tmp_path / "b.tiff"
    a.write_bytes(os.urandom(4000))
    b.write_bytes(os.urandom(5000))
    sources = [fake_store(tmp_path / "0.sqlite", a, [0.1, 0.2], total=2), fake_store(tmp_path / "1.sqlite", b, [0.3, 0.4], total=2)]
    out = tmp_path / "patches.csv"
    args = ["store", "merge", *map(str, sources), "--into", str(tmp_path / "m.sqlite"), "--csv", str(out)]
    assert main(args) == 0
    rows = list(csv.reader(out.open()))
    assert rows == [["slide", "x", "y", "width", "height", "prob"], ["a", "0", "0", "10", "10", "0.1"], ["a", "10", "0", "10", "10", "0.2"],
                    ["b", "0", "0", "10", "10", "0.3"], ["b", "10", "0", "10", "10", "0.4"]]
    assert main(args) == 0  # twice: the same file
    assert list(csv.reader(out.open())) == rows
    assert "0 runs added" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# A per-node data root


def test_cohort_paths_resolve_under_the_data_root_and_may_not_leave_it(tmp_path, monkeypatch):
    from core.cohort import read_cohort_rows

    root = tmp_path / "node-copy"
    (root / "slides").mkdir(parents=True)
    (root / "slides" / "s1.tiff").write_bytes(b"x")
    (root / "annotations").mkdir()
    (root / "annotations" / "s1.geojson").write_text("{}")
    table = tmp_path / "tables" / "cohort.csv"
    table.parent.mkdir()
    table.write_text("slide,label,path\ns1,tumor,slides/s1.tiff\n")
    [row] = read_cohort_rows(table, root)
    assert row.path == (root / "slides" / "s1.tiff").resolve()
    assert row.annotations == root / "annotations" / "s1.geojson"
    assert read_cohort_rows(table)[0].path is None  # without a root: beside the table, where there is none
    monkeypatch.setenv("PATHEX_DATA_ROOT", str(root))
    assert read_cohort_rows(table)[0].path == row.path  # the environment names the root
    table.write_text("slide,label\ns1,tumor\n")  # no path column: by name under the root
    assert read_cohort_rows(table)[0].path == (root / "slides" / "s1.tiff")
    (tmp_path / "secret.tiff").write_bytes(b"x")
    table.write_text("slide,label,path\ns1,tumor,../secret.tiff\n")
    with pytest.raises(CohortError, match=r"line 2: .*outside the data folders"):
        read_cohort_rows(table)
    monkeypatch.setenv("PATHEX_DATA_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(CohortError, match="not a folder"):
        read_cohort_rows(table)


def test_predict_with_a_cohort_under_a_data_root_reports_a_missing_slide(demo_cohort, checkpoint, tmp_path, capsys):
    node = make_node(tmp_path, "node", demo_cohort)
    (node / "data" / "slides" / "demo_004.tiff").unlink()  # this machine lacks one slide
    db = node / "r.sqlite"
    status = main(["predict", "--cohort", str(node / "cohort.csv"), "--data-root", str(node / "data"), "--model", str(checkpoint),
                   "--db", str(db), "--csv", str(node / "p.csv"), "--device", "cpu", "--workers", "1"])
    err = capsys.readouterr().err
    assert status == 2 and "demo_004: slide file not found on this machine" in err and "1 of 4 slides failed" in err
    assert sorted(by_slide(db)) == ["demo_001", "demo_002", "demo_003"]
    assert {r["slide"] for r in csv.DictReader((node / "p.csv").open())} == {"demo_001", "demo_002", "demo_003"}


# --------------------------------------------------------------------------------------------
# Two simulated nodes: predict

SLOW_PREDICT = """
import os, sys, time
from core.inference import PredictionRunner
_forward = PredictionRunner.forward
def forward(self, patches):  # slowed down so that a kill lands part-way through a slide
    time.sleep(float(os.environ.get("SLOW_FORWARD_S", "0")))
    return _forward(self, patches)
PredictionRunner.forward = forward
from core.cli import main
sys.exit(main(sys.argv[1:]))
"""


def predict_args(checkpoint: Path) -> list[str]:
    return ["predict", "--cohort", "cohort.csv", "--data-root", "data", "--model", str(checkpoint), "--db", "results.sqlite",
            "--csv", "patches.csv", "--device", "cpu", "--precision", "fp32", "--workers", "1", "--batch-size", "4"]


def rows_in(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_two_nodes_predict_equals_one_process_even_after_a_node_is_killed(demo_cohort, checkpoint, tmp_path):
    reference = make_node(tmp_path, "single", demo_cohort)
    os.chdir(reference)
    try:
        assert main(predict_args(checkpoint)) == 0
    finally:
        os.chdir(ROOT)
    want = by_slide(reference / "results.sqlite")
    want_csv = list(csv.reader((reference / "patches.csv").open()))
    assert len(want) == 4 and all(len(v[1]) > 0 for v in want.values())

    script = tmp_path / "slow_core.py"
    script.write_text(SLOW_PREDICT)
    nodes = [make_node(tmp_path, "node-a", demo_cohort), make_node(tmp_path, "node-b", demo_cohort)]
    command = node_command(free_port(), 2, 1, [str(script), *predict_args(checkpoint)])

    # Run 1: node B is killed (SIGKILL: its agent and its worker) once it has committed some
    # work; node A's job fails by itself within seconds (no hang).
    os.environ["SLOW_FORWARD_S"] = "0.3"
    try:
        a = start_node(nodes[0], command)
        time.sleep(0.5)
        b = start_node(nodes[1], command)
        shard_b = nodes[1] / "results.sqlite.shards" / "local-0.sqlite"
        deadline = time.monotonic() + 240
        while rows_in(shard_b) == 0 and b.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b.poll() is None, "node B finished before it could be killed: " + (nodes[1] / "node.log").read_text()[-3000:]
        kill_node(b)
        try:
            status = a.wait(timeout=180)
        except subprocess.TimeoutExpired:
            kill_node(a)
            raise
    finally:
        os.environ.pop("SLOW_FORWARD_S", None)
    killed_rows = rows_in(shard_b)
    assert killed_rows > 0
    # Node A ends by itself, failed: its rank reports the stopped peer in one line at the gather,
    # unless B's agent hosted the rendezvous store (whichever agent bound the port first on this
    # one host), in which case A's agent stops A's worker before it gets there.
    log_a = (nodes[0] / "node.log").read_text()
    assert status != 0, log_a[-4000:]
    assert "error: another rank stopped while" in log_a or "RendezvousConnectionError" in log_a or "SIGTERM" in log_a, log_a[-4000:]
    # Rank 0 merged its own store before it waited for B's: what is there is complete, and B's
    # slides are not.
    for node in nodes:
        if (node / "results.sqlite").is_file():
            partial = by_slide(node / "results.sqlite")
            assert len(partial) < 4 and all(v[0] == "complete" for v in partial.values())

    # Run 2: the same job again. The merged store and the CSV (on rank 0's node: the only CSV,
    # run 1 never got that far) equal the single process's.
    run_nodes(nodes, command)
    merged = [n for n in nodes if (n / "patches.csv").is_file()]
    assert len(merged) == 1
    assert_same_results(by_slide(merged[0] / "results.sqlite"), want)
    got_csv = list(csv.reader((merged[0] / "patches.csv").open()))
    assert got_csv[0] == want_csv[0] and [r[:5] for r in got_csv] == [r[:5] for r in want_csv]
    np.testing.assert_allclose([float(r[5]) for r in got_csv[1:]], [float(r[5]) for r in want_csv[1:]], atol=1e-5)
    assert rows_in(shard_b) >= killed_rows  # committed work is never lost


# --------------------------------------------------------------------------------------------
# Two simulated nodes: training

TRAIN_ARGS = ["-m", "core", "train", "--preset", "demo", "--cohort", "cohort.csv", "--data-root", "data", "--out", "run",
              "--epochs", "1", "--samples-per-epoch", "32", "--batch-size", "8", "--val-max-patches", "64",
              "--patch-size", "64",  # the fixture's val tumour (demo_003) is too small for a 128 px patch
              "--no-test-slide-auc", "--workers", "1", "--device", "cpu"]


def state_of(folder: Path) -> dict:
    return torch.load(folder / "run" / "last-state.pt", map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_two_nodes_train_like_one_node_with_two_processes_and_resume_anywhere(demo_cohort, tmp_path, monkeypatch):
    from core.model import load_checkpoint

    one = make_node(tmp_path, "one-node", demo_cohort)
    run_nodes([one], node_command(free_port(), 1, 2, TRAIN_ARGS))
    nodes = [make_node(tmp_path, "node-a", demo_cohort), make_node(tmp_path, "node-b", demo_cohort)]
    run_nodes(nodes, node_command(free_port(), 2, 1, TRAIN_ARGS))
    [writer] = [n for n in nodes if (n / "run").is_dir()]  # only global rank 0 writes
    other = nodes[1] if writer is nodes[0] else nodes[0]
    want, got = state_of(one), state_of(writer)
    assert got["epoch"] == want["epoch"] == 1
    for name, tensor in want["model"].items():
        # The same world size, the same ranks' samples, the same all-reduce: the same weights.
        torch.testing.assert_close(got["model"][name], tensor, rtol=1e-6, atol=1e-7)
    _, meta = load_checkpoint(writer / "run" / "best.pt")
    assert meta["training"]["world_size"] == 2 and meta["training"]["command"].startswith("torchrun --nnodes 2 --nproc-per-node 1")

    # Resume for a second epoch, the node without the run folder started first (so normally
    # rank 0 now): the state is read where it is, broadcast, and the run continues.
    run_nodes([other, writer], node_command(free_port(), 2, 1, [*TRAIN_ARGS, "--resume", "--epochs", "2"]))
    finals = {n: state_of(n)["epoch"] for n in nodes if (n / "run" / "last-state.pt").is_file()}
    assert max(finals.values()) == 2
    latest = max(finals, key=finals.get)
    assert len(list(csv.DictReader((latest / "run" / "metrics.csv").open()))) == 2

    # And once more on one process (the node count changed again): epoch 3 from that folder.
    monkeypatch.setenv("PATHEX_DATA_ROOT", str(latest / "data"))  # restored after the test (train sets it from --data-root)
    os.chdir(latest)
    try:
        args = [a for a in TRAIN_ARGS if a != "-m" and a != "core"]
        assert main([*args, "--resume", "--epochs", "3"]) == 0
    finally:
        os.chdir(ROOT)
    state = state_of(latest)
    assert state["epoch"] == 3 and [m["epoch"] for m in state["history"]] == [1, 2, 3]


@pytest.mark.slow
def test_two_nodes_that_see_other_slides_both_stop_before_computing(demo_cohort, checkpoint, tmp_path):
    # Sharding is by name, never by a machine's listing; machines whose lists differ would
    # shard differently, so every rank refuses (exit 2, one error line) and writes nothing.
    nodes = [make_node(tmp_path, "node-a", demo_cohort), make_node(tmp_path, "node-b", demo_cohort)]
    (nodes[1] / "data" / "slides" / "demo_002.tiff").unlink()
    args = ["-m", "core", "predict", "slides", "--data-root", "data", "--model", str(checkpoint), "--db", "results.sqlite",
            "--device", "cpu", "--workers", "1"]
    command = node_command(free_port(), 2, 1, args)
    procs = [start_node(nodes[0], command)]
    time.sleep(0.5)
    procs.append(start_node(nodes[1], command))
    assert [p.wait(timeout=300) for p in procs] != [0, 0]
    for node in nodes:
        log = (node / "node.log").read_text()
        assert "lists other slides than rank 0 (3 vs 4; e.g. demo_002)" in log or "(4 vs 3; e.g. demo_002)" in log, log[-3000:]
        assert not (node / "results.sqlite.shards").exists() and not (node / "results.sqlite").exists()


def test_predict_resolves_relative_slide_arguments_under_the_data_root(demo_cohort, checkpoint, tmp_path, capsys):
    node = make_node(tmp_path, "node", demo_cohort)
    db = tmp_path / "r.sqlite"
    common = ["--model", str(checkpoint), "--db", str(db), "--device", "cpu", "--workers", "1", "--data-root", str(node / "data")]
    assert main(["predict", "slides/demo_001.tiff", *common]) == 0
    assert sorted(by_slide(db)) == ["demo_001"]
    assert main(["predict", "../cohort.csv", *common]) == 2  # outside the root: refused before it is opened
    assert "outside the data folders" in capsys.readouterr().err
    assert main(["predict", "slides", "--cohort", str(node / "cohort.csv"), *common]) == 2
    assert "not both" in capsys.readouterr().err
