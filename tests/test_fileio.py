"""Atomic writes (core.fileio): content, one permission policy, failures, refused destinations."""

from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path

import pytest

from core.errors import ExportError, FileWriteError, PathologyError
from core.export.common import encode, write_bytes
from core.fileio import atomic_write, atomic_write_bytes


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


def test_bytes_and_text_are_written(tmp_path):
    target = tmp_path / "a.bin"
    assert atomic_write_bytes(target, b"\x00\x01abc") == target
    assert target.read_bytes() == b"\x00\x01abc"
    text = tmp_path / "b.csv"
    with atomic_write(text, "w", encoding="utf-8", newline="") as handle:
        handle.write("slide,prob\r\nµ,0.5\n")
    assert text.read_bytes() == "slide,prob\r\nµ,0.5\n".encode()
    assert _leftovers(tmp_path) == []


def test_the_data_goes_to_a_partial_sibling_until_the_end(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_write(target) as handle:
        handle.write(b"new")
        handle.flush()
        (partial,) = _leftovers(tmp_path)
        assert partial.startswith(".out.txt.") and target.read_text() == "old"
    assert target.read_text() == "new" and _leftovers(tmp_path) == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_permissions_are_0666_less_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        new_file = tmp_path / "new.bin"
        atomic_write_bytes(new_file, b"x")
        replaced = tmp_path / "replaced.bin"
        replaced.write_bytes(b"old")
        os.chmod(replaced, 0o600)  # the old file's mode is not kept: one policy for every write
        atomic_write_bytes(replaced, b"new")
    finally:
        os.umask(old)
    assert stat.S_IMODE(new_file.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(replaced.stat().st_mode) == 0o666 & ~umask


def test_an_exception_leaves_the_destination_untouched_and_no_partial_file(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("precious")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(target, "w") as handle:
        handle.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "precious"
    assert _leftovers(tmp_path) == []
    fresh = tmp_path / "never.txt"
    with pytest.raises(KeyboardInterrupt), atomic_write(fresh):
        raise KeyboardInterrupt
    assert not fresh.exists() and _leftovers(tmp_path) == []


def test_a_missing_folder_is_created_unless_parents_is_false(tmp_path):
    deep = tmp_path / "a" / "b" / "c.bin"
    atomic_write_bytes(deep, b"1")
    assert deep.read_bytes() == b"1"
    with pytest.raises(FileNotFoundError):
        atomic_write_bytes(tmp_path / "missing" / "c.bin", b"1", parents=False)
    assert not (tmp_path / "missing").exists()


def test_only_whole_file_modes(tmp_path):
    with pytest.raises(ValueError, match="'wb' or 'w'"), atomic_write(tmp_path / "x", "ab"):
        pass
    with pytest.raises(LookupError), atomic_write(tmp_path / "x", "w", encoding="no-such-codec"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_character_device():
    if not os.path.exists("/dev/null") or not stat.S_ISCHR(os.lstat("/dev/null").st_mode):
        pytest.skip("no /dev/null character device here")
    with pytest.raises(FileWriteError, match=r"^/dev/null is a character device, not a regular file; not replaced$"):
        atomic_write_bytes("/dev/null", b"x")
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_refuses_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    fifo_refused = r"pipe is a FIFO \(named pipe\), not a regular file; not replaced"
    with pytest.raises(FileWriteError, match=fifo_refused), atomic_write(fifo) as handle:
        handle.write(b"x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert _leftovers(tmp_path) == []


def test_refuses_a_directory(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "inside.txt").write_text("kept")
    with pytest.raises(FileWriteError, match=r"folder is a directory, not a regular file"):
        atomic_write_bytes(folder, b"x")
    assert folder.is_dir() and (folder / "inside.txt").read_text() == "kept"


def test_refuses_a_symbolic_link_without_following_it(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("kept")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    with pytest.raises(FileWriteError, match=r"link.txt is a symbolic link; not followed, not replaced"):
        atomic_write_bytes(link, b"x")
    assert link.is_symlink() and real.read_text() == "kept"
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileWriteError, match="symbolic link"):
        atomic_write_bytes(dangling, b"x")
    assert not (tmp_path / "nowhere").exists()
    assert issubclass(FileWriteError, PathologyError)


def test_export_write_bytes_gzip_round_trips(tmp_path):
    text = '{"type": "FeatureCollection", "features": []}'
    path = write_bytes(tmp_path / "out" / "regions.geojson.gz", encode(text, compress=True))
    assert gzip.decompress(path.read_bytes()).decode("utf-8") == text
    assert _leftovers(path.parent) == []


def test_export_write_bytes_errors(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(FileWriteError, match="FIFO"):
        write_bytes(fifo, b"x")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ExportError, match="cannot write"):  # an OSError stays the caller's error
        write_bytes(blocker / "out.csv", b"x")
    if os.path.exists("/dev/full") and stat.S_ISCHR(os.lstat("/dev/full").st_mode):
        with pytest.raises(FileWriteError, match="/dev/full is a character device"):
            write_bytes("/dev/full", b"x")
        assert stat.S_ISCHR(os.lstat("/dev/full").st_mode)
