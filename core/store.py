"""Results store: an embedded SQLite database of slides, models, runs and patch predictions.

The store keeps every prediction the app or the command line computes, keyed by slide,
model and tiling parameters, so nothing is computed twice and an interrupted run resumes
where it stopped.

Concurrency model:
    * One file, WAL journal, ``synchronous=NORMAL``, ``foreign_keys=ON``, a 30 s busy
      timeout: several processes on one host (the app, ``predict`` runs) may read and write the same file.
    * Each :class:`ResultStore` owns one connection guarded by a ``threading.Lock``, so one
      object may be shared by several threads (Streamlit sessions). Each process opens its
      own :class:`ResultStore`; never pass one across ``fork``.
    * Every write is one ``BEGIN IMMEDIATE`` transaction: a process killed mid-write leaves
      either the whole batch committed or nothing.
    * Several machines never share one file (SQLite over a network filesystem is unsafe):
      each writes its own store and :meth:`ResultStore.merge` joins them (``python -m core
      store merge``; see docs/scale.md).

Units: patch coordinates ``x, y, width, height`` are level-0 pixels, ``(x, y)`` the top-left
corner; probabilities are in [0, 1]; times are seconds since the Unix epoch
(``time.time()``); ``mpp`` is microns per level-0 pixel.

Opening a file never modifies or deletes existing data: a file that is not SQLite, a SQLite
database of another application, or one written by a newer schema raises
:class:`~core.errors.StoreError` before anything is written.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import SlideError, StoreError
from core.fileio import atomic_write
from core.processes import pid_alive

__all__ = [
    "MERGE_TOLERANCE",
    "SCHEMA_VERSION",
    "MergeReport",
    "PatchPredictions",
    "ResultStore",
    "RunRecord",
    "SlideRecord",
    "slide_fingerprint",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Version of the schema this module writes and reads; stored in ``meta.schema_version``."""

RUN_STATUSES = ("running", "complete", "failed")
CSV_HEADER = ("slide", "x", "y", "width", "height", "prob")

_SQLITE_MAGIC = b"SQLite format 3\x00"
_FINGERPRINT_CHUNK = 1 << 20  # 1 MiB read from each end of the slide file
_BUSY_TIMEOUT_S = 30.0
#: A run's owner must renew its lease within this many seconds (it does on every commit,
#: about once a second); past it, another process may take the run over.
LEASE_SECONDS = 60.0

#: Largest difference of two stores' probabilities for one patch of one run that :meth:`ResultStore.merge`
#: accepts as the same result (bf16 inference moves F(I) by up to ~1e-2; a real disagreement is larger).
MERGE_TOLERANCE = 0.05

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS slides (
    id          INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL UNIQUE,
    path        TEXT NOT NULL,
    name        TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    mtime       REAL NOT NULL,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    mpp         REAL,
    registered  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS slides_name ON slides(name);
CREATE TABLE IF NOT EXISTS models (
    id         TEXT PRIMARY KEY,
    path       TEXT,
    arch       TEXT NOT NULL,
    metadata   TEXT NOT NULL,
    registered REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id       INTEGER PRIMARY KEY,
    slide_id INTEGER NOT NULL REFERENCES slides(id),
    model_id TEXT NOT NULL REFERENCES models(id),
    params   TEXT NOT NULL,
    status   TEXT NOT NULL CHECK (status IN ('running', 'complete', 'failed')),
    n_total  INTEGER CHECK (n_total IS NULL OR n_total >= 0),
    message  TEXT,
    started  REAL NOT NULL,
    finished REAL,
    UNIQUE (slide_id, model_id, params)
);
CREATE INDEX IF NOT EXISTS runs_model_status ON runs(model_id, status);
CREATE TABLE IF NOT EXISTS predictions (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    x      INTEGER NOT NULL,
    y      INTEGER NOT NULL,
    width  INTEGER NOT NULL,
    height INTEGER NOT NULL,
    prob   REAL NOT NULL CHECK (prob >= 0.0 AND prob <= 1.0),
    PRIMARY KEY (run_id, x, y)
) WITHOUT ROWID;
"""

_RUN_SELECT = """
SELECT r.id, r.slide_id, s.name, r.model_id, r.params, r.status, r.n_total,
       (SELECT COUNT(*) FROM predictions AS p WHERE p.run_id = r.id) AS n_done,
       r.started, r.finished, r.message
FROM runs AS r JOIN slides AS s ON s.id = r.slide_id
"""

_SLIDE_SELECT = (
    "SELECT id, fingerprint, path, name, size_bytes, mtime, width, height, mpp FROM slides"
)

_PRED_DTYPE = np.dtype(
    [("x", np.int64), ("y", np.int64), ("width", np.int64), ("height", np.int64), ("prob", np.float64)]
)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class SlideRecord:
    """A registered slide.

    Attributes:
        id: database id.
        fingerprint: :func:`slide_fingerprint` of the file's content.
        path: absolute path where the file was last registered.
        name: the file's stem (the ``slide`` column of the predictions CSV).
        size_bytes: file size in bytes.
        mtime: file modification time, seconds since the Unix epoch.
        width, height: level-0 size in pixels.
        mpp: microns per level-0 pixel, or None when the slide does not say.
    """

    id: int
    fingerprint: str
    path: str
    name: str
    size_bytes: int
    mtime: float
    width: int
    height: int
    mpp: float | None


@dataclass(frozen=True)
class RunRecord:
    """One prediction run: a model applied to a slide with given tiling parameters.

    Attributes:
        id: database id.
        slide_id, slide_name: the slide (name = file stem).
        model_id: the model's id as given to :meth:`ResultStore.register_model`.
        params: tiling/inference parameters (as stored, canonical JSON decoded).
        status: ``'running'``, ``'complete'`` or ``'failed'``.
        n_total: number of patches the run expects, or None when not set.
        n_done: number of patch predictions stored.
        started, finished: seconds since the Unix epoch (finished None while running).
        message: failure message of a failed run, else None.
    """

    id: int
    slide_id: int
    slide_name: str
    model_id: str
    params: dict
    status: str
    n_total: int | None
    n_done: int
    started: float
    finished: float | None
    message: str | None


@dataclass(frozen=True, eq=False)
class PatchPredictions:
    """Patch predictions of one slide, sorted by (y, x).

    Attributes:
        slide: the slide's name (file stem).
        x, y: int64 arrays, top-left corner of each patch in level-0 pixels.
        width, height: int64 arrays, patch size in level-0 pixels.
        prob: float64 array, model probability in [0, 1].

    The arrays are read-only; copy them to modify.
    """

    slide: str
    x: np.ndarray
    y: np.ndarray
    width: np.ndarray
    height: np.ndarray
    prob: np.ndarray

    def __len__(self) -> int:
        return int(self.prob.shape[0])


@dataclass(frozen=True)
class MergeReport:
    """What :meth:`ResultStore.merge` did to the target store (all zero: nothing changed).

    Attributes:
        source: the merged store file.
        slides_added, models_added: records the target did not have.
        runs_added: runs the target did not have (their predictions copied).
        runs_completed: runs unfinished in the target and complete in the source (the source's
            predictions replace the target's).
        runs_extended: unfinished runs in both, the source's patches added to the target's.
        runs_same: runs already in the target (nothing to add).
        rows_added: patch predictions written to the target.
        seconds: wall time of the merge.
    """

    source: str
    slides_added: int = 0
    models_added: int = 0
    runs_added: int = 0
    runs_completed: int = 0
    runs_extended: int = 0
    runs_same: int = 0
    rows_added: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        """True when the merge wrote anything to the target."""
        return bool(self.slides_added or self.models_added or self.runs_added or self.runs_completed or self.rows_added)


# --------------------------------------------------------------------------- helpers


def _owner_alive(owner: str) -> bool:
    """Return False only when ``owner`` (``host:pid:tag``) is a process of this host that no longer exists."""
    import socket

    host, _, rest = owner.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    return pid_alive(int(pid_text))


def slide_fingerprint(path: str | os.PathLike) -> str:
    """Return a content fingerprint of a slide file.

    SHA-256 (hex) of the file size in bytes, the first 1 MiB and the last 1 MiB: cheap for
    multi-GB slides, independent of the file's name, folder and modification time, so a
    moved or copied slide keeps its fingerprint.

    Raises:
        SlideError: the file cannot be found or read.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            h = hashlib.sha256()
            h.update(b"pathology-explorer-fingerprint-v1\0")
            h.update(str(size).encode("ascii") + b"\0")
            h.update(f.read(_FINGERPRINT_CHUNK))
            h.update(b"\0")
            f.seek(max(0, size - _FINGERPRINT_CHUNK))
            h.update(f.read(_FINGERPRINT_CHUNK))
    except OSError as exc:
        raise SlideError(f"cannot read slide file {str(p)!r}: {exc.strerror or exc}") from exc
    return h.hexdigest()


def _canonical_json(value: Any, what: str) -> str:
    """Return compact JSON with sorted keys; numpy scalars and arrays become plain values."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, (Path, os.PathLike)):
            return os.fspath(obj)
        raise TypeError(f"{type(obj).__name__} is not JSON-serializable")

    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=default)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} must be JSON-serializable (finite numbers, str keys): {exc}") from exc


def _as_int_array(values: Any, name: str) -> np.ndarray:
    """Return ``values`` as a 1-D int64 array; floats must be whole numbers."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise StoreError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "f" or arr.size == 0:
        arr = arr.astype(np.float64, copy=False)
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise StoreError(f"{name} must hold whole numbers of level-0 pixels")
        return arr.astype(np.int64)
    raise StoreError(f"{name} must be an integer array, got dtype {arr.dtype}")


# --------------------------------------------------------------------------- store


class ResultStore:
    """The results database (one SQLite file).

    Args:
        path: database file; its parent folder and the schema are created if absent.

    Raises:
        StoreError: the file is not SQLite, belongs to another application, was written by
            a newer version of this program, or cannot be opened. The file is left as it was.

    Use as a context manager or call :meth:`close`. Thread-safe; one object per process.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()  # re-entrant: merge holds it around ATTACH and its _write
        self._conn: sqlite3.Connection | None = None
        self._check_file()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder of results store {self._name}: {exc}") from exc
        try:
            conn = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open results store {self._name}: {exc}") from exc
        try:
            self._open(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    # ---------------------------------------------------------------- opening

    @property
    def _name(self) -> str:
        return repr(str(self.path))

    def _check_file(self) -> None:
        """Refuse a file that exists and is not SQLite, without letting SQLite touch it."""
        if not self.path.exists():
            return
        if self.path.is_dir():
            raise StoreError(f"results store {self._name} is a folder, not a database file")
        try:
            with open(self.path, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise StoreError(f"cannot read results store {self._name}: {exc.strerror or exc}") from exc
        # An empty file is what SQLite itself creates for a new database: accept it.
        if head and head != _SQLITE_MAGIC:
            raise StoreError(f"{self._name} is not a SQLite database; it was left unchanged")

    def _open(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
            # Read-only inspection first: a foreign or newer database must not be modified,
            # not even by switching its journal mode.
            conn.execute("BEGIN")
            try:
                fresh = self._check_schema(conn)
            finally:
                conn.execute("COMMIT")
            self._enable_wal(conn)
            if not fresh:
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Checked again under the write lock: another process may have created it.
                fresh = self._check_schema(conn)
                if fresh:
                    # Statement by statement: executescript() would COMMIT our transaction.
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(
                        "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),),
                    )
                    conn.execute(
                        "INSERT OR IGNORE INTO meta(key, value) VALUES ('application', 'pathology-explorer')"
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorname", "") in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
                # Refused while reading the schema, before anything is written.
                raise StoreError(
                    f"cannot open results store {self._name}: it is damaged or not a results store (SQLite: {exc}); "
                    "it was left unchanged"
                ) from exc
            raise StoreError(f"cannot open results store {self._name}: {exc}") from exc

    def _check_schema(self, conn: sqlite3.Connection, name: str | None = None) -> bool:
        """Return True for an empty database; raise StoreError for a foreign or newer one (``name`` in messages: default this store's)."""
        name = name or self._name
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return True
        if "meta" not in tables:
            raise StoreError(
                f"{name} is a SQLite database of another application (no 'meta' table); "
                "it was left unchanged"
            )
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        try:
            version = int(row[0]) if row is not None else None
        except (TypeError, ValueError):
            version = None
        if version is None:
            raise StoreError(
                f"{name} has an unknown schema (no valid schema_version); it was left unchanged"
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{name} was written by a newer version of Pathology Explorer "
                f"(schema {version}, this version reads {SCHEMA_VERSION}); it was left unchanged"
            )
        if version < SCHEMA_VERSION:
            raise StoreError(f"{name} has an unknown schema version {version}; it was left unchanged")
        missing = {"slides", "models", "runs", "predictions"} - tables
        if missing:
            raise StoreError(f"{name} is damaged: tables {sorted(missing)} are missing")
        return False

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        # Switching the journal mode needs a brief exclusive lock; when several processes
        # open a new file at once SQLite may answer "locked" without waiting, so retry.
        deadline = time.monotonic() + _BUSY_TIMEOUT_S
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        if str(mode).lower() != "wal":
            logger.warning("results store %s runs in journal mode %r, not WAL", self.path, mode)

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close the connection; further calls raise StoreError. Closing twice is harmless."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return f"ResultStore({str(self.path)!r}, {state})"

    # ---------------------------------------------------------------- transactions

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock and one read transaction (a consistent snapshot of the file)."""
        with self._lock:
            conn = self._require_open()
            try:
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"results store {self._name}: {exc}") from exc

    @contextlib.contextmanager
    def _write(self, doing: str | None = None) -> Iterator[sqlite3.Connection]:
        """Hold the lock and one ``BEGIN IMMEDIATE`` transaction: all of it commits or none.

        ``doing`` names the work in the error message ("merging X into"), if any.
        """
        with self._lock:
            conn = self._require_open()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StoreError(f"{doing + ' ' if doing else ''}results store {self._name}: {exc}") from exc

    def _require_open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"results store {self._name} is closed")
        return self._conn

    # ---------------------------------------------------------------- slides and models

    def register_slide(
        self, path: str | os.PathLike, *, width: int, height: int, mpp: float | None
    ) -> SlideRecord:
        """Register a slide file, or update the record of the same content.

        The slide is identified by :func:`slide_fingerprint`: the same file moved or copied
        elsewhere keeps its id, and its path, name and mtime are updated.

        Args:
            path: the slide file.
            width, height: level-0 size in pixels.
            mpp: microns per level-0 pixel, or None when unknown (a known value is kept
                when a later registration passes None).

        Raises:
            SlideError: the file cannot be read.
            StoreError: bad size, or the same content was registered with another size.
        """
        width, height = int(width), int(height)
        if width <= 0 or height <= 0:
            raise StoreError(f"slide size must be positive, got {width} x {height} px")
        if mpp is not None:
            mpp = float(mpp)
            if not (np.isfinite(mpp) and mpp > 0):
                raise StoreError(f"mpp must be a positive number of microns per pixel, got {mpp}")
        p = Path(path).absolute()
        fingerprint = slide_fingerprint(p)
        try:
            stat = p.stat()
        except OSError as exc:
            raise SlideError(f"cannot read slide file {str(p)!r}: {exc.strerror or exc}") from exc
        with self._write() as conn:
            row = conn.execute(
                "SELECT id, width, height FROM slides WHERE fingerprint = ?", (fingerprint,)
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO slides(fingerprint, path, name, size_bytes, mtime, width, height, mpp,"
                    " registered) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (fingerprint, str(p), p.stem, stat.st_size, stat.st_mtime, width, height, mpp,
                     time.time()),
                )
            else:
                if (row[1], row[2]) != (width, height):
                    raise StoreError(
                        f"slide {str(p)!r} has the content of slide id {row[0]} but another size "
                        f"({width} x {height} px, stored {row[1]} x {row[2]} px)"
                    )
                conn.execute(
                    "UPDATE slides SET path = ?, name = ?, mtime = ?, mpp = COALESCE(?, mpp) WHERE id = ?",
                    (str(p), p.stem, stat.st_mtime, mpp, row[0]),
                )
            rec = conn.execute(_SLIDE_SELECT + " WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return SlideRecord(*rec)

    def register_model(
        self, model_id: str, *, arch: str, metadata: dict, path: str | os.PathLike | None = None
    ) -> None:
        """Register a model, or update it (arch, metadata; path when given).

        Args:
            model_id: the caller's stable id of the model (e.g. a checkpoint hash).
            arch: architecture name.
            metadata: JSON-serializable description (training data, epoch, ...).
            path: checkpoint file, or None (a stored path is kept when None is passed).

        Raises:
            StoreError: empty id or metadata that is not JSON-serializable.
        """
        if not isinstance(model_id, str) or not model_id:
            raise StoreError(f"model_id must be a non-empty string, got {model_id!r}")
        meta_json = _canonical_json(metadata, "model metadata")
        path_str = None if path is None else str(Path(path).absolute())
        with self._write() as conn:
            conn.execute(
                "INSERT INTO models(id, path, arch, metadata, registered) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET path = COALESCE(excluded.path, models.path), "
                "arch = excluded.arch, metadata = excluded.metadata",
                (model_id, path_str, str(arch), meta_json, time.time()),
            )

    def slides(self) -> list[SlideRecord]:
        """Return every registered slide, by id."""
        with self._read() as conn:
            rows = conn.execute(_SLIDE_SELECT + " ORDER BY id").fetchall()
        return [SlideRecord(*r) for r in rows]

    def slide(self, slide_id: int) -> SlideRecord:
        """Return one registered slide. Raises StoreError when it does not exist."""
        with self._read() as conn:
            row = conn.execute(_SLIDE_SELECT + " WHERE id = ?", (int(slide_id),)).fetchone()
        if row is None:
            raise StoreError(f"no slide {slide_id} in results store {self._name}")
        return SlideRecord(*row)

    def models(self) -> list[dict]:
        """Return every registered model as a dict: id, path, arch, metadata (dict), registered."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id, path, arch, metadata, registered FROM models ORDER BY registered, id"
            ).fetchall()
        return [
            {"id": r[0], "path": r[1], "arch": r[2], "metadata": json.loads(r[3]), "registered": r[4]}
            for r in rows
        ]

    def choose_model(self, model_id: str | None = None) -> dict:
        """Return the record of a model (as :meth:`models`): ``model_id``, or the store's only model when None.

        Raises:
            StoreError: the store holds no model, several (and none was chosen; the message
                lists them and says to choose with --model), or not ``model_id``.
        """
        models = self.models()
        ids = [m["id"] for m in models]
        if model_id is None:
            if len(models) == 1:
                return models[0]
            if not models:
                raise StoreError(f"the results store {self.path} holds no model; run `python -m core predict` first")
            raise StoreError(f"the store holds {len(models)} models; choose one with --model ({', '.join(ids)})")
        for model in models:
            if model["id"] == model_id:
                return model
        raise StoreError(f"model {model_id!r} is not in the store (models: {', '.join(ids) or 'none'})")

    # ---------------------------------------------------------------- runs

    @staticmethod
    def _run_record(row: tuple) -> RunRecord:
        return RunRecord(
            id=row[0], slide_id=row[1], slide_name=row[2], model_id=row[3], params=json.loads(row[4]),
            status=row[5], n_total=row[6], n_done=row[7], started=row[8], finished=row[9], message=row[10],
        )

    def _get_run(self, conn: sqlite3.Connection, run_id: int) -> RunRecord:
        row = conn.execute(_RUN_SELECT + " WHERE r.id = ?", (int(run_id),)).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id} in results store {self._name}")
        return self._run_record(row)

    def run(self, run_id: int) -> RunRecord:
        """Return one run. Raises StoreError when it does not exist."""
        with self._read() as conn:
            return self._get_run(conn, run_id)

    def get_or_create_run(self, slide_id: int, model_id: str, params: dict) -> RunRecord:
        """Return the run of (slide, model, params), creating a ``'running'`` one if absent.

        ``params`` are compared as canonical JSON (sorted keys), so key order does not
        matter; 1 and 1.0 are different values. An existing run is returned whatever its
        status: check ``status`` to skip a complete run or resume an unfinished one.

        Raises:
            StoreError: unknown slide or model, or params that are not JSON-serializable.
        """
        params_json = _canonical_json(params, "run params")
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM slides WHERE id = ?", (int(slide_id),)).fetchone() is None:
                raise StoreError(f"no slide {slide_id} in results store {self._name}; register it first")
            if conn.execute("SELECT 1 FROM models WHERE id = ?", (model_id,)).fetchone() is None:
                raise StoreError(f"no model {model_id!r} in results store {self._name}; register it first")
            conn.execute(
                "INSERT OR IGNORE INTO runs(slide_id, model_id, params, status, started) "
                "VALUES (?, ?, ?, 'running', ?)",
                (int(slide_id), model_id, params_json, time.time()),
            )
            row = conn.execute(
                _RUN_SELECT + " WHERE r.slide_id = ? AND r.model_id = ? AND r.params = ?",
                (int(slide_id), model_id, params_json),
            ).fetchone()
        return self._run_record(row)

    def find_run(self, slide_id: int, model_id: str, params: dict) -> RunRecord | None:
        """Return the run of (slide, model, params) in any status, or None."""
        params_json = _canonical_json(params, "run params")
        with self._read() as conn:
            row = conn.execute(
                _RUN_SELECT + " WHERE r.slide_id = ? AND r.model_id = ? AND r.params = ?",
                (int(slide_id), model_id, params_json),
            ).fetchone()
        return None if row is None else self._run_record(row)

    def runs(
        self, *, model_id: str | None = None, slide_id: int | None = None, status: str | None = None
    ) -> list[RunRecord]:
        """Return the runs matching every filter given, by id."""
        if status is not None and status not in RUN_STATUSES:
            raise StoreError(f"status must be one of {RUN_STATUSES}, got {status!r}")
        where, args = [], []
        for column, value in (("r.model_id", model_id), ("r.slide_id", slide_id), ("r.status", status)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = _RUN_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY r.id"
        with self._read() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [self._run_record(r) for r in rows]

    def set_total(self, run_id: int, n_total: int) -> None:
        """Set the number of patches a run expects (checked by :meth:`finish_run`)."""
        n_total = int(n_total)
        if n_total < 0:
            raise StoreError(f"n_total must be >= 0, got {n_total}")
        with self._write() as conn:
            self._get_run(conn, run_id)
            conn.execute("UPDATE runs SET n_total = ? WHERE id = ?", (n_total, int(run_id)))

    def finish_run(self, run_id: int) -> None:
        """Mark a run complete (finished = now).

        Raises:
            StoreError: unknown run, or ``n_total`` is set and differs from the rows stored.
        """
        with self._write() as conn:
            run = self._get_run(conn, run_id)
            if run.n_total is not None and run.n_done != run.n_total:
                raise StoreError(
                    f"run {run_id} cannot be finished: {run.n_done} of {run.n_total} patch predictions stored"
                )
            conn.execute(
                "UPDATE runs SET status = 'complete', finished = ?, message = NULL WHERE id = ?",
                (time.time(), int(run_id)),
            )

    def fail_run(self, run_id: int, message: str) -> None:
        """Mark an unfinished run failed with a message; its predictions are kept for resuming.

        Raises:
            StoreError: unknown run, or the run is complete (use :meth:`reset_run`).
        """
        with self._write() as conn:
            run = self._get_run(conn, run_id)
            if run.status == "complete":
                raise StoreError(f"run {run_id} is complete and cannot be marked failed; reset it first")
            conn.execute(
                "UPDATE runs SET status = 'failed', finished = ?, message = ? WHERE id = ?",
                (time.time(), str(message), int(run_id)),
            )

    # ---------------------------------------------------------------- run ownership
    #
    # A run being computed has one owner: a lease (owner id, heartbeat) in the table
    # run_leases. Another process that wants the same run waits while the lease is alive
    # and takes the run over once it expires (its owner was killed), so two `predict`s on
    # one slide never compute it twice and a dead owner's run is never left running for
    # good. The table is added on first use: a store written before it stays readable by
    # older versions (schema version unchanged, one table more).

    @staticmethod
    def _leases(conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS run_leases ("
            " run_id INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,"
            " owner TEXT NOT NULL, heartbeat REAL NOT NULL)"
        )

    def claim_run(self, run_id: int, owner: str, lease_seconds: float = LEASE_SECONDS) -> bool:
        """Make ``owner`` the owner of a run unless another owner's lease is alive; return True if it is now ``owner``'s.

        A lease is alive while its heartbeat is younger than ``lease_seconds`` and, when its
        owner (``host:pid:tag``) is on this host, while that process exists: a killed
        process's run is taken over at once on its own machine, after the lease elsewhere.
        """
        now = time.time()
        with self._write() as conn:
            self._get_run(conn, run_id)
            self._leases(conn)
            row = conn.execute("SELECT owner, heartbeat FROM run_leases WHERE run_id = ?", (int(run_id),)).fetchone()
            if row is not None and row[0] != owner and now - float(row[1]) < lease_seconds and _owner_alive(row[0]):
                return False
            conn.execute(
                "INSERT OR REPLACE INTO run_leases(run_id, owner, heartbeat) VALUES (?, ?, ?)", (int(run_id), owner, now)
            )
            return True

    def renew_lease(self, run_id: int, owner: str) -> None:
        """Refresh ``owner``'s lease on a run (its heartbeat = now)."""
        with self._write() as conn:
            self._leases(conn)
            conn.execute("UPDATE run_leases SET heartbeat = ? WHERE run_id = ? AND owner = ?", (time.time(), int(run_id), owner))

    def release_run(self, run_id: int, owner: str) -> None:
        """End ``owner``'s lease on a run (another owner's lease is left alone)."""
        with self._write() as conn:
            self._leases(conn)
            conn.execute("DELETE FROM run_leases WHERE run_id = ? AND owner = ?", (int(run_id), owner))

    def lease(self, run_id: int) -> tuple[str, float] | None:
        """Return (owner, seconds since its heartbeat) of a run's lease, or None."""
        with self._write() as conn:
            self._leases(conn)
            row = conn.execute("SELECT owner, heartbeat FROM run_leases WHERE run_id = ?", (int(run_id),)).fetchone()
        return None if row is None else (row[0], time.time() - float(row[1]))

    def resume_run(self, run_id: int) -> RunRecord:
        """Set a failed run running again (a retry), keeping its predictions; return it.

        A run in any other status is returned unchanged.
        """
        with self._write() as conn:
            self._get_run(conn, run_id)
            conn.execute(
                "UPDATE runs SET status = 'running', finished = NULL, message = NULL WHERE id = ? AND status = 'failed'",
                (int(run_id),),
            )
            return self._get_run(conn, run_id)

    def rekey_run(self, run_id: int, params: dict) -> RunRecord:
        """Give a run new params (a migration of its identity; its predictions stay); return it.

        Raises:
            StoreError: unknown run, or the slide and model already have a run with ``params``.
        """
        params_json = _canonical_json(params, "run params")
        with self._write() as conn:
            self._get_run(conn, run_id)
            try:
                conn.execute("UPDATE runs SET params = ? WHERE id = ?", (params_json, int(run_id)))
            except sqlite3.IntegrityError:
                raise StoreError(f"run {run_id} cannot take params {params_json}: the slide and model have such a run") from None
            return self._get_run(conn, run_id)

    def reset_run(self, run_id: int) -> None:
        """Delete a run's predictions and set it running again (explicit recompute).

        ``n_total`` is kept; started = now; finished and message are cleared.
        """
        with self._write() as conn:
            self._get_run(conn, run_id)
            conn.execute("DELETE FROM predictions WHERE run_id = ?", (int(run_id),))
            conn.execute(
                "UPDATE runs SET status = 'running', started = ?, finished = NULL, message = NULL"
                " WHERE id = ?",
                (time.time(), int(run_id)),
            )

    # ---------------------------------------------------------------- predictions

    def add_predictions(
        self,
        run_id: int,
        x: Any,
        y: Any,
        width: Any,
        height: Any,
        prob: Any,
    ) -> int:
        """Store a batch of patch predictions in one transaction.

        Args:
            run_id: a run that is not complete.
            x, y: 1-D integer arrays, top-left corner of each patch in level-0 pixels.
            width, height: 1-D integer arrays (or scalars), patch size in level-0 pixels, > 0.
            prob: 1-D float array, probabilities in [0, 1].

        Returns:
            Rows inserted. A location (x, y) already stored for the run is ignored (first
            value wins), so a resumed run never duplicates a patch.

        Raises:
            StoreError: unequal lengths, non-integer coordinates, non-positive sizes, a
                probability outside [0, 1] or not finite, an unknown or complete run.
                Nothing is written then.
        """
        xs = _as_int_array(x, "x")
        n = xs.shape[0]
        ys = _as_int_array(y, "y")
        ws = _as_int_array(np.broadcast_to(width, (n,)) if np.ndim(width) == 0 else width, "width")
        hs = _as_int_array(np.broadcast_to(height, (n,)) if np.ndim(height) == 0 else height, "height")
        probs = np.asarray(prob)
        if probs.ndim != 1:
            raise StoreError(f"prob must be a 1-D array, got shape {probs.shape}")
        lengths = {"x": n, "y": ys.shape[0], "width": ws.shape[0], "height": hs.shape[0],
                   "prob": probs.shape[0]}
        if len(set(lengths.values())) != 1:
            raise StoreError(f"prediction arrays must have equal lengths, got {lengths}")
        if probs.dtype.kind not in "fiub":
            raise StoreError(f"prob must be a float array, got dtype {probs.dtype}")
        probs = probs.astype(np.float64, copy=False)
        bad = ~np.isfinite(probs) | (probs < 0.0) | (probs > 1.0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise StoreError(
                f"probabilities must be finite and in [0, 1]; {int(bad.sum())} are not "
                f"(first: prob[{i}] = {probs[i]!r} at x={xs[i]}, y={ys[i]})"
            )
        if n and (ws.min() <= 0 or hs.min() <= 0):
            raise StoreError("patch width and height must be positive level-0 pixel counts")
        rid = int(run_id)
        with self._write() as conn:
            run = conn.execute("SELECT status FROM runs WHERE id = ?", (rid,)).fetchone()
            if run is None:
                raise StoreError(f"no run {run_id} in results store {self._name}")
            if run[0] == "complete":
                raise StoreError(f"run {run_id} is complete; reset it before adding predictions")
            if n == 0:
                return 0
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO predictions(run_id, x, y, width, height, prob)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                zip([rid] * n, xs.tolist(), ys.tolist(), ws.tolist(), hs.tolist(), probs.tolist()),
            )
            inserted = conn.total_changes - before
        return inserted

    def done_locations(self, run_id: int) -> set[tuple[int, int]]:
        """Return the (x, y) level-0 top-left corners already stored for a run (for resuming)."""
        with self._read() as conn:
            self._get_run(conn, run_id)
            rows = conn.execute("SELECT x, y FROM predictions WHERE run_id = ?", (int(run_id),)).fetchall()
        return set(rows)

    def _read_arrays(self, conn: sqlite3.Connection, run_id: int, slide: str) -> PatchPredictions:
        # One SELECT in primary-key order (no SQLite sort), rows straight into a structured
        # array, then a numpy sort by (y, x): faster than ORDER BY on 100k rows.
        cur = conn.execute(
            "SELECT x, y, width, height, prob FROM predictions WHERE run_id = ?", (int(run_id),)
        )
        rec = np.fromiter(cur, dtype=_PRED_DTYPE)
        order = np.lexsort((rec["x"], rec["y"]))
        rec = rec[order]
        cols = {}
        for name in _PRED_DTYPE.names:
            arr = np.ascontiguousarray(rec[name])
            arr.setflags(write=False)
            cols[name] = arr
        return PatchPredictions(slide=slide, **cols)

    def read_predictions(self, run_id: int) -> PatchPredictions:
        """Return a run's predictions sorted by (y, x); coordinates in level-0 pixels.

        Raises:
            StoreError: unknown run.
        """
        with self._read() as conn:
            run = self._get_run(conn, run_id)
            return self._read_arrays(conn, run.id, run.slide_name)

    def run_summaries(self, model_id: str, params: dict) -> dict[str, dict]:
        """Return slide name -> {run_id, status, n_done, n_total, max_prob, message} for this model and params.

        One aggregate query: what a cohort table needs without reading every prediction.
        ``max_prob`` is F(I) in [0, 1] of the slide's most suspicious patch (None if no rows).
        """
        with self._read() as conn:
            rows = conn.execute(
                "SELECT s.name, r.id, r.status, r.n_total, "
                "(SELECT COUNT(*) FROM predictions AS p WHERE p.run_id = r.id), "
                "(SELECT MAX(prob) FROM predictions AS p WHERE p.run_id = r.id), r.message "
                "FROM runs AS r JOIN slides AS s ON s.id = r.slide_id WHERE r.model_id = ? AND r.params = ? ORDER BY r.id",
                (model_id, _canonical_json(params, "run params")),
            ).fetchall()
        return {
            name: {"run_id": run_id, "status": status, "n_total": n_total, "n_done": n_done, "max_prob": max_prob, "message": message}
            for name, run_id, status, n_total, n_done, max_prob, message in rows
        }

    def predictions_for_model(self, model_id: str, params: dict | None = None) -> dict[str, PatchPredictions]:
        """Return slide name -> predictions of that slide's complete run with this model.

        Args:
            model_id: the model.
            params: only runs with exactly these params; None: for each slide the most
                recently finished complete run, whatever its params.

        Raises:
            StoreError: two different slides with the same name (file stem) have runs.
        """
        with self._read() as conn:
            if params is None:
                rows = conn.execute(
                    "SELECT r.id, s.id, s.name FROM runs AS r JOIN slides AS s ON s.id = r.slide_id "
                    "WHERE r.model_id = ? AND r.status = 'complete' ORDER BY r.finished DESC, r.id DESC",
                    (model_id,),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT r.id, s.id, s.name FROM runs AS r JOIN slides AS s ON s.id = r.slide_id "
                    "WHERE r.model_id = ? AND r.status = 'complete' AND r.params = ? ORDER BY r.id",
                    (model_id, _canonical_json(params, "run params")),
                ).fetchall()
            chosen: dict[str, tuple[int, int]] = {}
            for run_id, slide_id, name in rows:
                if name in chosen:
                    if chosen[name][1] != slide_id:
                        raise StoreError(
                            f"slides {chosen[name][1]} and {slide_id} are both named {name!r}; "
                            "predictions by slide name would be ambiguous"
                        )
                    continue  # an older run of the same slide
                chosen[name] = (run_id, slide_id)
            return {
                name: self._read_arrays(conn, run_id, name) for name, (run_id, _) in sorted(chosen.items())
            }

    def write_csv(self, path: str | os.PathLike, runs: Iterable[int]) -> int:
        """Write the patch predictions CSV of some runs.

        Header ``slide,x,y,width,height,prob``; slide = file stem; x, y, width, height in
        level-0 pixels; rows by run in the order given (duplicates dropped), each sorted by
        (y, x). The file is written to a temporary name and renamed, so a failure leaves no
        half-written CSV.

        Returns:
            Rows written (the header not counted).

        Raises:
            StoreError: an unknown run, or the file cannot be written.
            FileWriteError: ``path`` is a device, FIFO, directory or symbolic link; not replaced.
        """
        run_ids = list(dict.fromkeys(int(r) for r in runs))
        with self._read() as conn:
            tables = []
            for rid in run_ids:
                run = self._get_run(conn, rid)
                tables.append(self._read_arrays(conn, run.id, run.slide_name))
        out = Path(path)
        n_rows = 0
        try:
            with atomic_write(out, "w", encoding="utf-8", newline="") as f:
                writer = csv.writer(f, lineterminator="\n")
                writer.writerow(CSV_HEADER)
                for t in tables:
                    writer.writerows(
                        zip([t.slide] * len(t), t.x.tolist(), t.y.tolist(), t.width.tolist(),
                            t.height.tolist(), t.prob.tolist())
                    )
                    n_rows += len(t)
        except OSError as exc:
            raise StoreError(f"cannot write predictions CSV {str(out)!r}: {exc.strerror or exc}") from exc
        return n_rows

    # ---------------------------------------------------------------- merging stores
    #
    # Several nodes without a shared filesystem each write their own store (SQLite must not be
    # shared over a network filesystem); `merge` joins them. Slides are matched by content
    # fingerprint (paths and names may differ per node), models by id, runs by (slide, model,
    # params). Idempotent: merging a store twice, or a store into itself by another name,
    # changes nothing the second time.

    def merge(self, source: str | os.PathLike, *, tolerance: float = MERGE_TOLERANCE) -> MergeReport:
        """Merge the slides, models, runs and predictions of another store file into this one.

        Rules, per run of the source (same slide content, model and params as a target run):

        * absent from the target: added with its predictions, in its status;
        * complete in both: nothing changes (they must hold the same patches);
        * complete in the source only: the source's predictions replace the target's;
        * unfinished in both: the source's patches the target lacks are added (a later
          ``predict`` finishes the run).

        Run leases are not copied (they belong to the processes of the source's node).

        Args:
            source: a results store file; opened read-only, never modified.
            tolerance: largest accepted difference of the two stores' probabilities for one
                patch of one run (see :data:`MERGE_TOLERANCE`).

        Returns:
            What was added (:class:`MergeReport`).

        Raises:
            StoreError: the source is missing, not a results store, newer, or the same file as
                this one; or it conflicts with this store: a slide of the same content with
                another size, a model id with another architecture, a run whose patches or
                expected count differ, or probabilities further apart than ``tolerance``.
                The merge is one transaction: on any error the target is left as it was.
        """
        started = time.perf_counter()
        src = Path(source)
        name = repr(str(src))
        if not src.is_file():
            raise StoreError(f"results store to merge not found: {name}")
        try:
            if self.path.exists() and os.path.samefile(src, self.path):
                raise StoreError(f"cannot merge results store {name} into itself")
            with open(src, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise StoreError(f"cannot read results store {name}: {exc.strerror or exc}") from exc
        if head != _SQLITE_MAGIC:
            raise StoreError(f"{name} is not a SQLite results store; nothing was merged")
        uri = src.absolute().as_uri() + "?mode=ro"
        try:
            check = sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT_S)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open results store {name}: {exc}") from exc
        try:
            if self._check_schema(check, name):
                return MergeReport(str(src), seconds=time.perf_counter() - started)  # an empty database
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot read results store {name}: {exc}") from exc
        finally:
            check.close()
        with self._lock:  # re-entrant: _write takes it again
            conn = self._require_open()
            try:
                conn.execute("ATTACH DATABASE ? AS src", (uri,))
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open results store {name}: {exc}") from exc
            try:
                with self._write(f"merging {name} into") as conn:
                    counts = self._merge_attached(conn, name, float(tolerance))
            finally:
                conn.execute("DETACH DATABASE src")
        return MergeReport(str(src), **counts, seconds=time.perf_counter() - started)

    def _merge_attached(self, conn: sqlite3.Connection, name: str, tolerance: float) -> dict[str, int]:
        """Merge the attached database ``src`` into ``main`` inside the caller's transaction; return the counts."""
        counts = dict.fromkeys(
            ("slides_added", "models_added", "runs_added", "runs_completed", "runs_extended", "runs_same", "rows_added"), 0
        )

        def conflict(what: str) -> StoreError:
            return StoreError(f"{name} conflicts with results store {self._name}: {what}; nothing was merged")

        slide_ids: dict[int, int] = {}
        for sid, fingerprint, path, sname, size_bytes, mtime, width, height, mpp, registered in conn.execute(
            "SELECT id, fingerprint, path, name, size_bytes, mtime, width, height, mpp, registered FROM src.slides"
        ).fetchall():
            row = conn.execute("SELECT id, width, height, mpp FROM main.slides WHERE fingerprint = ?", (fingerprint,)).fetchone()
            if row is None:
                cur = conn.execute(
                    "INSERT INTO main.slides(fingerprint, path, name, size_bytes, mtime, width, height, mpp, registered)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (fingerprint, path, sname, size_bytes, mtime, width, height, mpp, registered),
                )
                slide_ids[sid] = int(cur.lastrowid)
                counts["slides_added"] += 1
                continue
            if (row[1], row[2]) != (width, height):
                raise conflict(f"slide {sname!r} has the content of slide {row[0]} but another size ({width} x {height} px, target {row[1]} x {row[2]} px)")
            if row[3] is None and mpp is not None:
                conn.execute("UPDATE main.slides SET mpp = ? WHERE id = ?", (mpp, row[0]))
            slide_ids[sid] = int(row[0])
        for mid, mpath, arch, metadata, registered in conn.execute("SELECT id, path, arch, metadata, registered FROM src.models").fetchall():
            row = conn.execute("SELECT arch FROM main.models WHERE id = ?", (mid,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO main.models(id, path, arch, metadata, registered) VALUES (?, ?, ?, ?, ?)",
                    (mid, mpath, arch, metadata, registered),
                )
                counts["models_added"] += 1
            elif row[0] != arch:
                raise conflict(f"model {mid!r} is a {arch} there and a {row[0]} here")
        copy = (
            "INSERT OR IGNORE INTO main.predictions(run_id, x, y, width, height, prob)"
            " SELECT ?, x, y, width, height, prob FROM src.predictions WHERE run_id = ?"
        )
        for rid, sid, mid, params, status, n_total, message, run_started, finished in conn.execute(
            "SELECT id, slide_id, model_id, params, status, n_total, message, started, finished FROM src.runs ORDER BY id"
        ).fetchall():
            slide_id = slide_ids[sid]
            row = conn.execute(
                "SELECT id, status, n_total FROM main.runs WHERE slide_id = ? AND model_id = ? AND params = ?", (slide_id, mid, params)
            ).fetchone()
            if row is None:
                cur = conn.execute(
                    "INSERT INTO main.runs(slide_id, model_id, params, status, n_total, message, started, finished)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (slide_id, mid, params, status, n_total, message, run_started, finished),
                )
                before = conn.total_changes
                conn.execute(copy, (int(cur.lastrowid), rid))
                counts["rows_added"] += conn.total_changes - before
                counts["runs_added"] += 1
                continue
            tid, t_status, t_total = row
            what = f"run of slide {slide_id} with model {mid!r} and params {params}"
            if t_total is not None and n_total is not None and t_total != n_total:
                raise conflict(f"the {what} expects {n_total} patches there and {t_total} here")
            n_src = conn.execute("SELECT COUNT(*) FROM src.predictions WHERE run_id = ?", (rid,)).fetchone()[0]
            n_tgt = conn.execute("SELECT COUNT(*) FROM main.predictions WHERE run_id = ?", (tid,)).fetchone()[0]
            both, worst, resized = conn.execute(
                "SELECT COUNT(*), MAX(ABS(a.prob - b.prob)), TOTAL(a.width != b.width OR a.height != b.height)"
                " FROM main.predictions AS a JOIN src.predictions AS b ON a.x = b.x AND a.y = b.y"
                " WHERE a.run_id = ? AND b.run_id = ?",
                (tid, rid),
            ).fetchone()
            if resized:
                raise conflict(f"the {what} has patches of another size at {int(resized)} locations")
            if worst is not None and worst > tolerance:
                raise conflict(f"the {what} has probabilities {worst:.4g} apart (tolerance {tolerance:g})")
            src_complete, tgt_complete = status == "complete", t_status == "complete"
            if src_complete and tgt_complete:
                if not both == n_src == n_tgt:
                    raise conflict(f"the complete {what} holds {n_src} patches there and {n_tgt} here ({both} in common)")
                counts["runs_same"] += 1
            elif tgt_complete:
                if both != n_src:
                    raise conflict(f"the {what} holds {n_src - both} patches there that its complete run here lacks")
                counts["runs_same"] += 1
            elif src_complete:
                if both != n_tgt:
                    raise conflict(f"the {what} holds {n_tgt - both} patches here that its complete run there lacks")
                # The complete run wins whole: one node's numbers for every patch of the slide.
                conn.execute("DELETE FROM main.predictions WHERE run_id = ?", (tid,))
                before = conn.total_changes
                conn.execute(copy, (tid, rid))
                counts["rows_added"] += conn.total_changes - before - n_tgt
                conn.execute(
                    "UPDATE main.runs SET status = 'complete', n_total = ?, message = NULL, started = ?, finished = ? WHERE id = ?",
                    (n_total, run_started, finished, tid),
                )
                if self._has_leases(conn):
                    conn.execute("DELETE FROM main.run_leases WHERE run_id = ?", (tid,))
                counts["runs_completed"] += 1
            else:
                before = conn.total_changes
                conn.execute(copy, (tid, rid))
                added = conn.total_changes - before
                if t_total is None and n_total is not None:
                    conn.execute("UPDATE main.runs SET n_total = ? WHERE id = ?", (n_total, tid))
                counts["rows_added"] += added
                counts["runs_extended" if added else "runs_same"] += 1
        return counts

    @staticmethod
    def _has_leases(conn: sqlite3.Connection) -> bool:
        return conn.execute("SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = 'run_leases'").fetchone() is not None
