"""Tests of core.annotations: GeoJSON / ASAP XML reading and writing, tumor regions, bad input."""

import ast
import gzip
import json
import re
import warnings
from pathlib import Path

import pytest
from shapely.geometry import MultiPolygon, Polygon, box

from core.annotations import (
    Annotation,
    AnnotationWarning,
    load_tumors,
    read_annotations,
    read_asap_xml,
    read_geojson,
    split_tumors,
    tumor_region,
    write_asap_xml,
    write_geojson,
)
from core.errors import AnnotationError, PathologyError

MODULE = Path(__file__).resolve().parents[1] / "core" / "annotations.py"


# ----------------------------------------------------------------------------- helpers


def asap(annotations: list[tuple[str, str, list[tuple[str, str]]]], *, groups: str = "") -> str:
    """Return ASAP XML text; each annotation is (Type, PartOfGroup, [(X, Y), ...])."""
    body = []
    for i, (kind, group, points) in enumerate(annotations):
        coords = "".join(
            f'<Coordinate Order="{k}" X="{x}" Y="{y}"/>' for k, (x, y) in enumerate(points)
        )
        body.append(
            f'<Annotation Name="Annotation {i}" Type="{kind}" PartOfGroup="{group}" '
            f'Color="#F4FA58"><Coordinates>{coords}</Coordinates></Annotation>'
        )
    return (
        '<?xml version="1.0"?>\n<ASAP_Annotations><Annotations>'
        + "".join(body)
        + f"</Annotations><AnnotationGroups>{groups}</AnnotationGroups></ASAP_Annotations>"
    )


def square(x0, y0, x1, y1) -> list[tuple[str, str]]:
    return [(str(x0), str(y0)), (str(x1), str(y0)), (str(x1), str(y1)), (str(x0), str(y1))]


def feature(geometry, classification=None, **props) -> dict:
    if classification is not None:
        props["classification"] = classification
    return {"type": "Feature", "geometry": geometry, "properties": props}


def poly_geom(*rings) -> dict:
    return {"type": "Polygon", "coordinates": [list(map(list, r)) + [list(r[0])] for r in rings]}


SQUARE_RING = [(0, 0), (10, 0), (10, 10), (0, 10)]


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def holed() -> Polygon:
    # 100 x 100 square with a 20 x 30 hole: area 10000 - 600 = 9400.
    return Polygon(
        [(0, 0), (100, 0), (100, 100), (0, 100)], [[(10, 10), (30, 10), (30, 40), (10, 40)]]
    )


@pytest.fixture
def multi() -> MultiPolygon:
    # Two disjoint parts: 50 x 20 = 1000 and a right triangle with legs 40: 800.
    return MultiPolygon([box(200, 0, 250, 20), Polygon([(300, 300), (340, 300), (300, 340)])])


# ----------------------------------------------------------------------------- roles


@pytest.mark.parametrize(
    ("label", "role"),
    [
        ("_0", "tumor"),
        ("_1", "tumor"),
        ("Tumor", "tumor"),
        ("TUMOUR", "tumor"),
        ("metastasis", "tumor"),
        ("Cancer", "tumor"),
        ("", "tumor"),
        ("_2", "exclusion"),
        ("Exclusion", "exclusion"),
        ("Normal", "other"),
        ("Stroma", "other"),
        ("None", "other"),
    ],
)
def test_role_from_label(label, role):
    assert Annotation(box(0, 0, 1, 1), label).role == role


def test_annotation_rejects_non_polygon_geometry():
    from shapely.geometry import Point

    with pytest.raises(TypeError):
        Annotation(Point(0, 0), "Tumor")


# ----------------------------------------------------------------------------- GeoJSON


def test_geojson_round_trip_hole_and_multipolygon(tmp_path, holed, multi):
    path = tmp_path / "slide.geojson"
    anns = [Annotation(holed, "Tumor", "first"), Annotation(multi, "Normal")]
    write_geojson(path, anns, properties={"synthetic": True, "source": "test"})

    back = read_geojson(path)
    assert [(a.label, a.name) for a in back] == [("Tumor", "first"), ("Normal", "")]
    assert back[0].geometry.geom_type == "Polygon"
    assert back[0].geometry.area == pytest.approx(9400.0)
    assert len(back[0].geometry.interiors) == 1
    assert back[0].geometry.equals(holed)
    assert back[1].geometry.geom_type == "MultiPolygon"
    assert back[1].geometry.area == pytest.approx(1800.0)
    assert back[1].geometry.symmetric_difference(multi).area == pytest.approx(0.0, abs=1e-9)

    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection"
    assert doc["properties"] == {"synthetic": True, "source": "test"}
    props = doc["features"][0]["properties"]
    assert props["objectType"] == "annotation"
    assert props["classification"]["name"] == "Tumor"
    assert len(props["classification"]["color"]) == 3
    assert props["name"] == "first"
    assert props["synthetic"] is True and props["source"] == "test"
    assert doc["features"][1]["properties"]["synthetic"] is True


def test_geojson_plain_polygons_written_as_tumor(tmp_path):
    path = tmp_path / "plain.geojson"
    write_geojson(path, [box(0, 0, 10, 10)])
    (ann,) = read_annotations(path)
    assert ann.label == "Tumor" and ann.role == "tumor"
    assert ann.geometry.area == 100.0
    assert "properties" not in json.loads(path.read_text())


def test_geojson_unclassified_round_trip_stays_unclassified(tmp_path):
    path = tmp_path / "u.geojson"
    write_geojson(path, [Annotation(box(0, 0, 2, 2), "")])
    assert "classification" not in json.loads(path.read_text())["features"][0]["properties"]
    (ann,) = read_geojson(path)
    assert ann.label == "" and ann.role == "tumor"


def test_geojson_gz_round_trip(tmp_path, holed):
    path = tmp_path / "slide.geojson.gz"
    write_geojson(path, [holed])
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    (ann,) = read_annotations(path)
    assert ann.geometry.equals(holed)


def test_qupath_list_of_features(tmp_path):
    doc = [
        feature(poly_geom(SQUARE_RING), {"name": "Tumor", "colorRGB": -3670016}, name="A"),
        feature(poly_geom([(20, 0), (30, 0), (30, 5), (20, 5)]), {"name": "Stroma"}),
    ]
    path = write_text(tmp_path / "qupath.json", json.dumps(doc))
    anns = read_annotations(path)
    assert [(a.label, a.name, a.geometry.area) for a in anns] == [("Tumor", "A", 100.0), ("Stroma", "", 50.0)]
    assert [a.role for a in anns] == ["tumor", "other"]


def test_unclassified_feature_counts_as_tumor(tmp_path):
    doc = {"type": "FeatureCollection", "features": [feature(poly_geom(SQUARE_RING))]}
    path = write_text(tmp_path / "unclassified.geojson", json.dumps(doc))
    (ann,) = read_geojson(path)
    assert ann.label == "" and ann.role == "tumor"
    (tumor,) = load_tumors(path)
    assert tumor.area == 100.0


def test_classification_as_plain_string_and_null(tmp_path):
    doc = {
        "type": "FeatureCollection",
        "features": [
            feature(poly_geom(SQUARE_RING), "Metastasis"),
            {"type": "Feature", "geometry": poly_geom(SQUARE_RING), "properties": {"classification": None}},
            {"type": "Feature", "geometry": poly_geom(SQUARE_RING), "properties": None},
        ],
    }
    path = write_text(tmp_path / "s.geojson", json.dumps(doc))
    assert [(a.label, a.role) for a in read_geojson(path)] == [
        ("Metastasis", "tumor"),
        ("", "tumor"),
        ("", "tumor"),
    ]


def test_single_feature_and_bare_geometry(tmp_path):
    one = write_text(tmp_path / "one.geojson", json.dumps(feature(poly_geom(SQUARE_RING), {"name": "_2"})))
    (ann,) = read_geojson(one)
    assert ann.role == "exclusion"
    bare = write_text(
        tmp_path / "bare.geojson",
        json.dumps({"type": "MultiPolygon", "coordinates": [poly_geom(SQUARE_RING)["coordinates"]]}),
    )
    (ann,) = read_geojson(bare)
    assert ann.label == "" and ann.geometry.area == 100.0


def test_point_feature_skipped_with_warning(tmp_path):
    doc = {
        "type": "FeatureCollection",
        "features": [
            feature({"type": "Point", "coordinates": [5, 5]}, {"name": "Tumor"}),
            feature(poly_geom(SQUARE_RING), {"name": "Tumor"}),
            feature({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}),
        ],
    }
    path = write_text(tmp_path / "points.geojson", json.dumps(doc))
    with pytest.warns(AnnotationWarning) as record:
        anns = read_geojson(path)
    assert len(anns) == 1 and anns[0].geometry.area == 100.0
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert "points.geojson: feature 0: Point is not a region; skipped" in messages[0]
    assert "points.geojson: feature 2: LineString" in messages[1]


def test_geometry_collection_keeps_polygonal_parts(tmp_path):
    gc = {
        "type": "GeometryCollection",
        "geometries": [
            poly_geom(SQUARE_RING),
            {"type": "Point", "coordinates": [50, 50]},
            poly_geom([(20, 0), (30, 0), (30, 10), (20, 10)]),
        ],
    }
    path = write_text(tmp_path / "gc.geojson", json.dumps(feature(gc, "Tumor")))
    with pytest.warns(AnnotationWarning, match="Point"):
        (ann,) = read_geojson(path)
    assert ann.geometry.geom_type == "MultiPolygon" and ann.geometry.area == 200.0


def test_self_intersecting_polygon_repaired_with_warning(tmp_path):
    # A bow tie (0,0)-(10,10)-(10,0)-(0,10): two triangles of area 25 each.
    path = write_text(
        tmp_path / "bowtie.geojson",
        json.dumps(feature(poly_geom([(0, 0), (10, 10), (10, 0), (0, 10)]), "Tumor")),
    )
    with pytest.warns(AnnotationWarning, match="bowtie.geojson: feature 0.*make_valid"):
        (ann,) = read_geojson(path)
    assert ann.geometry.is_valid
    assert ann.geometry.area == pytest.approx(50.0)


# ----------------------------------------------------------------------------- ASAP XML


def test_asap_round_trip_hole_becomes_exclusion(tmp_path, holed):
    path = tmp_path / "slide.xml"
    write_asap_xml(path, [Annotation(holed, "Tumor")])
    anns = read_asap_xml(path)
    assert [(a.label, a.geometry.area) for a in anns] == [("Tumor", 10000.0), ("_2", 600.0)]
    assert not any(a.geometry.interiors for a in anns)  # ASAP polygons have no holes
    region = tumor_region(anns)
    assert region.area == pytest.approx(9400.0)
    assert region.equals(holed)

    text = path.read_text()
    assert "<ASAP_Annotations>" in text and 'Type="Polygon"' in text
    assert '<Group Name="Tumor" PartOfGroup="None"' in text
    assert '<Group Name="_2" PartOfGroup="None"' in text


def test_asap_round_trip_multipolygon_one_element_per_part(tmp_path, multi):
    path = tmp_path / "multi.xml"
    write_asap_xml(path, [multi])
    anns = read_annotations(path)
    assert [a.label for a in anns] == ["Tumor", "Tumor"]
    assert [a.geometry.area for a in anns] == [1000.0, 800.0]
    assert tumor_region(anns).symmetric_difference(multi).area == pytest.approx(0.0, abs=1e-9)


def test_asap_round_trip_island_inside_hole_is_kept(tmp_path):
    # A _2 for the ring's hole would erase the island; the writer must avoid that.
    ring = box(0, 0, 100, 100).difference(box(20, 20, 80, 80))  # area 6400
    island = box(40, 40, 60, 60)  # area 400
    original = [Annotation(MultiPolygon([ring, island]), "_0")]
    path = tmp_path / "island.xml"
    write_asap_xml(path, original)
    back = read_asap_xml(path)
    assert all(a.label == "_0" for a in back)
    region = tumor_region(back)
    assert region.area == pytest.approx(6800.0)
    assert region.symmetric_difference(tumor_region(original)).area == pytest.approx(0.0, abs=1e-9)
    assert [t.area for t in split_tumors(region)] == [6400.0, 400.0]


def test_asap_round_trip_hole_in_non_tumor_annotations(tmp_path):
    normal = box(200, 0, 300, 100).difference(box(220, 20, 240, 40))
    exclusion = box(0, 0, 50, 50).difference(box(10, 10, 20, 20))  # tumor again inside its hole
    original = [
        Annotation(box(0, 0, 100, 100), "_0"),
        Annotation(exclusion, "_2"),
        Annotation(normal, "Normal"),
    ]
    path = tmp_path / "holes.xml"
    write_asap_xml(path, original)
    back = read_asap_xml(path)
    by_label = {}
    for a in back:
        by_label.setdefault(a.label, []).append(a.geometry)
    assert sum(g.area for g in by_label["Normal"]) == pytest.approx(9600.0)
    assert sum(g.area for g in by_label["_2"]) == pytest.approx(2400.0)
    # tumor = 10000 - (2500 - 100) = 7600, with the 10 x 10 tumor island in the exclusion's hole
    region = tumor_region(back)
    assert region.area == pytest.approx(7600.0)
    assert region.symmetric_difference(tumor_region(original)).area == pytest.approx(0.0, abs=1e-9)


def test_exclusion_carves_hole_out_of_tumor(tmp_path):
    xml = asap([("Polygon", "_0", square(0, 0, 100, 100)), ("Polygon", "_2", square(40, 40, 60, 60))])
    path = write_text(tmp_path / "carve.xml", xml)
    (tumor,) = load_tumors(path)
    assert tumor.area == 100 * 100 - 20 * 20
    assert len(tumor.interiors) == 1
    assert Polygon(tumor.interiors[0]).area == 400.0


def test_overlapping_groups_unite_into_one_tumor(tmp_path):
    # Two 10 x 10 squares overlapping by 5 x 10: union area 150.
    xml = asap([("Polygon", "_0", square(0, 0, 10, 10)), ("Polygon", "_1", square(5, 0, 15, 10))])
    tumors = load_tumors(write_text(tmp_path / "overlap.xml", xml))
    assert len(tumors) == 1
    assert tumors[0].area == 150.0
    assert tumors[0].bounds == (0.0, 0.0, 15.0, 10.0)


def test_disjoint_tumors_in_deterministic_order(tmp_path):
    # File order: lower-right first; output sorted by (miny, minx).
    xml = asap(
        [
            ("Polygon", "_0", square(500, 500, 520, 530)),
            ("Polygon", "_1", square(100, 0, 110, 10)),
            ("Polygon", "_0", square(0, 500, 10, 510)),
        ]
    )
    tumors = load_tumors(write_text(tmp_path / "three.xml", xml))
    assert [t.bounds[:2] for t in tumors] == [(100.0, 0.0), (0.0, 500.0), (500.0, 500.0)]
    assert [t.area for t in tumors] == [100.0, 100.0, 600.0]


def test_touching_polygons_are_one_tumor(tmp_path):
    xml = asap([("Polygon", "Tumor", square(0, 0, 10, 10)), ("Polygon", "tumor", square(10, 0, 20, 10))])
    tumors = load_tumors(write_text(tmp_path / "touch.xml", xml))
    assert len(tumors) == 1 and tumors[0].area == 200.0


def test_other_groups_do_not_count(tmp_path):
    xml = asap([("Polygon", "Normal", square(0, 0, 10, 10))])
    path = write_text(tmp_path / "normal.xml", xml)
    (ann,) = read_asap_xml(path)
    assert ann.role == "other"
    assert tumor_region([ann]).is_empty
    assert load_tumors(path) == []


def test_comma_decimal_coordinates(tmp_path):
    pts = [("0,5", "0,5"), ("10,5", "0,5"), ("10,5", "4,5"), ("0,5", "4,5")]
    (ann,) = read_asap_xml(write_text(tmp_path / "comma.xml", asap([("Polygon", "_0", pts)])))
    assert ann.geometry.bounds == (0.5, 0.5, 10.5, 4.5)
    assert ann.geometry.area == pytest.approx(40.0)


def test_float_coordinates_sorted_by_order(tmp_path):
    # Coordinates listed out of order; Order gives the ring 0,0 -> 4,0 -> 4,2.5 -> 0,2.5.
    xml = (
        "<ASAP_Annotations><Annotations>"
        '<Annotation Name="a" Type="Spline" PartOfGroup="_0"><Coordinates>'
        '<Coordinate Order="2" X="4" Y="2.5"/><Coordinate Order="0" X="0" Y="0"/>'
        '<Coordinate Order="3" X="0" Y="2.5"/><Coordinate Order="1" X="4" Y="0"/>'
        "</Coordinates></Annotation></Annotations></ASAP_Annotations>"
    )
    (ann,) = read_asap_xml(write_text(tmp_path / "order.xml", xml))
    assert ann.geometry.is_valid and ann.geometry.area == 10.0
    assert ann.name == "a"


def test_rectangle_and_dot(tmp_path):
    xml = asap(
        [
            ("Rectangle", "_0", square(0, 0, 30, 20)),
            ("Rectangle", "_0", [("100", "100"), ("110", "105")]),
            ("Dot", "_0", [("5", "5")]),
            ("PointSet", "_0", [("5", "5"), ("6", "6")]),
        ]
    )
    with pytest.warns(AnnotationWarning) as record:
        anns = read_asap_xml(write_text(tmp_path / "rect.xml", xml))
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert "rect.xml: annotation 2: type Dot" in messages[0]
    assert "rect.xml: annotation 3: type PointSet" in messages[1]
    assert [a.geometry.area for a in anns] == [600.0, 50.0]


# ----------------------------------------------------------------------------- unsafe XML


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<ASAP_Annotations><Annotations><Annotation Name="&lol9;" Type="Polygon" PartOfGroup="_0">
<Coordinates><Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="1" Y="0"/>
<Coordinate Order="2" X="1" Y="1"/></Coordinates></Annotation></Annotations></ASAP_Annotations>
"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE ASAP_Annotations [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<ASAP_Annotations><Annotations><Annotation Name="&xxe;" Type="Polygon" PartOfGroup="_0">
<Coordinates><Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="1" Y="0"/>
<Coordinate Order="2" X="1" Y="1"/></Coordinates></Annotation></Annotations></ASAP_Annotations>
"""


@pytest.mark.parametrize("text", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["billion-laughs", "external-entity"])
def test_entity_declarations_refused(tmp_path, text):
    path = write_text(tmp_path / "evil.xml", text)
    with pytest.raises(AnnotationError, match=r"evil\.xml: contains XML entity declarations; refused for safety"):
        read_annotations(path)


# ----------------------------------------------------------------------------- malformed input

GOOD_RING = [[0, 0], [1, 0], [1, 1], [0, 0]]
MALFORMED = {
    "not_json.geojson": ("{ this is not json", "not JSON"),
    "empty.geojson": ("", "empty"),
    "blank.json": ("  \n", "empty"),
    "string_coord.geojson": (
        json.dumps(feature({"type": "Polygon", "coordinates": [[[0, 0], ["1", 0], [1, 1], [0, 0]]]})),
        "feature 0: ring 0: coordinate 1 is not numeric",
    ),
    "nan_coord.geojson": (
        '{"type": "Polygon", "coordinates": [[[0, 0], [NaN, 0], [1, 1], [0, 0]]]}',
        "not finite",
    ),
    "two_points.geojson": (
        json.dumps(feature({"type": "Polygon", "coordinates": [[[0, 0], [5, 5], [0, 0]]]})),
        "fewer than 3 distinct points",
    ),
    "collinear.geojson": (
        json.dumps(feature({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [2, 2], [0, 0]]]})),
        "no area",
    ),
    "wrong_root.geojson": (json.dumps({"type": "Topology", "objects": {}}), "not GeoJSON"),
    "number_root.json": ("42", "not GeoJSON"),
    "bare_point.geojson": (json.dumps({"type": "Point", "coordinates": [1, 2]}), "region"),
    "circle.geojson": (
        json.dumps({"type": "FeatureCollection", "features": [feature({"type": "Circle", "coordinates": [1, 2]})]}),
        "feature 0: unsupported geometry type 'Circle'",
    ),
    "bad_class.geojson": (json.dumps(feature({"type": "Polygon", "coordinates": [GOOD_RING]}, 7)), "classification"),
    "not_xml.xml": ("<ASAP_Annotations><Annotations>", "not XML"),
    "empty.xml": ("", "empty"),
    "wrong_root.xml": ("<Annotations><Annotation/></Annotations>", "root element is <Annotations>"),
    "bad_number.xml": (asap([("Polygon", "_0", [("0", "0"), ("ten", "0"), ("10", "10")])]), "not a number: 'ten'"),
    "nan.xml": (asap([("Polygon", "_0", [("0", "0"), ("nan", "0"), ("10", "10")])]), "not finite"),
    "inf.xml": (asap([("Polygon", "_0", [("0", "0"), ("1", "inf"), ("10", "10")])]), "not finite"),
    "missing_y.xml": (
        "<ASAP_Annotations><Annotations><Annotation Type='Polygon' PartOfGroup='_0'><Coordinates>"
        "<Coordinate Order='0' X='1'/></Coordinates></Annotation></Annotations></ASAP_Annotations>",
        "Y: missing",
    ),
    "two_points.xml": (
        asap([("Polygon", "_0", [("0", "0"), ("5", "5")])]),
        "annotation 0: polygon has fewer than 3 distinct",
    ),
    "ellipse.xml": (asap([("Ellipse", "_0", square(0, 0, 1, 1))]), "unsupported annotation type 'Ellipse'"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_input_raises_annotation_error_naming_file(tmp_path, name):
    text, problem = MALFORMED[name]
    path = write_text(tmp_path / name, text)
    with pytest.raises(AnnotationError) as info:
        read_annotations(path)
    message = str(info.value)
    assert name in message
    assert problem in message
    assert isinstance(info.value, PathologyError)


@pytest.mark.parametrize("name", ["missing.geojson", "missing.xml"])
def test_missing_file(tmp_path, name):
    with pytest.raises(AnnotationError, match=re.escape(f"{name}: annotation file not found")):
        read_annotations(tmp_path / name)
    with pytest.raises(AnnotationError, match="not found"):
        load_tumors(tmp_path / name)


def test_unsupported_suffix(tmp_path):
    with pytest.raises(AnnotationError, match=r"outline\.csv: unsupported annotation file type"):
        read_annotations(write_text(tmp_path / "outline.csv", "x,y\n"))


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "bad.geojson.gz"
    path.write_bytes(gzip.compress(b'{"type": "FeatureCollection", "features": []}')[:20])
    with pytest.raises(AnnotationError, match=r"bad\.geojson\.gz: corrupt gzip"):
        read_annotations(path)


def test_writers_reject_non_regions(tmp_path):
    from shapely.geometry import Point

    with pytest.raises(AnnotationError, match=r"out\.geojson: item 1"):
        write_geojson(tmp_path / "out.geojson", [box(0, 0, 1, 1), Point(0, 0)])
    with pytest.raises(AnnotationError, match=r"out\.xml: item 0 has an empty geometry"):
        write_asap_xml(tmp_path / "out.xml", [Polygon()])
    with warnings.catch_warnings():  # shapely warns about the NaN we put there on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        bad = Polygon([(0, 0), (float("nan"), 0), (1, 1)])
    with pytest.raises(AnnotationError, match=r"out\.xml: item 0 has non-finite"):
        write_asap_xml(tmp_path / "out.xml", [bad])
    with pytest.raises(AnnotationError, match=r"out\.geojson: properties cannot be written as JSON"):
        write_geojson(tmp_path / "out.geojson", [box(0, 0, 1, 1)], properties={"when": object()})
    assert not (tmp_path / "out.geojson").exists() and not (tmp_path / "out.xml").exists()


def test_write_replaces_existing_file(tmp_path):
    path = tmp_path / "again.xml"
    write_asap_xml(path, [box(0, 0, 10, 10), box(20, 0, 30, 10)])
    write_asap_xml(path, [box(0, 0, 5, 5)])
    assert [a.geometry.area for a in read_asap_xml(path)] == [25.0]
    assert [f.name for f in tmp_path.iterdir()] == ["again.xml"]  # no temporary file left


def test_write_into_missing_folder_is_annotation_error(tmp_path):
    with pytest.raises(AnnotationError, match="cannot write"):
        write_geojson(tmp_path / "no" / "such" / "dir.geojson", [box(0, 0, 1, 1)])


# ----------------------------------------------------------------------------- regions


def test_tumor_region_empty_and_plain_polygons():
    assert tumor_region([]).is_empty
    assert tumor_region([Annotation(box(0, 0, 1, 1), "_2")]).is_empty
    assert split_tumors(tumor_region([])) == []
    region = tumor_region([box(0, 0, 2, 2), Annotation(box(1, 1, 2, 2), "Exclusion")])
    assert region.area == 3.0


def test_split_tumors_corner_touch_stays_two():
    # Squares meeting at the single point (10, 10) are two tumors.
    tumors = split_tumors(tumor_region([box(10, 10, 20, 20), box(0, 0, 10, 10)]))
    assert [t.bounds for t in tumors] == [(0.0, 0.0, 10.0, 10.0), (10.0, 10.0, 20.0, 20.0)]


def test_split_tumors_is_deterministic_under_input_order():
    boxes = [box(x, y, x + 5, y + 5) for x, y in [(50, 0), (0, 0), (0, 50), (25, 25)]]
    first = split_tumors(tumor_region(boxes))
    second = split_tumors(tumor_region(list(reversed(boxes))))
    assert [t.bounds for t in first] == [t.bounds for t in second]
    assert [t.bounds[:2] for t in first] == [(0.0, 0.0), (50.0, 0.0), (25.0, 25.0), (0.0, 50.0)]


def test_geojson_and_asap_give_same_tumors(tmp_path, holed, multi):
    anns = [Annotation(holed, "Tumor"), Annotation(multi, "_1"), Annotation(box(400, 400, 500, 500), "Normal")]
    write_geojson(tmp_path / "s.geojson", anns)
    write_asap_xml(tmp_path / "s.xml", anns)
    from_json = load_tumors(tmp_path / "s.geojson")
    from_xml = load_tumors(tmp_path / "s.xml")
    assert len(from_json) == len(from_xml) == 3
    for a, b in zip(from_json, from_xml):
        assert a.equals(b)
    assert [t.area for t in from_json] == [9400.0, 1000.0, 800.0]


def test_valid_file_reads_without_warnings(tmp_path, holed):
    write_geojson(tmp_path / "ok.geojson", [holed])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_annotations(tmp_path / "ok.geojson")


def test_module_does_not_import_torch_or_streamlit():
    tree = ast.parse(MODULE.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert not names & {"torch", "streamlit", "app", "pages"}
