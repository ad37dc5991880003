"""Tumor annotations: polygons in level-0 pixel coordinates, read and written as GeoJSON and ASAP XML.

Every geometry in this module is in the **level-0 pixel frame** of the slide: x to the right,
y downwards, origin at the top-left corner of the full-resolution image. Neither format
carries another frame, so nothing here converts coordinates.

Two file conventions are supported:

* **GeoJSON** (the QuPath convention): a FeatureCollection of Polygon / MultiPolygon
  features whose ``properties.classification.name`` is the class, e.g. "Tumor". A single
  Feature, a bare geometry and a JSON list of Features (what QuPath's "Export objects"
  writes) are read too; so is a gzip-compressed file (``.geojson.gz``).
* **ASAP XML** (the Camelyon16 convention): ``<ASAP_Annotations>`` with ``<Annotation
  Type="Polygon" PartOfGroup="_0">`` elements. Groups ``_0`` and ``_1`` are tumor, ``_2`` is
  normal tissue inside a tumor and is subtracted from it.

An :class:`Annotation` keeps the class name as the file spells it (``label``) and derives
its :attr:`~Annotation.role` from it: "tumor", "exclusion" or "other".
:func:`tumor_region` combines the annotations of one slide into the tumor area (tumors minus
exclusions) and :func:`split_tumors` cuts that area into its connected components, one
*tumor* each, as the FROC evaluation counts them.

Bad files raise :class:`~core.errors.AnnotationError` naming the file and the problem;
recoverable oddities (a self-intersecting outline, a point annotation) give an
:class:`AnnotationWarning` and are repaired or skipped.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import sys
import warnings
import zlib
import xml.etree.ElementTree as ET  # writing only; every parse goes through defusedxml
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import defusedxml
import numpy as np
import defusedxml.ElementTree as SafeET
import shapely
from shapely.geometry import MultiPolygon, Polygon, mapping
from shapely.geometry.base import BaseGeometry

from core.errors import AnnotationError
from core.fileio import atomic_write_bytes

__all__ = [
    "Annotation",
    "AnnotationWarning",
    "EXCLUSION_LABELS",
    "TUMOR_LABELS",
    "load_tumors",
    "read_annotations",
    "read_asap_xml",
    "read_geojson",
    "split_tumors",
    "tumor_region",
    "write_asap_xml",
    "write_geojson",
]

PathLike = Union[str, "os.PathLike[str]"]
Region = Union[Polygon, MultiPolygon]

#: Labels (compared case-insensitively, surrounding spaces ignored) whose role is "tumor":
#: the Camelyon16 ASAP groups ``_0`` and ``_1`` and the usual QuPath class names.
TUMOR_LABELS = frozenset({"_0", "_1", "tumor", "tumour", "metastasis", "cancer"})
#: Labels whose role is "exclusion": normal tissue drawn inside a tumor, subtracted from it.
EXCLUSION_LABELS = frozenset({"_2", "exclusion"})

#: Largest decompressed size accepted from a ``.gz`` file (guards against gzip bombs).
MAX_DECOMPRESSED_BYTES = 1 << 30

# Colours written to files; readers ignore colours.
_RGB_BY_ROLE = {"tumor": (200, 0, 0), "exclusion": (0, 160, 0), "other": (0, 0, 200)}
_HEX_BY_ROLE = {"tumor": "#F4FA58", "exclusion": "#64FE2E", "other": "#0000FF"}
# ASAP group used for holes of tumor polygons (the Camelyon16 exclusion group).
_ASAP_HOLE_GROUP = "_2"
# ASAP has no "unclassified": an annotation with an empty label (tumor role) goes here.
_ASAP_UNCLASSIFIED_GROUP = "Tumor"

_POLYGON_ASAP_TYPES = {"polygon", "spline", "rectangle"}
_POINT_ASAP_TYPES = {"dot", "pointset", "measurement"}
_NON_REGION_GEOJSON_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString"}


class AnnotationWarning(UserWarning):
    """An annotation file held something that was repaired or skipped (not an error)."""


@dataclass(frozen=True)
class Annotation:
    """One annotated region of a slide.

    Attributes:
        geometry: shapely Polygon or MultiPolygon in level-0 pixels (x right, y down).
        label: class name exactly as in the file, e.g. "Tumor", "_0", "_2", "Normal";
            "" for a GeoJSON feature without a classification.
        name: the annotation's own name if the file gives one, else "".
    """

    geometry: Region
    label: str
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.geometry, (Polygon, MultiPolygon)):
            raise TypeError(
                f"Annotation geometry must be a shapely Polygon or MultiPolygon, "
                f"not {type(self.geometry).__name__}"
            )
        if not isinstance(self.label, str) or not isinstance(self.name, str):
            raise TypeError("Annotation label and name must be strings")

    @property
    def role(self) -> str:
        """Return "tumor", "exclusion" or "other", derived from the label.

        Tumor: ``_0``, ``_1``, "Tumor", "Tumour", "Metastasis", "Cancer" and the empty
        label (an unclassified GeoJSON feature: QuPath writes unclassified annotations
        without a classification, and people often draw tumors unclassified).
        Exclusion: ``_2`` and "Exclusion". Case is ignored. Anything else is "other".
        """
        return _role_of(self.label)


def _role_of(label: str) -> str:
    key = label.strip().lower()
    if key == "" or key in TUMOR_LABELS:
        return "tumor"
    if key in EXCLUSION_LABELS:
        return "exclusion"
    return "other"


# --------------------------------------------------------------------------- reading


def read_annotations(path: PathLike) -> list[Annotation]:
    """Return the annotations of a GeoJSON or ASAP XML file, chosen by the file's suffix.

    ``.geojson``, ``.json`` (optionally followed by ``.gz``) are read as GeoJSON, ``.xml``
    as ASAP XML. Geometries are in level-0 pixels.

    Raises:
        AnnotationError: unknown suffix, or the file is missing or malformed.
    """
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in (".geojson", ".json"):
        return read_geojson(p)
    if last == ".xml" and p.suffix.lower() == ".xml":
        return read_asap_xml(p)
    raise AnnotationError(
        f"{p}: unsupported annotation file type {p.suffix or '(no suffix)'!r}; "
        "expected .geojson, .json or .xml"
    )


def read_geojson(path: PathLike) -> list[Annotation]:
    """Return the polygonal annotations of a GeoJSON file, in file order.

    Accepts a FeatureCollection, a single Feature, a bare geometry or a JSON list of
    Features (QuPath). Polygon and MultiPolygon geometries, and the polygonal parts of a
    GeometryCollection, become annotations in level-0 pixels; Point and LineString features
    are skipped with an :class:`AnnotationWarning`. ``properties.classification`` may be
    ``{"name": ...}`` or a plain string; a feature without one gets label "" (role tumor).
    Self-intersecting polygons are repaired with ``shapely.make_valid`` (warning).

    Raises:
        AnnotationError: missing, empty or non-JSON file; not GeoJSON; a polygon with fewer
            than 3 distinct points or no area; non-numeric, non-finite or out-of-float-range
            coordinates; an unknown geometry type; a bare non-polygonal geometry as the whole
            file; truncated or corrupt gzip data. Limits: JSON nested deeper than Python's
            recursion limit (~1000 levels; GeoJSON needs ~6) and integers of more than
            ``sys.get_int_max_str_digits()`` (4300) digits are refused, as Python's json module
            cannot read them.
    """
    p = Path(path)
    data = _read_bytes(p)
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(p, data)
    if not data.strip():
        raise AnnotationError(f"{p}: the file is empty")
    try:
        doc = json.loads(data)
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{p}: not JSON (not UTF-8 text: {exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{p}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        # json recurses once per nested list/object; GeoJSON needs about 6 levels.
        raise AnnotationError(
            f"{p}: the JSON is nested too deeply to read (more than about {sys.getrecursionlimit()} "
            "levels; GeoJSON needs about 6)"
        ) from None
    except ValueError as exc:
        if "digits" in str(exc):  # Python refuses integers longer than sys.get_int_max_str_digits()
            raise AnnotationError(
                f"{p}: holds a number with more than {sys.get_int_max_str_digits()} digits, not a pixel coordinate"
            ) from None
        raise AnnotationError(f"{p}: not JSON ({_first_line(exc)})") from None

    features = _geojson_features(p, doc)
    annotations: list[Annotation] = []
    for index, feature in enumerate(features):
        where = f"{p}: feature {index}"
        if not isinstance(feature, dict):
            raise AnnotationError(f"{where}: expected a JSON object, got {_kind(feature)}")
        if feature.get("type") == "Feature":
            geometry = feature.get("geometry")
            props = feature.get("properties") or {}
            if not isinstance(props, dict):
                raise AnnotationError(f"{where}: 'properties' must be an object")
        else:  # a bare geometry inside a list or as the whole file: unclassified
            geometry, props = feature, {}
        if geometry is None:
            _warn(f"{where}: has no geometry; skipped")
            continue
        region = _geojson_region(where, geometry)
        if region is None:
            continue
        label = _geojson_label(where, props.get("classification"))
        name = props.get("name")
        annotations.append(Annotation(region, label, name if isinstance(name, str) else ""))
    return annotations


def read_asap_xml(path: PathLike) -> list[Annotation]:
    """Return the polygonal annotations of an ASAP XML file (Camelyon16), in file order.

    Types Polygon and Spline become the polygon through their coordinates sorted by
    ``Order`` (a Spline's curve is approximated by its control points), Rectangle its
    rectangle; Dot, PointSet and Measurement are skipped with an :class:`AnnotationWarning`.
    ``PartOfGroup`` is the label. Coordinates may use "." or "," as decimal separator.
    Geometries are in level-0 pixels.

    Raises:
        AnnotationError: missing, empty or non-XML file; an XML declaration naming an
            unknown encoding; DTD entity declarations (refused for safety: XML bombs,
            external files); root element other than ``ASAP_Annotations``; an unknown
            annotation type; a polygon with fewer than 3 distinct points or no area;
            non-numeric or non-finite coordinates.
    """
    p = Path(path)
    data = _read_bytes(p)
    if not data.strip():
        raise AnnotationError(f"{p}: the file is empty")
    try:
        # defusedxml refuses entity declarations (billion laughs, external entities such
        # as SYSTEM "file:///etc/passwd") before expanding anything.
        root = SafeET.fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except defusedxml.EntitiesForbidden:
        raise AnnotationError(
            f"{p}: contains XML entity declarations; refused for safety (an <!ENTITY> can expand "
            "to gigabytes, an XML bomb, or read other files; ASAP files have none)"
        ) from None
    except defusedxml.DefusedXmlException as exc:
        raise AnnotationError(
            f"{p}: contains XML entity declarations or external references ({exc}); "
            "refused for safety"
        ) from None
    except SafeET.ParseError as exc:
        raise AnnotationError(f"{p}: not XML ({exc})") from None
    except LookupError as exc:  # expat: <?xml encoding="..."?> names an encoding Python does not know
        raise AnnotationError(f"{p}: the XML declares a text encoding Python does not know ({exc}); save it as UTF-8") from None
    except RecursionError:
        raise AnnotationError(f"{p}: the XML is nested too deeply to read") from None
    if root.tag != "ASAP_Annotations":
        raise AnnotationError(
            f"{p}: root element is <{root.tag}>, expected <ASAP_Annotations> (ASAP XML)"
        )

    annotations: list[Annotation] = []
    for index, element in enumerate(root.findall("./Annotations/Annotation")):
        where = f"{p}: annotation {index}"
        kind = element.get("Type")
        if kind is None:
            raise AnnotationError(f"{where}: has no Type attribute")
        if kind.strip().lower() in _POINT_ASAP_TYPES:
            _warn(f"{where}: type {kind} is not a region; skipped")
            continue
        if kind.strip().lower() not in _POLYGON_ASAP_TYPES:
            raise AnnotationError(
                f"{where}: unsupported annotation type {kind!r} "
                "(expected Polygon, Spline or Rectangle)"
            )
        points = _asap_points(where, element)
        if kind.strip().lower() == "rectangle" and len(set(points)) == 2:
            # Two corners only: the rectangle they span.
            xs, ys = zip(*points)
            x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
            points = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        region = _make_region(where, [_ring(where, points)], [])
        annotations.append(
            Annotation(region, element.get("PartOfGroup", "None"), element.get("Name", ""))
        )
    return annotations


# --------------------------------------------------------------------------- writing


def write_geojson(
    path: PathLike,
    annotations: Iterable[Annotation | Polygon | MultiPolygon],
    *,
    properties: dict[str, Any] | None = None,
) -> None:
    """Write annotations as a GeoJSON FeatureCollection (QuPath convention, level-0 pixels).

    Each feature has a Polygon or MultiPolygon geometry and the properties
    ``{"objectType": "annotation", "classification": {"name": label, "color": [r, g, b]},
    "name": name}``; ``classification`` is left out for an empty label (unclassified) and
    ``name`` for an empty name. ``properties`` is merged into every feature's properties
    (its keys win, so ``{"objectType": "detection"}`` is possible) and stored at collection
    level under "properties" too. Plain shapely polygons are written with label "Tumor".
    A path ending in ``.gz`` is gzip-compressed. The file is replaced atomically.

    Raises:
        AnnotationError: an item is not a polygonal region, a coordinate is not finite,
            or the file cannot be written.
        FileWriteError: ``path`` is a device, FIFO, directory or symbolic link; not replaced.
    """
    p = Path(path)
    extra = dict(properties or {})
    features = []
    for ann in _as_annotations(p, annotations):
        props: dict[str, Any] = {"objectType": "annotation"}
        if ann.label:
            props["classification"] = {"name": ann.label, "color": list(_RGB_BY_ROLE[ann.role])}
        if ann.name:
            props["name"] = ann.name
        props.update(extra)
        features.append(
            {"type": "Feature", "geometry": mapping(ann.geometry), "properties": props}
        )
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if properties is not None:
        collection["properties"] = extra
    try:
        text = json.dumps(collection, allow_nan=False)
    except (TypeError, ValueError) as exc:  # coordinates were checked: it is the properties
        raise AnnotationError(f"{p}: properties cannot be written as JSON ({exc})") from None
    data = text.encode("utf-8")
    if p.suffix.lower() == ".gz":
        data = gzip.compress(data, mtime=0)
    _write_atomically(p, data)


def write_asap_xml(path: PathLike, annotations: Iterable[Annotation | Polygon | MultiPolygon]) -> None:
    """Write annotations as ASAP XML (Camelyon16 convention, level-0 pixels).

    Every polygon becomes one ``<Annotation Type="Polygon">`` whose ``PartOfGroup`` is the
    label (a MultiPolygon gives one element per part), and every label one ``<Group>``.
    ASAP polygons have no holes, so:

    * a hole of a tumor polygon is written as an annotation of group ``_2`` (exclusion),
      which :func:`tumor_region` subtracts again, when no tumor lies inside the hole;
    * otherwise (a tumor island inside the hole, which a ``_2`` would erase, or a hole in
      an exclusion or other annotation) the polygon is cut along its own vertices into
      hole-free pieces of the same label whose union is the polygon.

    Either way :func:`tumor_region` of the file read back equals that of ``annotations``.
    Plain shapely polygons are written with label "Tumor"; an empty label (unclassified,
    role tumor) with group "Tumor". The file is replaced atomically.

    Raises:
        AnnotationError: an item is not a polygonal region, a coordinate is not finite,
            or the file cannot be written.
        FileWriteError: ``path`` is a device, FIFO, directory or symbolic link; not replaced.
    """
    p = Path(path)
    items = _as_annotations(p, annotations)
    tumors = [a.geometry for a in items if a.role == "tumor"]
    tumor_union = None  # computed only if some tumor polygon has a hole

    # (group, name, exterior ring coordinates) per <Annotation>, in write order.
    records: list[tuple[str, str, Sequence[tuple[float, float]]]] = []
    counter = 0

    def add(group: str, name: str, polygon: Polygon) -> None:
        nonlocal counter
        records.append((group, name or f"Annotation {counter}", polygon.exterior.coords[:-1]))
        counter += 1

    for ann in items:
        group = ann.label or _ASAP_UNCLASSIFIED_GROUP
        for part in _polygons_of(ann.geometry):
            if not part.interiors:
                add(group, ann.name, part)
                continue
            holes = [Polygon(ring) for ring in part.interiors]
            if ann.role == "tumor":
                if tumor_union is None:
                    tumor_union = shapely.union_all(tumors)
                    shapely.prepare(tumor_union)
                # Interiors intersect: a tumor inside the hole that a _2 would erase.
                if not any(tumor_union.relate_pattern(h, "T********") for h in holes):
                    add(group, ann.name, Polygon(part.exterior))
                    for hole in holes:
                        add(_ASAP_HOLE_GROUP, "", hole)
                    continue
            for piece in _hole_free_pieces(part):
                add(group, ann.name, piece)

    root = ET.Element("ASAP_Annotations")
    annotations_el = ET.SubElement(root, "Annotations")
    groups: dict[str, str] = {}
    for group, name, coords in records:
        color = _HEX_BY_ROLE[_role_of(group)]
        groups.setdefault(group, color)
        el = ET.SubElement(
            annotations_el,
            "Annotation",
            {"Name": name, "Type": "Polygon", "PartOfGroup": group, "Color": color},
        )
        coords_el = ET.SubElement(el, "Coordinates")
        for order, (x, y) in enumerate(coords):
            ET.SubElement(
                coords_el, "Coordinate", {"Order": str(order), "X": repr(float(x)), "Y": repr(float(y))}
            )
    groups_el = ET.SubElement(root, "AnnotationGroups")
    for group, color in groups.items():
        attributes = {"Name": group, "PartOfGroup": "None", "Color": color}
        group_el = ET.SubElement(groups_el, "Group", attributes)
        ET.SubElement(group_el, "Attributes")
    ET.indent(root)
    _write_atomically(p, ET.tostring(root, encoding="utf-8", xml_declaration=True))


# --------------------------------------------------------------------------- regions


def tumor_region(annotations: Iterable[Annotation | Polygon | MultiPolygon]) -> BaseGeometry:
    """Return the tumor area: the union of tumor-role geometries minus the union of exclusions.

    Plain shapely polygons count as tumor. The result is a Polygon or MultiPolygon in
    level-0 pixels, or an empty Polygon when there is no tumor. Other-role annotations
    are ignored.
    """
    tumors: list[BaseGeometry] = []
    exclusions: list[BaseGeometry] = []
    for item in annotations:
        if isinstance(item, Annotation):
            role, geometry = item.role, item.geometry
        elif isinstance(item, (Polygon, MultiPolygon)):
            role, geometry = "tumor", item
        else:
            raise TypeError(f"expected an Annotation or a shapely polygon, got {type(item).__name__}")
        if role == "tumor":
            tumors.append(geometry)
        elif role == "exclusion":
            exclusions.append(geometry)
    if not tumors:
        return Polygon()
    region = shapely.union_all(tumors)
    if exclusions:
        region = region.difference(shapely.union_all(exclusions))
    parts = _polygons_of(region)
    if not parts:
        return Polygon()
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def split_tumors(region: BaseGeometry) -> list[Polygon]:
    """Return the connected components of a tumor region, one Polygon per tumor (level-0 px).

    Polygons that share an edge were already merged by :func:`tumor_region`'s union;
    polygons that touch at a single point stay separate tumors. Non-polygonal parts are
    ignored. The order is deterministic: by (miny, minx), then (maxy, maxx), then area.
    """
    parts = _polygons_of(region)
    return sorted(parts, key=lambda g: (g.bounds[1], g.bounds[0], g.bounds[3], g.bounds[2], g.area))


def load_tumors(path: PathLike) -> list[Polygon]:
    """Return the tumors of an annotation file: one Polygon per connected tumor region.

    Equivalent to ``split_tumors(tumor_region(read_annotations(path)))``; level-0 pixels.

    Raises:
        AnnotationError: the file cannot be read (see :func:`read_annotations`).
    """
    return split_tumors(tumor_region(read_annotations(path)))


# --------------------------------------------------------------------------- helpers


def _warn(message: str) -> None:
    warnings.warn(message, AnnotationWarning, stacklevel=3)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _read_bytes(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise AnnotationError(f"{p}: annotation file not found") from None
    except IsADirectoryError:
        raise AnnotationError(f"{p}: is a directory, not an annotation file") from None
    except OSError as exc:
        raise AnnotationError(f"{p}: cannot read annotation file ({exc.strerror or exc})") from None


def _gunzip(p: Path, data: bytes) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            out = f.read(MAX_DECOMPRESSED_BYTES + 1)
    except EOFError as exc:
        raise AnnotationError(f"{p}: corrupt gzip data: truncated, the file was cut short ({exc})") from None
    except (OSError, zlib.error) as exc:
        raise AnnotationError(f"{p}: corrupt gzip data ({exc})") from None
    if len(out) > MAX_DECOMPRESSED_BYTES:
        raise AnnotationError(f"{p}: decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes; refused")
    return out


def _write_atomically(p: Path, data: bytes) -> None:
    # parents=False: writing into a missing folder stays an AnnotationError, as it always was.
    try:
        atomic_write_bytes(p, data, parents=False)
    except OSError as exc:
        raise AnnotationError(f"{p}: cannot write annotation file ({exc.strerror or exc})") from None


def _as_annotations(p: Path, items: Iterable[Annotation | Polygon | MultiPolygon]) -> list[Annotation]:
    out = []
    for index, item in enumerate(items):
        if isinstance(item, (Polygon, MultiPolygon)):
            item = Annotation(item, "Tumor")
        if not isinstance(item, Annotation):
            raise AnnotationError(
                f"{p}: item {index} is a {type(item).__name__}, not an Annotation or a polygon region"
            )
        if item.geometry.is_empty:
            raise AnnotationError(f"{p}: item {index} has an empty geometry")
        if not np.isfinite(shapely.get_coordinates(item.geometry)).all():
            raise AnnotationError(f"{p}: item {index} has non-finite (NaN or infinite) coordinates")
        out.append(item)
    return out


def _geojson_features(p: Path, doc: Any) -> list[Any]:
    """Return the list of features (or bare geometries) of a parsed GeoJSON document."""
    if isinstance(doc, list):  # QuPath "Export objects": a plain list of Features
        return doc
    if not isinstance(doc, dict):
        raise AnnotationError(f"{p}: not GeoJSON (the JSON root is {_kind(doc)})")
    kind = doc.get("type")
    if kind == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list):
            raise AnnotationError(f"{p}: FeatureCollection has no 'features' list")
        return features
    if kind == "Feature":
        return [doc]
    if kind in ("Polygon", "MultiPolygon", "GeometryCollection"):
        return [doc]
    if kind in _NON_REGION_GEOJSON_TYPES:
        raise AnnotationError(
            f"{p}: the file is a bare {kind} geometry; a region (Polygon or MultiPolygon) is required"
        )
    raise AnnotationError(f"{p}: not GeoJSON (root object has type {kind!r})")


def _geojson_label(where: str, classification: Any) -> str:
    if classification is None:
        return ""
    if isinstance(classification, str):
        return classification
    if isinstance(classification, dict):
        name = classification.get("name")
        if name is None or isinstance(name, str):
            return name or ""
    raise AnnotationError(f"{where}: classification must be a string or {{\"name\": string}}")


def _geojson_region(where: str, geometry: Any) -> Region | None:
    """Return the region of a GeoJSON geometry, or None for a skipped non-region."""
    if not isinstance(geometry, dict):
        raise AnnotationError(f"{where}: geometry must be an object, got {_kind(geometry)}")
    kind = geometry.get("type")
    if kind in _NON_REGION_GEOJSON_TYPES:
        _warn(f"{where}: {kind} is not a region; skipped")
        return None
    if kind == "GeometryCollection":
        members = geometry.get("geometries")
        if not isinstance(members, list):
            raise AnnotationError(f"{where}: GeometryCollection has no 'geometries' list")
        parts: list[Polygon] = []
        for k, member in enumerate(members):
            region = _geojson_region(f"{where}: geometry {k}", member)
            if region is not None:
                parts.extend(_polygons_of(region))
        if not parts:
            _warn(f"{where}: GeometryCollection has no polygonal part; skipped")
            return None
        return _combine(where, parts)
    coords = geometry.get("coordinates")
    if kind == "Polygon":
        return _geojson_polygon(where, coords)
    if kind == "MultiPolygon":
        if not isinstance(coords, list) or not coords:
            raise AnnotationError(f"{where}: MultiPolygon has no polygons")
        parts = []
        for k, poly in enumerate(coords):
            parts.extend(_polygons_of(_geojson_polygon(f"{where}: polygon {k}", poly)))
        return _combine(where, parts)
    raise AnnotationError(
        f"{where}: unsupported geometry type {kind!r}; a region (Polygon or MultiPolygon) is required"
    )


def _geojson_polygon(where: str, rings: Any) -> Region:
    if not isinstance(rings, list) or not rings:
        raise AnnotationError(f"{where}: polygon has fewer than 3 distinct points (no coordinates)")
    parsed = []
    for r, ring in enumerate(rings):
        ring_where = f"{where}: ring {r}"
        if not isinstance(ring, list):
            raise AnnotationError(f"{ring_where}: coordinates must be a list of [x, y] positions")
        parsed.append(_ring(ring_where, [_position(ring_where, k, pos) for k, pos in enumerate(ring)]))
    return _make_region(where, parsed[:1], parsed[1:])


def _position(where: str, k: int, pos: Any) -> tuple[float, float]:
    if not isinstance(pos, list) or len(pos) < 2:
        raise AnnotationError(f"{where}: coordinate {k} is not an [x, y] position: {_short(pos)}")
    x, y = pos[0], pos[1]
    for value in (x, y):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise AnnotationError(f"{where}: coordinate {k} is not numeric: {_short(pos)}")
    try:
        x, y = float(x), float(y)
    except OverflowError:  # an integer beyond float's range (~1.8e308), e.g. 401 digits
        raise AnnotationError(f"{where}: coordinate {k} is too large to be a pixel position: {_short(pos)}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise AnnotationError(f"{where}: coordinate {k} is not finite (NaN or infinite): {_short(pos)}")
    return x, y


def _short(value: Any) -> str:
    if isinstance(value, list):  # a huge integer's repr would take a while: show long numbers by their size
        return "[" + ", ".join(_short_number(v) for v in value[:4]) + (", ...]" if len(value) > 4 else "]")
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _short_number(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value).bit_length() > 64:
        return f"<an integer of {len(str(abs(value)))} digits>"  # json read it: within Python's digit limit
    return _short(value)


def _first_line(exc: BaseException) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return text if len(text) <= 120 else text[:117] + "..."


def _asap_number(where: str, text: str | None) -> float:
    if text is None:
        raise AnnotationError(f"{where}: missing")
    s = text.strip()
    # Some Camelyon16 files were written with a comma as decimal separator ("1234,5").
    if "," in s and "." not in s and s.count(",") == 1:
        s = s.replace(",", ".")
    try:
        value = float(s)
    except ValueError:
        raise AnnotationError(f"{where}: not a number: {_short(text)}") from None
    if not math.isfinite(value):
        raise AnnotationError(f"{where}: not finite (NaN or infinite): {_short(text)}")
    return value


def _asap_points(where: str, element: ET.Element) -> list[tuple[float, float]]:
    ordered = []
    for k, coord in enumerate(element.findall("./Coordinates/Coordinate")):
        cw = f"{where}: coordinate {k}"
        order_text = coord.get("Order")
        if order_text is None:
            order = k
        else:
            try:
                order = int(order_text.strip())
            except ValueError:
                raise AnnotationError(f"{cw}: Order is not an integer: {_short(order_text)}") from None
        x = _asap_number(f"{cw}: X", coord.get("X"))
        y = _asap_number(f"{cw}: Y", coord.get("Y"))
        ordered.append((order, k, (x, y)))
    ordered.sort()
    return [xy for _, _, xy in ordered]


def _ring(where: str, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    distinct = len(set(points))
    if distinct < 3:
        raise AnnotationError(
            f"{where}: polygon has fewer than 3 distinct points ({distinct}); not a region"
        )
    return points


def _make_region(
    where: str, shell: list[list[tuple[float, float]]], holes: list[list[tuple[float, float]]]
) -> Region:
    """Return a valid Polygon/MultiPolygon from parsed rings, repairing it if needed."""
    polygon = Polygon(shell[0], holes)
    if polygon.is_valid:
        return polygon
    reason = shapely.is_valid_reason(polygon)
    # "structure": union of the shells minus the holes, the reading closest to an outline
    # someone drew; keep only its polygonal parts.
    repaired = _polygons_of(shapely.make_valid(polygon, method="structure", keep_collapsed=False))
    if not repaired:
        raise AnnotationError(f"{where}: polygon encloses no area ({reason})")
    _warn(f"{where}: invalid polygon ({reason}) repaired with shapely.make_valid")
    return repaired[0] if len(repaired) == 1 else MultiPolygon(repaired)


def _combine(where: str, parts: list[Polygon]) -> Region:
    if len(parts) == 1:
        return parts[0]
    multi = MultiPolygon(parts)
    if multi.is_valid:
        return multi
    reason = shapely.is_valid_reason(multi)
    _warn(f"{where}: overlapping or touching polygons ({reason}) merged into their union")
    merged = _polygons_of(shapely.union_all(parts))
    return merged[0] if len(merged) == 1 else MultiPolygon(merged)


def _polygons_of(geometry: BaseGeometry) -> list[Polygon]:
    """Return the non-empty polygons of any geometry (flattening multi-parts and collections)."""
    if geometry is None or geometry.is_empty:
        return []
    if isinstance(geometry, Polygon):
        return [geometry]
    if isinstance(geometry, MultiPolygon):
        return [g for g in geometry.geoms if not g.is_empty]
    if hasattr(geometry, "geoms"):
        return [p for g in geometry.geoms for p in _polygons_of(g)]
    return []


def _hole_free_pieces(polygon: Polygon) -> list[Polygon]:
    """Return polygons without holes whose union is ``polygon``, using only its vertices.

    A constrained Delaunay triangulation introduces no new coordinates, so the pieces share
    edges exactly and their union rebuilds the polygon exactly (no slivers, no gaps that
    would split one tumor into two). Triangles are merged back into a few connected pieces:
    a connected set of triangles whose union still encloses a hole is split in two halves
    of its breadth-first order (each half stays connected) until no piece has a hole.
    """
    triangles = _polygons_of(shapely.constrained_delaunay_triangles(polygon))
    corners = shapely.get_coordinates(triangles).reshape(len(triangles), 4, 2)[:, :3].tolist()
    by_edge: dict[tuple, list[int]] = {}
    for i, (a, b, c) in enumerate(corners):
        a, b, c = tuple(a), tuple(b), tuple(c)
        for edge in ((a, b), (b, c), (c, a)):
            by_edge.setdefault(tuple(sorted(edge)), []).append(i)
    neighbours: list[list[int]] = [[] for _ in triangles]
    for ids in by_edge.values():
        if len(ids) == 2:
            neighbours[ids[0]].append(ids[1])
            neighbours[ids[1]].append(ids[0])

    def bfs(start: int, allowed: set[int]) -> list[int]:
        order, seen = [start], {start}
        for i in order:  # the list grows while iterating: breadth-first
            for j in neighbours[i]:
                if j in allowed and j not in seen:
                    seen.add(j)
                    order.append(j)
        return order

    pieces: list[Polygon] = []
    pending = [list(range(len(triangles)))]
    while pending:
        ids = pending.pop()
        remaining = set(ids)
        while remaining:  # each connected component of ids on its own
            component = bfs(min(remaining), remaining)
            remaining.difference_update(component)
            merged = _polygons_of(shapely.union_all([triangles[i] for i in component]))
            if len(component) == 1 or all(not p.interiors for p in merged):
                pieces.extend(merged)
            else:
                half = len(component) // 2
                pending.extend([component[:half], component[half:]])
    return pieces
