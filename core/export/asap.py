"""ASAP XML export: the tumor regions at t as polygons of group "Tumor" (Camelyon16 convention).

The regions are those of :func:`core.export.common.merge_regions` (the union of the patch
squares with ``F(I) >= t``); the file is written by :func:`core.annotations.write_asap_xml`,
so our own reader gives the same area back: ASAP polygons have no holes, and a region with a
hole is written as its outline plus the hole in the exclusion group ``_2``, which
:func:`core.annotations.tumor_region` subtracts again. Level-0 pixels.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from core.annotations import Annotation, write_asap_xml
from core.errors import AnnotationError
from core.export.common import ExportError, check_threshold, merge_regions, write_bytes

__all__ = ["ASAP_GROUP", "asap_annotations", "build_asap_xml", "write_asap_regions"]

#: ASAP group (``PartOfGroup``) of the exported regions; our reader gives it role "tumor".
ASAP_GROUP = "Tumor"


def asap_annotations(predictions: Any, threshold: float = 0.5) -> list[Annotation]:
    """Return the tumor regions at ``threshold`` as annotations labelled "Tumor".

    Each is named ``Region k (max F(I) p, n patches)``, most suspicious first.
    """
    t = check_threshold(threshold)
    return [
        Annotation(region.geometry, ASAP_GROUP, f"Region {k} (max F(I) {region.max_prob:.3f}, {region.n_patches} patches)")
        for k, region in enumerate(merge_regions(predictions, t), start=1)
    ]


def build_asap_xml(predictions: Any, threshold: float = 0.5) -> str:
    """Return the ASAP XML text of the tumor regions at ``threshold`` (level-0 px).

    No region (no patch with ``F(I) >= t``) gives a valid file without annotations.

    Raises:
        ExportError: bad predictions or threshold.
    """
    annotations = asap_annotations(predictions, threshold)
    # write_asap_xml writes files only: render into a private temporary folder.
    with tempfile.TemporaryDirectory(prefix="pathex-asap-") as folder:
        path = Path(folder) / "regions.xml"
        try:
            write_asap_xml(path, annotations)
        except AnnotationError as exc:
            raise ExportError(f"cannot write the ASAP XML: {exc}") from None
        return path.read_text(encoding="utf-8")


def write_asap_regions(path: str | os.PathLike, predictions: Any, threshold: float = 0.5) -> Path:
    """Write the tumor regions at ``threshold`` as ASAP XML to ``path``; return the path.

    Raises:
        ExportError: bad predictions or threshold, or the file cannot be written.
    """
    return write_bytes(path, build_asap_xml(predictions, threshold).encode("utf-8"))
