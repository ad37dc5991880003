"""The patch predictions CSV (``slide,x,y,width,height,prob``, level-0 px): reading and checking it."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from core.errors import EvaluationError

__all__ = ["PREDICTIONS_HEADER", "read_predictions_csv"]

#: The header of a patch predictions CSV (DESIGN: the contract other tools rely on).
PREDICTIONS_HEADER = ("slide", "x", "y", "width", "height", "prob")


def read_predictions_csv(path: str | os.PathLike) -> dict:
    """Return slide name -> :class:`core.store.PatchPredictions` from a patch predictions CSV.

    The header must be exactly ``slide,x,y,width,height,prob``; x, y, width, height are
    whole level-0 pixels (x, y >= 0 the top-left corner, width, height > 0), prob in [0, 1].
    Each slide's rows come back sorted by (y, x).

    Raises:
        EvaluationError: missing file, other header, a bad value, or a patch given twice.
    """
    import pandas as pd

    from core.store import PatchPredictions

    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as handle:
            first = handle.readline()
    except FileNotFoundError:
        raise EvaluationError(f"predictions file not found: {p}") from None
    except UnicodeDecodeError as exc:
        utf16 = _first_bytes(p).startswith((b"\xff\xfe", b"\xfe\xff"))
        what = "it is UTF-16 text" if utf16 else f"it is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at position {exc.start})"
        raise EvaluationError(f"cannot read predictions file {p}: {what}; save it as UTF-8") from None
    except OSError as exc:
        raise EvaluationError(f"cannot read predictions file {p}: {exc}") from None
    header = tuple(h.strip() for h in next(csv.reader([first]), []))
    if header != PREDICTIONS_HEADER:
        raise EvaluationError(f"{p}: the header must be {','.join(PREDICTIONS_HEADER)!r}, got {first.strip()!r}")
    try:
        frame = pd.read_csv(p, engine="pyarrow", dtype={"slide": str}, encoding="utf-8")
    except ImportError:  # pyarrow absent: pandas' own parser (slower, same result)
        frame = pd.read_csv(p, dtype={"slide": str}, encoding="utf-8")
    except Exception as exc:  # noqa: BLE001 -- pandas/pyarrow parse errors share no base class
        raise EvaluationError(f"{p}: not a valid predictions CSV ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if len(frame) == 0:
        return {}
    if frame["slide"].isna().any():
        raise EvaluationError(f"{p}: a row has no slide name")
    columns = {}
    for name in ("x", "y", "width", "height"):
        columns[name] = _whole_pixels(frame[name].to_numpy(), name, p)
    prob = pd.to_numeric(frame["prob"], errors="coerce").to_numpy(dtype=np.float64)
    if not (prob.min() >= 0 and prob.max() <= 1):  # also catches NaN (failed parses)
        raise EvaluationError(f"{p}: prob must be numbers in [0, 1] (min {prob.min()}, max {prob.max()}, or a non-number)")
    x, y = columns["x"], columns["y"]
    if x.min() < 0 or y.min() < 0:
        raise EvaluationError(f"{p}: x and y must be >= 0 (level-0 pixels)")
    if columns["width"].min() <= 0 or columns["height"].min() <= 0:
        raise EvaluationError(f"{p}: width and height must be > 0 (level-0 pixels)")
    codes, names = pd.factorize(frame["slide"].str.strip(), sort=False)
    codes = codes.astype(np.int64)
    # Sort by (slide, y, x) through one int64 key when it fits, and find duplicates in it.
    span = int(max(x.max(), y.max())) + 1
    if len(names) * span * span < 2**62:
        key = (codes * span + y) * span + x
        steps = np.diff(key)
        if np.all(steps > 0):  # already in order (the store writes CSVs this way)
            order = None
        else:
            order = np.argsort(key, kind="stable")
            steps = np.diff(key[order])
        dup = np.flatnonzero(steps == 0)
    else:
        order = np.lexsort((x, y, codes))
        k = (codes[order], y[order], x[order])
        dup = np.flatnonzero((k[0][1:] == k[0][:-1]) & (k[1][1:] == k[1][:-1]) & (k[2][1:] == k[2][:-1]))
    if order is not None:
        codes, prob = codes[order], prob[order]
        columns = {name: values[order] for name, values in columns.items()}
    if dup.size:
        i = dup[0]
        raise EvaluationError(
            f"{p}: patch ({columns['x'][i]}, {columns['y'][i]}) of slide {names[codes[i]]!r} is given twice"
        )
    bounds = np.flatnonzero(np.diff(codes)) + 1
    starts = np.r_[0, bounds]
    stops = np.r_[bounds, codes.size]
    out = {}
    for start, stop in zip(starts.tolist(), stops.tolist()):
        arrays = [columns[n][start:stop] for n in ("x", "y", "width", "height")] + [prob[start:stop]]
        for a in arrays:
            a.flags.writeable = False
        out[str(names[codes[start]])] = PatchPredictions(str(names[codes[start]]), *arrays)
    return out


def _first_bytes(p: Path, n: int = 4) -> bytes:
    """Return the first ``n`` bytes of a file (b"" when it cannot be read): to name its encoding in a message."""
    try:
        with open(p, "rb") as handle:
            return handle.read(n)
    except OSError:
        return b""


def _whole_pixels(values: np.ndarray, name: str, p: Path) -> np.ndarray:
    if values.dtype.kind in "iu":
        return values.astype(np.int64, copy=False)
    try:
        as_float = values.astype(np.float64)
    except (TypeError, ValueError):
        raise EvaluationError(f"{p}: column {name} must hold whole numbers of level-0 pixels") from None
    if not np.all(np.isfinite(as_float)) or not np.all(as_float == np.round(as_float)):
        raise EvaluationError(f"{p}: column {name} must hold whole numbers of level-0 pixels")
    return as_float.astype(np.int64)
