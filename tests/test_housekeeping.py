"""Tests of app.housekeeping: sessions Streamlit dropped are ended, and their slides leave every cache."""

from __future__ import annotations

import gc
import weakref

import pytest
from streamlit.proto.Common_pb2 import FileURLs
from streamlit.runtime.state.session_state import SessionState
from streamlit.runtime.uploaded_file_manager import UploadedFile, UploadedFileRec

from app import context, housekeeping, tile_server
from core import slide_io
from tests.conftest import tissue_image, write_pyramid


class Session:
    """The part of Streamlit's AppSession that housekeeping uses: an id, shutdown(), the session state."""

    def __init__(self, session_id: str, upload: bytes = b"") -> None:
        self.id = session_id
        self.shutdowns = 0
        self._session_state = SessionState()
        if upload:  # what a file_uploader's value holds: an UploadedFile sharing the upload's bytes
            record = UploadedFileRec(file_id="f1", name="big.tiff", type="image/tiff", data=upload)
            self._session_state["uploaded"] = UploadedFile(record, FileURLs())

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.fixture
def streamlit_sessions(monkeypatch):
    """The sessions Streamlit holds (id -> session), as housekeeping.live_sessions() reports them."""
    live: dict[str, Session] = {}
    monkeypatch.setattr(housekeeping, "live_sessions", lambda: dict(live))
    monkeypatch.setattr(housekeeping, "_seen", weakref.WeakValueDictionary())
    return live


def test_a_dropped_session_is_ended_and_its_upload_freed_though_something_still_holds_it(streamlit_sessions):
    kept = Session("a", upload=bytes(1000))
    other = Session("b")
    streamlit_sessions.update(a=kept, b=other)
    assert housekeeping.end_dropped_sessions() == 0  # both alive: seen, untouched
    uploaded = weakref.ref(kept._session_state["uploaded"])

    del streamlit_sessions["a"]  # expired from Streamlit's TTL store without a shutdown ...
    # ... while Streamlit's runtime loop still holds it (the variable `kept` plays that part)
    assert housekeeping.end_dropped_sessions() == 1
    gc.collect()
    assert kept.shutdowns == 1 and "uploaded" not in kept._session_state
    assert uploaded() is None  # the UploadedFile, and with it the upload's bytes, is gone
    assert other.shutdowns == 0
    assert housekeeping.end_dropped_sessions() == 0 and kept.shutdowns == 1  # ended once


def test_a_new_session_under_an_old_id_ends_the_old_one_only(streamlit_sessions):
    old = Session("a")
    streamlit_sessions["a"] = old
    housekeeping.end_dropped_sessions()
    new = Session("a")
    streamlit_sessions["a"] = new
    assert housekeeping.end_dropped_sessions() == 1
    assert old.shutdowns == 1 and new.shutdowns == 0


def test_housekeeping_never_keeps_a_session_alive(streamlit_sessions):
    session = Session("a")
    streamlit_sessions["a"] = session
    housekeeping.end_dropped_sessions()
    gone = weakref.ref(session)
    del streamlit_sessions["a"], session
    gc.collect()
    assert gone() is None
    assert housekeeping.end_dropped_sessions() == 0


def test_release_removes_closed_sessions_folders_and_forgets_their_slides(tmp_path, streamlit_sessions):
    uploads = tmp_path / "server"  # this server's upload folder: one folder per session id (core.uploads)
    for session in ("closed-session", "live-session"):
        (uploads / session / "slides").mkdir(parents=True)
    image = tissue_image(512, 512, (0, 0, 256, 256))
    closed = write_pyramid(uploads / "closed-session" / "slides" / "up.tiff", image, levels=2)
    open_ = write_pyramid(uploads / "live-session" / "slides" / "up.tiff", image, levels=2)
    streamlit_sessions["live-session"] = Session("live-session")
    handles = {}
    tokens = {}
    for name, path in (("closed", closed), ("open", open_)):
        tokens[name] = tile_server.register_slide(path)
        tiler = tile_server._tiler(tokens[name])  # what a tile request of the viewer makes
        assert tiler.tile(0, 0, 0)
        handles[name] = weakref.ref(slide_io.open_slide(path))
        page_handle = context._slide(str(path.resolve()), path.stat().st_mtime)  # what a page's context.slide(path) keeps
        assert tiler.slide is handles[name]() is page_handle  # one handle, shared by the three caches
        del page_handle

    _, removed = housekeeping.release_closed_sessions(uploads)
    gc.collect()
    assert removed == 1 and not (uploads / "closed-session").exists() and (uploads / "live-session").is_dir()
    assert handles["closed"]() is None  # no cache holds the removed file open any more
    assert tile_server._tiler(tokens["closed"]) is None  # its tile URLs are 404
    assert slide_io.open_slide(open_) is handles["open"]() and tile_server._tiler(tokens["open"]) is not None
