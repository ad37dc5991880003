"""The data folder: its cohort table, its slide and annotation files, and the suffixes they may have.

One owner for what every part of the product reads from a data folder (training, evaluation,
inference, the app and its uploads all call this module; none restates its rules):

* **Layout.** A data folder holds its slides in ``slides/`` (or directly in the folder when
  there is no ``slides/``), tumor annotations as ``annotations/<slide>.<suffix>``, an
  optional ``cohort.csv`` and its results store ``results.sqlite``.
* **Slides** are files whose suffix is in :data:`SLIDE_SUFFIXES` (case ignored); a slide's
  name is its file stem. When two files share a stem, the suffix earlier in the list wins.
* **Annotations** of slide ``S`` are the first of ``S.geojson``, ``S.geojson.gz``,
  ``S.json``, ``S.xml`` (:data:`ANNOTATION_SUFFIXES`) that exists.
* **cohort.csv**: columns ``slide,label`` and optionally ``split``, ``mpp`` (microns per
  level-0 pixel) and ``path`` (the slide file, relative to the table's folder, or to the
  *data root* when one is set).
* **Data root.** On a cluster each node may hold its own copy of the slides (or mount a
  share) at another place: ``PATHEX_DATA_ROOT`` (the CLI's ``--data-root``) names it, and
  the table's slides are then looked up under it (``path`` relative to it, else by name in
  ``root/slides`` or ``root``); a path that escapes the root is refused. Labels are
  ``tumor``/``tumour``/``1`` or ``normal``/``0`` (case ignored); an empty label means
  *unknown* (listed, not evaluated, not trained on). Other labels, repeated slides, a bad
  ``mpp`` are errors that name the file and line.

No torch, no streamlit: the module is cheap to import.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import CohortError

__all__ = [
    "ANNOTATION_SUFFIXES",
    "COHORT_FILE",
    "DATA_ROOT_ENV",
    "LABELS",
    "SLIDE_SUFFIXES",
    "Cohort",
    "CohortRow",
    "annotations_dir",
    "data_root",
    "find_annotation_file",
    "find_slide",
    "folder_rows",
    "is_slide_file",
    "list_slides",
    "load_cohort_tumors",
    "parse_label",
    "read_cohort",
    "read_cohort_rows",
    "resolve_under_root",
    "slides_dir",
]

#: Suffixes of slide files, in order of preference when two files share a stem: every
#: format OpenSlide reads as a single file or as the entry file of a multi-file slide, plus
#: the plain images OpenSlide's ImageSlide opens.
SLIDE_SUFFIXES = (
    ".tiff", ".tif", ".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".svslide", ".bif", ".dcm", ".czi",
    ".png", ".jpg", ".jpeg",
)
#: Suffixes of annotation files, in order of preference (the demo writes .geojson and .xml).
ANNOTATION_SUFFIXES = (".geojson", ".geojson.gz", ".json", ".xml")
#: Accepted labels (lower-cased) and what they mean.
LABELS = {"tumor": "tumor", "tumour": "tumor", "1": "tumor", "normal": "normal", "0": "normal"}
#: Name of the cohort table inside a data folder.
COHORT_FILE = "cohort.csv"

#: Environment variable naming this node's data root (see the module's docstring).
DATA_ROOT_ENV = "PATHEX_DATA_ROOT"

_COLUMNS = ("slide", "label", "split", "mpp", "path")


def data_root(given: str | os.PathLike | None = None) -> Path | None:
    """Return this node's data root: ``given``, else ``$PATHEX_DATA_ROOT``, else None (paths as written).

    Raises:
        CohortError: the root is not a folder.
    """
    value = given if given is not None else os.environ.get(DATA_ROOT_ENV) or None
    if value is None:
        return None
    root = Path(value).expanduser().resolve()
    if not root.is_dir():
        raise CohortError(f"the data root {value} is not a folder")
    return root


def resolve_under_root(path: str | os.PathLike, root: Path | None) -> Path:
    """Return ``path`` (relative: under ``root``) resolved; with a root it must stay inside it.

    Raises:
        CohortError: with a root, the path escapes it (``..``, an absolute path elsewhere, a
            symlink pointing outside).
    """
    from core.errors import DataPathError
    from core.paths import resolve_within

    if root is None:
        return Path(path)
    try:
        return resolve_within(root / path, [root])
    except DataPathError as exc:
        raise CohortError(str(exc)) from None


# =========================================================================== files


def is_slide_file(path: str | os.PathLike) -> bool:
    """Return True when ``path`` has a slide suffix (:data:`SLIDE_SUFFIXES`, case ignored)."""
    return Path(path).suffix.lower() in SLIDE_SUFFIXES


def slides_dir(root: str | os.PathLike) -> Path:
    """Return the folder of a data folder's slides: ``root/slides`` if it exists, else ``root``."""
    root = Path(root)
    return root / "slides" if (root / "slides").is_dir() else root


def annotations_dir(root: str | os.PathLike) -> Path:
    """Return the folder of a data folder's annotations, ``root/annotations`` (it may not exist)."""
    return Path(root) / "annotations"


def _preference(path: Path) -> tuple[int, str]:
    return SLIDE_SUFFIXES.index(path.suffix.lower()), path.name


def list_slides(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Return the slide files named by ``paths``: folders expand to their slide files, sorted by name.

    A file given by name is kept whatever its suffix (the slide reader says whether it can
    open it); in a folder, only files with a slide suffix count, and of files sharing a stem
    the preferred suffix wins (one slide, one name).
    """
    result: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            by_stem: dict[str, Path] = {}
            files = _one_file_per_dicom_series(sorted(p for p in item.iterdir() if p.is_file() and is_slide_file(p)))
            for candidate in sorted(files, key=_preference):
                by_stem.setdefault(candidate.stem, candidate)
            result += sorted(by_stem.values(), key=lambda p: p.name)
        else:
            result.append(item)
    return result


def _one_file_per_dicom_series(files: list[Path]) -> list[Path]:
    """Return ``files`` with the DICOM files of one slide reduced to the first of them.

    A DICOM whole-slide image is several ``.dcm`` files (one per level or frame group) that
    share a SeriesInstanceUID; OpenSlide opens the slide from any of them. Files it cannot
    open stay as they are (the reader says what is wrong when they are opened).
    """
    dicom = [f for f in files if f.suffix.lower() == ".dcm"]
    if len(dicom) < 2:
        return files
    import openslide  # only for folders holding DICOM files

    first_of_series: dict[str, Path] = {}
    dropped: set[Path] = set()
    for path in dicom:
        try:
            with openslide.OpenSlide(str(path)) as handle:
                series = handle.properties.get("dicom.SeriesInstanceUID")
        except (openslide.OpenSlideError, OSError):
            continue
        if series is None:
            continue
        if series in first_of_series:
            dropped.add(path)
        else:
            first_of_series[series] = path
    return [f for f in files if f not in dropped]


def find_slide(root: str | os.PathLike, name: str) -> Path | None:
    """Return the slide file named ``name`` (its stem) in ``root/slides`` or ``root``, or None."""
    root = Path(root)
    for folder in (root / "slides", root):
        for suffix in SLIDE_SUFFIXES:
            for candidate in (folder / f"{name}{suffix}", folder / f"{name}{suffix.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


def find_annotation_file(folder: str | os.PathLike, slide: str) -> Path | None:
    """Return the annotation file of ``slide`` in the annotations ``folder``, or None.

    The first of ``<slide>.geojson``, ``.geojson.gz``, ``.json``, ``.xml`` that exists wins.
    """
    folder = Path(folder)
    for suffix in ANNOTATION_SUFFIXES:
        candidate = folder / f"{slide}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _is_blank(path: Path) -> bool:
    size = path.stat().st_size
    if size == 0:
        return True
    if size > 4096 or path.name.endswith(".gz"):
        return False
    return not path.read_bytes().strip()


def load_cohort_tumors(folder: str | os.PathLike, slides: Sequence[str]) -> dict[str, list]:
    """Return slide -> tumor polygons (level-0 px, one per connected tumor) for each slide.

    A slide without an annotation file in ``folder``, or with an empty one (0 bytes or only
    white space), has no tumors.

    Raises:
        CohortError: ``folder`` is not a folder.
        AnnotationError: an annotation file does not parse (the message names it).
    """
    from core.annotations import load_tumors

    folder = Path(folder)
    if not folder.is_dir():
        raise CohortError(f"annotations folder not found: {folder}")
    tumors: dict[str, list] = {}
    for slide in slides:
        path = find_annotation_file(folder, slide)
        tumors[slide] = [] if path is None or _is_blank(path) else list(load_tumors(path))
    return tumors


# =========================================================================== the table


@dataclass(frozen=True)
class CohortRow:
    """One slide of a data folder, as its cohort table (or its slide files alone) describe it.

    Attributes:
        slide: the slide's name (file stem).
        label: "tumor", "normal", or None when unknown.
        split: e.g. "train", "val", "test"; None when not given.
        mpp: microns per level-0 pixel given by the table, or None.
        path: the slide file, or None when it is not found.
        annotations: the slide's annotation file, or None.
    """

    slide: str
    label: str | None
    split: str | None
    mpp: float | None
    path: Path | None
    annotations: Path | None


def parse_label(value: Any, slide: str, where: str = "") -> str | None:
    """Return "tumor", "normal", or None (empty: unknown) for a cohort label.

    Accepts tumor/tumour/1 and normal/0 (case ignored) and booleans.

    Raises:
        CohortError: any other value (``where`` prefixes the message, e.g. "cohort.csv, line 3").
    """
    if isinstance(value, (bool, np.bool_)):
        return "tumor" if value else "normal"
    key = str(value).strip().lower()
    if not key:
        return None
    if key not in LABELS:
        prefix = f"{where}: " if where else ""
        raise CohortError(f"{prefix}slide {_short(slide)}: label must be tumor (tumour, 1) or normal (0), got {_short(value)}")
    return LABELS[key]


def _parse_mpp(text: str, where: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise CohortError(f"{where}: mpp is not a number: {_short(text)}") from None
    if not math.isfinite(value) or value <= 0:
        raise CohortError(f"{where}: mpp must be a positive number, got {_short(text)}")
    return value


def _short(value: Any, limit: int = 60) -> str:
    """Return ``repr(value)`` cut to ``limit`` characters, with the full length: a cell may hold 10,000 digits."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}... ({len(str(value)):,} characters)"


def read_cohort_rows(path: str | os.PathLike, root: str | os.PathLike | None = None) -> list[CohortRow]:
    """Return the rows of a ``cohort.csv`` with their slide and annotation files found.

    Slides are looked up by the ``path`` column (relative to the table's folder) when it is
    given, else by name in ``slides/`` or the table's folder (:func:`find_slide`);
    annotations in ``annotations/`` beside the table (:func:`find_annotation_file`).
    With a data root (``root``, else ``$PATHEX_DATA_ROOT``: :func:`data_root`) the slides
    are looked up under the root instead (a ``path`` that escapes it is an error), and
    annotations not found beside the table are looked up in ``root/annotations``.
    A slide whose file is not found has ``path`` None (the caller decides whether that is
    an error).

    Raises:
        CohortError: the file is missing or unreadable, not UTF-8 text (UTF-16 is named as
            such), holds a NUL byte, lacks the slide or label column, repeats a slide, names
            an empty slide, or holds a bad label or mpp (long values are cut in the message).
    """
    table = Path(path)
    try:
        with open(table, newline="", encoding="utf-8-sig") as handle:
            text = handle.read()
        if "\x00" in text:  # a binary file, or UTF-16 without its byte-order mark
            line = text.count("\n", 0, text.index("\x00")) + 1
            raise CohortError(
                f"cannot read cohort file {table}: line {line} contains a NUL byte (a binary file, or text in UTF-16?); "
                "save it as UTF-8 text"
            )
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except FileNotFoundError:
        raise CohortError(f"cohort file not found: {table}") from None
    except UnicodeDecodeError as exc:
        raise CohortError(f"cannot read cohort file {table}: {_not_utf8(table, exc)}") from None
    except csv.Error as exc:
        raise CohortError(f"cannot read cohort file {table}: {exc}") from None
    except OSError as exc:
        raise CohortError(f"cannot read cohort file {table}: {exc}") from None
    numbered = [(line, r) for line, r in enumerate(rows, start=1) if any(cell.strip() for cell in r)]
    if not numbered:
        raise CohortError(f"{table}: the cohort file is empty")
    header_line, header_row = numbered[0]
    header = [h.strip().lower() for h in header_row]
    if "slide" not in header or "label" not in header:
        raise CohortError(f"{table}: the cohort needs columns slide,label[,split][,mpp][,path]; header is {','.join(header_row)!r}")
    col = {name: header.index(name) for name in _COLUMNS if name in header}
    folder = table.parent
    annotations = annotations_dir(folder)
    base = data_root(root)
    result: list[CohortRow] = []
    seen: set[str] = set()
    for line, row in numbered[1:]:
        where = f"{table}, line {line}"
        row = row + [""] * (len(header) - len(row))
        slide = row[col["slide"]].strip()
        if not slide:
            raise CohortError(f"{where}: empty slide name")
        if slide in seen:
            raise CohortError(f"{where}: the cohort lists slide {_short(slide)} more than once")
        seen.add(slide)
        label = parse_label(row[col["label"]], slide, where)
        split = (row[col["split"]].strip() or None) if "split" in col else None
        mpp = _parse_mpp(row[col["mpp"]], where) if "mpp" in col else None
        given = row[col["path"]].strip() if "path" in col else ""
        if given and base is not None:
            try:
                candidate = resolve_under_root(given, base)
            except CohortError as exc:
                raise CohortError(f"{where}: {exc}") from None
            slide_path = candidate if candidate.is_file() else None
        elif given:
            candidate = (folder / given).resolve()
            slide_path = candidate if candidate.is_file() else None
        else:
            slide_path = find_slide(base if base is not None else folder, slide)
        notes = find_annotation_file(annotations, slide)
        if notes is None and base is not None:
            notes = find_annotation_file(annotations_dir(base), slide)
        result.append(CohortRow(slide, label, split, mpp, slide_path, notes))
    if not result:
        raise CohortError(f"{table}: the cohort lists no slides")
    return result


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> str:
    """Return why a table is not UTF-8 text, naming UTF-16 (what Excel's "Unicode text" writes) when its mark says so."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        head = b""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "it is UTF-16 text; save it as UTF-8 (CSV UTF-8)"
    return f"it is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at position {exc.start}); save it as UTF-8"


def folder_rows(root: str | os.PathLike) -> list[CohortRow]:
    """Return every slide of a data folder: the cohort table's rows, or each slide file unlabelled.

    With ``cohort.csv``: its rows (:func:`read_cohort_rows`). Without: one row per slide
    file (:func:`list_slides` of :func:`slides_dir`), label and split unknown, annotations
    found by the same rule.

    Raises:
        CohortError: a malformed cohort table.
    """
    root = Path(root)
    table = root / COHORT_FILE
    if table.is_file():
        return read_cohort_rows(table)
    annotations = annotations_dir(root)
    folder = slides_dir(root)
    if not folder.is_dir():
        return []
    return [
        CohortRow(p.stem, None, None, None, p, find_annotation_file(annotations, p.stem))
        for p in list_slides([folder])
    ]


# =========================================================================== the labelled cohort


@dataclass(frozen=True)
class Cohort:
    """The labelled slides of a cohort: what evaluation and reports work on.

    Attributes:
        slides: slide names (file stems), unique, in file order.
        labels: "tumor" or "normal", one per slide.
        splits: the split of each slide ("train", "val", "test"), or None when not given.
        mpp: microns per level-0 pixel of each slide, or None when not given.
    """

    slides: tuple[str, ...]
    labels: tuple[str, ...]
    splits: tuple[str | None, ...] = ()
    mpp: tuple[float | None, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.slides)
        if not self.splits:
            object.__setattr__(self, "splits", (None,) * n)
        if not self.mpp:
            object.__setattr__(self, "mpp", (None,) * n)
        if not (len(self.labels) == len(self.splits) == len(self.mpp) == n):
            raise CohortError("cohort columns have different lengths")
        if len(set(self.slides)) != n:
            dup = sorted({s for s in self.slides if self.slides.count(s) > 1})
            raise CohortError(f"the cohort lists slides more than once: {', '.join(map(repr, dup))}")
        bad = [(s, lab) for s, lab in zip(self.slides, self.labels) if lab not in ("tumor", "normal")]
        if bad:
            raise CohortError(f"slide {bad[0][0]!r}: label must be 'tumor' or 'normal', got {bad[0][1]!r}")

    def __len__(self) -> int:
        return len(self.slides)

    @property
    def is_tumor(self) -> np.ndarray:
        """Boolean array: True for tumor slides."""
        return np.array([lab == "tumor" for lab in self.labels], dtype=bool)

    @classmethod
    def from_labels(cls, labels: Mapping[str, str | bool]) -> Cohort:
        """Return a cohort from ``{slide: label}`` (labels as :func:`parse_label` accepts them).

        Raises:
            CohortError: an unknown or empty label.
        """
        names = tuple(str(s) for s in labels)
        parsed = tuple(parse_label(v, s) for s, v in labels.items())
        return cls(names, parsed)  # type: ignore[arg-type]  # None is refused by __post_init__

    @classmethod
    def from_rows(cls, rows: Sequence[CohortRow], *, labelled_only: bool = False) -> Cohort:
        """Return the cohort of table rows; ``labelled_only`` drops rows of unknown label.

        Raises:
            CohortError: a row without a label (unless ``labelled_only``).
        """
        if labelled_only:
            rows = [r for r in rows if r.label is not None]
        return cls(
            tuple(r.slide for r in rows), tuple(r.label for r in rows),  # type: ignore[misc]
            tuple(r.split for r in rows), tuple(r.mpp for r in rows),
        )

    def select(self, split: str) -> Cohort:
        """Return the slides of one split.

        Raises:
            CohortError: no slide is in that split.
        """
        keep = [i for i, s in enumerate(self.splits) if s == split]
        if not keep:
            known = sorted({s for s in self.splits if s is not None})
            raise CohortError(f"no slide of the cohort is in split {split!r} (splits: {', '.join(known) or 'none given'})")
        pick = lambda seq: tuple(seq[i] for i in keep)  # noqa: E731
        return Cohort(pick(self.slides), pick(self.labels), pick(self.splits), pick(self.mpp))

    def with_mpp(self, known: Mapping[str, float | None]) -> Cohort:
        """Return the cohort with the mpp of slides that have none taken from ``known`` (the table wins)."""
        filled = tuple(m if m is not None else known.get(s) for s, m in zip(self.slides, self.mpp))
        return Cohort(self.slides, self.labels, self.splits, filled)


def read_cohort(path: str | os.PathLike) -> Cohort:
    """Return the labelled cohort of a ``cohort.csv`` (every row must have a label).

    Raises:
        CohortError: see :func:`read_cohort_rows`, and a row without a label.
    """
    rows = read_cohort_rows(path)
    unlabelled = [r.slide for r in rows if r.label is None]
    if unlabelled:
        raise CohortError(f"{path}: slide {unlabelled[0]!r} has no label (tumor or normal)")
    return Cohort.from_rows(rows)
