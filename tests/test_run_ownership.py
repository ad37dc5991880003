"""One owner per run: a second predict on the same slide waits and reuses, a dead owner's run is taken over."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from core.store import ResultStore
from tests.conftest import ROOT


def test_leases_block_live_owners_and_expire(tmp_path):
    slide = tmp_path / "s.png"
    slide.write_bytes(b"not read")
    with ResultStore(tmp_path / "r.sqlite") as store:
        record = store.register_slide(slide, width=10, height=10, mpp=None)
        store.register_model("m", arch="tiny", metadata={})
        run = store.get_or_create_run(record.id, "m", {"tiling": {}})
        remote_a, remote_b = "other-host:1:a", "other-host:2:b"
        assert store.claim_run(run.id, remote_a)
        assert not store.claim_run(run.id, remote_b)  # a live lease elsewhere
        assert store.claim_run(run.id, remote_a)  # its owner may claim again
        assert store.claim_run(run.id, remote_b, lease_seconds=0.0)  # expired: taken over
        assert store.lease(run.id)[0] == remote_b
        store.release_run(run.id, remote_a)  # not the owner: nothing happens
        assert store.lease(run.id)[0] == remote_b
        store.release_run(run.id, remote_b)
        assert store.lease(run.id) is None
        # A process of this host that has exited holds no lease, however fresh its heartbeat.
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
        assert store.claim_run(run.id, f"{socket.gethostname()}:{gone}:x")
        assert store.claim_run(run.id, f"{socket.gethostname()}:999999999:y")


def test_two_predicts_on_one_slide_both_succeed_with_one_run(demo_cohort, tmp_path):
    """Two `python -m core predict` on the same slide and store at once: both exit 0, one run, computed once."""
    import torch

    from core.model import build_model, save_checkpoint

    torch.manual_seed(0)
    checkpoint = tmp_path / "m.pt"
    save_checkpoint(checkpoint, build_model("tiny"), {"patch_size": 64, "level": 1})
    slide = sorted((demo_cohort / "slides").glob("*.tiff"))[0]
    db = tmp_path / "r.sqlite"
    command = [sys.executable, "-m", "core", "predict", "--model", str(checkpoint), str(slide), "--db", str(db), "--device", "cpu",
               "--batch-size", "4", "--workers", "1"]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    second = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    with ResultStore(db) as store:
        [run] = store.runs()
        assert run.status == "complete" and run.n_done == run.n_total > 0
        assert store.lease(run.id) is None  # released
    # Whichever claimed the run first computed it; the other waited and reused it.
    kinds = sorted("computed" if "patches computed" in err else "reused" if "stored run reused" in err else err for _, err in outputs)
    assert kinds == ["computed", "reused"], outputs
