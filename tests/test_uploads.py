"""Tests of core.uploads: one folder per server, private session folders, the quota, the sweep."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from core.errors import UploadError
from core.uploads import UploadStore, quota_bytes


def test_uploads_go_to_a_private_session_folder_once(tmp_path):
    store = UploadStore(tmp_path)
    session = store.new_session()
    assert session.parent == store.folder and session.parent.parent == tmp_path
    assert (session.stat().st_mode & 0o777) == 0o700
    path = store.save(session, "slides", "../../etc/a slide.svs", b"abc")
    assert path == session / "slides" / "a slide.svs" and path.read_bytes() == b"abc"  # no client-side path
    mtime = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert store.save(session, "slides", "a slide.svs", b"xyz") == path and path.stat().st_mtime_ns == mtime  # same size: kept
    with pytest.raises(UploadError, match="empty"):
        store.save(session, "slides", "..", b"x")


def test_the_quota_refuses_before_writing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATHEX_UPLOAD_QUOTA_GB", str(3000 / 2**30))
    assert quota_bytes() == 3000
    store = UploadStore(tmp_path)
    session = store.new_session()
    store.save(session, "slides", "a.png", bytes(2000))
    with pytest.raises(UploadError, match=r"b.png .* does not fit in the upload quota: .*PATHEX_UPLOAD_QUOTA_GB"):
        store.save(session, "slides", "b.png", bytes(2000))
    assert not (session / "slides" / "b.png").exists() and not list((session / "slides").glob(".*partial"))


def test_the_sweep_removes_gone_servers_and_old_sessions(tmp_path, monkeypatch):
    monkeypatch.setenv("PATHEX_UPLOAD_MAX_AGE_H", "1")
    # A server folder of a process that has exited.
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = tmp_path / f"server-{proc.stdout.strip()}-1"
    (gone / "s1").mkdir(parents=True)
    (gone / "s1" / "x.svs").write_bytes(b"x")
    store = UploadStore(tmp_path)
    fresh, old = store.new_session(), store.new_session()
    (old / "y.png").write_bytes(b"y")
    hours_ago = time.time() - 2 * 3600
    for path in (old, old / "y.png"):
        os.utime(path, (hours_ago, hours_ago))
    unrelated = tmp_path / "notes"
    unrelated.mkdir()
    assert store.sweep() == 2
    assert not gone.exists() and not old.exists() and fresh.is_dir() and unrelated.is_dir()


def test_session_folders_are_named_by_the_session_id_when_it_is_safe(tmp_path):
    store = UploadStore(tmp_path)
    assert store.new_session("0b7c1a52-9f7e-4c1e-8d7a-2f1f3c9e0a11").name == "0b7c1a52-9f7e-4c1e-8d7a-2f1f3c9e0a11"
    assert store.new_session("0b7c1a52-9f7e-4c1e-8d7a-2f1f3c9e0a11") == store.folder / "0b7c1a52-9f7e-4c1e-8d7a-2f1f3c9e0a11"
    for unsafe in ("../escape", "a/b", "", None, "x" * 65):
        folder = store.new_session(unsafe)
        assert folder.parent == store.folder and len(folder.name) == 16  # a random name instead
    assert UploadStore(tmp_path).folder == store.folder  # one server folder per process
