"""Camelyon16 submission files: detection points per slide, and one probability per slide.

* **Detections** (``<slide>.csv``): one line ``prob,x,y`` per detection, by descending
  probability. The detections are those of the evaluation's Camelyon16 mode: greedy
  non-maximum suppression (:func:`core.evaluation.camelyon16.nms_detections`) over the patch centres,
  radius :data:`core.evaluation.NMS_RADIUS_PATCH_SIDES` times the slide's median patch side
  unless a radius in um is given. x, y are the patch centre in level-0 pixels, written as
  integers (rounded down; exact for even patch sizes) because the official
  ``Evaluation_FROC.py`` reads them with ``int()``; for the same reason the file has no
  header line by default (``readCSVContent`` converts every line to numbers).
* **Slides** (``name,prob``, with that header): the slide score, max F(I) over the slide's
  patches (0 for a slide without patches), as the slide-level evaluation uses it.

Probabilities are written with ``repr`` (the float64 read back is the stored one).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.evaluation.camelyon16 import NMS_RADIUS_PATCH_SIDES, nms_detections
from core.export.common import ExportError, median_patch_side, patch_arrays, write_bytes

__all__ = [
    "Detections",
    "build_camelyon_csv",
    "build_camelyon_slides_csv",
    "select_detections",
    "write_camelyon_csv",
    "write_camelyon_slides_csv",
]


@dataclass(frozen=True)
class Detections:
    """Camelyon16 detections of one slide, by descending probability.

    Attributes:
        index: indices of the detected patches in the predictions.
        prob: F(I) of each detection.
        x, y: patch centres in level-0 pixels (float: x + width / 2, y + height / 2).
        radius: the NMS radius used, in level-0 pixels.
    """

    index: np.ndarray
    prob: np.ndarray
    x: np.ndarray
    y: np.ndarray
    radius: float

    def __len__(self) -> int:
        return int(self.index.size)


def select_detections(predictions: Any, *, mpp: float | None = None, nms_radius_um: float | None = None) -> Detections:
    """Return the Camelyon16 detections of one slide (the evaluation's NMS on patch centres).

    Args:
        predictions: arrays ``x, y, width, height`` (level-0 px) and ``prob``.
        mpp: microns per level-0 pixel; needed only with ``nms_radius_um``.
        nms_radius_um: NMS radius in um; None: :data:`NMS_RADIUS_PATCH_SIDES` median patch
            sides (the evaluation's default).

    Raises:
        ExportError: bad predictions, or a radius in um without a valid mpp.
    """
    x, y, w, h, prob = patch_arrays(predictions)
    if nms_radius_um is None:
        radius = NMS_RADIUS_PATCH_SIDES * median_patch_side(w, h)  # level-0 px
    else:
        if mpp is None or not math.isfinite(mpp) or mpp <= 0:
            raise ExportError(f"an NMS radius in um needs the slide's microns per pixel (mpp), got {mpp!r}")
        radius = float(nms_radius_um) / float(mpp)  # um -> level-0 px
    cx, cy = x + w / 2, y + h / 2  # patch centres, level-0 px
    keep = nms_detections(cx, cy, prob, radius) if prob.size else np.zeros(0, dtype=np.int64)
    return Detections(keep, prob[keep], cx[keep], cy[keep], float(radius))


def build_camelyon_csv(predictions: Any, *, header: bool = False, **nms: Any) -> str:
    """Return the Camelyon16 detections CSV of one slide: lines ``prob,x,y``.

    Args:
        header: start with the line ``prob,x,y`` (the official script cannot read it).
        **nms: ``mpp`` and ``nms_radius_um`` of :func:`select_detections`.
    """
    det = select_detections(predictions, **nms)
    lines = ["prob,x,y"] if header else []
    xs = np.floor(det.x).astype(np.int64).tolist()
    ys = np.floor(det.y).astype(np.int64).tolist()
    lines += [f"{p!r},{a},{b}" for p, a, b in zip(det.prob.tolist(), xs, ys)]
    return "".join(line + "\n" for line in lines)


def build_camelyon_slides_csv(predictions: Mapping[str, Any]) -> str:
    """Return the slide-level CSV ``name,prob`` (header included): max F(I) of each slide.

    Args:
        predictions: slide name -> predictions (arrays ``prob`` at least); slides in the
            mapping's order.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["name", "prob"])
    for name, pred in predictions.items():
        prob = np.asarray(pred.prob, dtype=np.float64)
        writer.writerow([name, repr(float(prob.max())) if prob.size else "0.0"])
    return out.getvalue()


def write_camelyon_csv(path: str | os.PathLike, predictions: Any, **options: Any) -> Path:
    """Write :func:`build_camelyon_csv` to ``path``; return the path."""
    return write_bytes(path, build_camelyon_csv(predictions, **options).encode("utf-8"))


def write_camelyon_slides_csv(path: str | os.PathLike, predictions: Mapping[str, Any]) -> Path:
    """Write :func:`build_camelyon_slides_csv` to ``path``; return the path."""
    return write_bytes(path, build_camelyon_slides_csv(predictions).encode("utf-8"))
