"""core.paths: the one gate for user-supplied paths (resolve_within) and the data folders (PATHEX_DATA_DIRS)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.errors import DataPathError, PathologyError
from core.paths import REPO_ROOT, data_dirs, demo_dir, resolve_within


@pytest.fixture
def roots(tmp_path) -> tuple[Path, Path, Path]:
    """Two data folders and a folder outside both, each holding one file."""
    first, second, outside = tmp_path / "first", tmp_path / "second", tmp_path / "outside"
    for folder in (first, second, outside):
        (folder / "slides").mkdir(parents=True)
        (folder / "slides" / "a.tiff").write_bytes(b"II*\x00")
    return first, second, outside


def test_a_file_inside_a_root_is_returned_resolved(roots):
    first, second, _ = roots
    assert resolve_within(first / "slides" / "a.tiff", [first, second]) == (first / "slides" / "a.tiff").resolve()
    assert resolve_within(str(second / "slides" / "a.tiff"), [first, second]) == (second / "slides" / "a.tiff").resolve()
    # A file that does not exist yet but would lie inside is inside (the gate is about places, not existence).
    assert resolve_within(first / "new.tiff", [first]) == (first / "new.tiff").resolve()


def test_the_root_itself_is_inside(roots):
    first, second, _ = roots
    assert resolve_within(first, [first, second]) == first.resolve()
    assert resolve_within(str(second) + os.sep, [first, second]) == second.resolve()


def test_dot_dot_escaping_a_root_is_refused(roots):
    first, _, _ = roots
    with pytest.raises(DataPathError, match="outside the data folders"):
        resolve_within(first / ".." / "outside" / "slides" / "a.tiff", [first])
    with pytest.raises(DataPathError):
        resolve_within(first / "slides" / ".." / ".." / "outside", [first])
    # ``..`` that stays inside is fine.
    assert resolve_within(first / "slides" / ".." / "slides" / "a.tiff", [first]) == (first / "slides" / "a.tiff").resolve()


def test_an_absolute_path_elsewhere_is_refused(roots):
    first, second, outside = roots
    for elsewhere in (outside / "slides" / "a.tiff", Path("/etc/passwd"), Path("/")):
        with pytest.raises(DataPathError) as info:
            resolve_within(elsewhere, [first, second])
        assert isinstance(info.value, PathologyError)
        assert str(elsewhere) in str(info.value)


def test_a_sibling_with_a_common_prefix_is_not_inside(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data-other").mkdir()
    with pytest.raises(DataPathError):
        resolve_within(tmp_path / "data-other" / "x.tiff", [tmp_path / "data"])


def test_a_symlink_pointing_outside_is_refused(roots):
    first, _, outside = roots
    (first / "slides" / "escape.tiff").symlink_to(outside / "slides" / "a.tiff")
    (first / "elsewhere").symlink_to(outside, target_is_directory=True)
    with pytest.raises(DataPathError):
        resolve_within(first / "slides" / "escape.tiff", [first])
    with pytest.raises(DataPathError):
        resolve_within(first / "elsewhere" / "slides" / "a.tiff", [first])


def test_a_symlink_inside_pointing_inside_is_accepted(roots):
    first, second, _ = roots
    (first / "slides" / "alias.tiff").symlink_to(first / "slides" / "a.tiff")
    assert resolve_within(first / "slides" / "alias.tiff", [first]) == (first / "slides" / "a.tiff").resolve()
    # A link from one data folder into another lands inside a root too.
    (first / "other").symlink_to(second, target_is_directory=True)
    assert resolve_within(first / "other" / "slides" / "a.tiff", [first, second]) == (second / "slides" / "a.tiff").resolve()
    with pytest.raises(DataPathError):
        resolve_within(first / "other" / "slides" / "a.tiff", [first])


def test_a_root_given_through_a_symlink_still_contains_its_files(tmp_path, roots):
    first, _, _ = roots
    link = tmp_path / "link-to-first"
    link.symlink_to(first, target_is_directory=True)
    assert resolve_within(first / "slides" / "a.tiff", [link]) == (first / "slides" / "a.tiff").resolve()


def test_data_dirs_demo_folder_first_then_pathex_data_dirs(tmp_path, monkeypatch):
    demo, a, b = tmp_path / "demo", tmp_path / "a", tmp_path / "b c"
    monkeypatch.setenv("PATHEX_DEMO_DIR", str(demo))
    monkeypatch.setenv("PATHEX_DATA_DIRS", os.pathsep.join([str(a), str(b)]))
    assert demo_dir() == demo.resolve()
    assert data_dirs() == [demo.resolve(), a.resolve(), b.resolve()]


def test_data_dirs_ignores_empty_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("PATHEX_DEMO_DIR", str(tmp_path / "demo"))
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("PATHEX_DATA_DIRS", os.pathsep.join(["", str(a), "", "", str(b), ""]))
    assert data_dirs() == [(tmp_path / "demo").resolve(), a.resolve(), b.resolve()]
    monkeypatch.setenv("PATHEX_DATA_DIRS", "")
    assert data_dirs() == [(tmp_path / "demo").resolve()]
    monkeypatch.setenv("PATHEX_DATA_DIRS", os.pathsep * 3)
    assert data_dirs() == [(tmp_path / "demo").resolve()]


def test_data_dirs_expands_the_home_folder(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "slides").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATHEX_DEMO_DIR", str(tmp_path / "demo"))
    monkeypatch.setenv("PATHEX_DATA_DIRS", os.pathsep.join(["~/slides", str(tmp_path / "x")]))
    assert data_dirs() == [(tmp_path / "demo").resolve(), (home / "slides").resolve(), (tmp_path / "x").resolve()]


def test_data_dirs_relative_entries_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATHEX_DEMO_DIR", "demo-here")
    monkeypatch.setenv("PATHEX_DATA_DIRS", "rel")
    assert data_dirs() == [tmp_path.resolve() / "demo-here", tmp_path.resolve() / "rel"]


def test_data_dirs_default_demo_folder(monkeypatch):
    monkeypatch.delenv("PATHEX_DEMO_DIR", raising=False)
    monkeypatch.delenv("PATHEX_DATA_DIRS", raising=False)
    assert data_dirs() == [(REPO_ROOT / "demo").resolve()]


def test_data_dirs_are_the_gate_of_resolve_within(tmp_path, monkeypatch, roots):
    first, second, outside = roots
    monkeypatch.setenv("PATHEX_DEMO_DIR", str(first))
    monkeypatch.setenv("PATHEX_DATA_DIRS", str(second))
    assert resolve_within(second / "slides" / "a.tiff", data_dirs()) == (second / "slides" / "a.tiff").resolve()
    with pytest.raises(DataPathError):
        resolve_within(outside / "slides" / "a.tiff", data_dirs())
