"""Tests of core.cohort: the one owner of the data folder (table, labels, slide and annotation lookup)."""

from __future__ import annotations

import gzip
import subprocess
import sys

import pytest
from shapely.geometry import box

from core.annotations import write_geojson
from core.cohort import (
    ANNOTATION_SUFFIXES,
    SLIDE_SUFFIXES,
    Cohort,
    find_annotation_file,
    find_slide,
    folder_rows,
    list_slides,
    load_cohort_tumors,
    parse_label,
    read_cohort,
    read_cohort_rows,
)
from core.errors import CohortError
from tests.conftest import ROOT


def touch(path, data: bytes = b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "text, expected",
    [("tumor", "tumor"), ("Tumour", "tumor"), ("1", "tumor"), (" NORMAL ", "normal"), ("0", "normal"), ("", None), (True, "tumor"), (False, "normal")],
)
def test_labels_are_the_union_of_every_former_reader(text, expected):
    assert parse_label(text, "s") == expected


def test_a_bad_label_names_the_file_line_and_slide():
    with pytest.raises(CohortError, match=r"c.csv, line 3: slide 's2': label must be tumor \(tumour, 1\) or normal \(0\), got 'cancer'"):
        parse_label("cancer", "s2", "c.csv, line 3")


def test_rows_find_slides_annotations_and_the_path_column(tmp_path):
    touch(tmp_path / "slides" / "a.svs")
    touch(tmp_path / "b.TIFF")  # beside the table, upper-case suffix
    touch(tmp_path / "elsewhere" / "c.ndpi")
    (tmp_path / "annotations").mkdir()
    write_geojson(tmp_path / "annotations" / "a.geojson", [box(0, 0, 10, 10)])
    with gzip.open(tmp_path / "annotations" / "b.geojson.gz", "wt") as handle:
        handle.write('{"type": "FeatureCollection", "features": []}')
    (tmp_path / "cohort.csv").write_text(
        "slide,label,split,mpp,path\n"
        "a,tumour,train,0.25,\n"
        "b,0,val,,\n"
        "c,,test,,elsewhere/c.ndpi\n"
        "d,normal,test,,\n"
    )
    rows = {r.slide: r for r in read_cohort_rows(tmp_path / "cohort.csv")}
    assert rows["a"].label == "tumor" and rows["a"].mpp == 0.25 and rows["a"].path == tmp_path / "slides" / "a.svs"
    assert rows["a"].annotations.name == "a.geojson"
    assert rows["b"].label == "normal" and rows["b"].path.name == "b.TIFF" and rows["b"].annotations.name == "b.geojson.gz"
    assert rows["c"].label is None and rows["c"].path == (tmp_path / "elsewhere" / "c.ndpi").resolve()
    assert rows["d"].path is None and rows["d"].annotations is None
    # The labelled cohort refuses the unknown label; from_rows can drop it.
    with pytest.raises(CohortError, match="'c' has no label"):
        read_cohort(tmp_path / "cohort.csv")
    assert Cohort.from_rows(list(rows.values()), labelled_only=True).slides == ("a", "b", "d")


def test_table_errors_are_clear(tmp_path):
    table = tmp_path / "cohort.csv"
    for text, message in [
        ("", "is empty"),
        ("name,label\nx,tumor\n", "needs columns slide,label"),
        ("slide,label\n,tumor\n", "line 2: empty slide name"),
        ("slide,label\nx,tumor\n\nx,normal\n", "line 4: the cohort lists slide 'x' more than once"),
        ("slide,label,mpp\nx,tumor,abc\n", "line 2: mpp is not a number"),
        ("slide,label,mpp\nx,tumor,-1\n", "line 2: mpp must be a positive number"),
        ("slide,label\n", "lists no slides"),
    ]:
        table.write_text(text)
        with pytest.raises(CohortError, match=message):
            read_cohort_rows(table)
    with pytest.raises(CohortError, match="not found"):
        read_cohort_rows(tmp_path / "absent.csv")


def test_annotation_lookup_order_is_one_rule(tmp_path):
    assert ANNOTATION_SUFFIXES == (".geojson", ".geojson.gz", ".json", ".xml")
    touch(tmp_path / "s.xml")
    assert find_annotation_file(tmp_path, "s").name == "s.xml"
    touch(tmp_path / "s.json")
    assert find_annotation_file(tmp_path, "s").name == "s.json"
    touch(tmp_path / "s.geojson.gz")
    assert find_annotation_file(tmp_path, "s").name == "s.geojson.gz"
    touch(tmp_path / "s.geojson")
    assert find_annotation_file(tmp_path, "s").name == "s.geojson"
    assert find_annotation_file(tmp_path, "other") is None


def test_slide_listing_one_file_per_stem(tmp_path):
    for name in ("b.png", "a.svs", "a.png", "notes.txt", "c.czi", "D.JPG"):
        touch(tmp_path / name)
    (tmp_path / "sub").mkdir()
    found = list_slides([tmp_path])
    assert [p.name for p in found] == ["D.JPG", "a.svs", "b.png", "c.czi"]  # a.svs preferred over a.png
    assert list_slides([tmp_path / "notes.txt"]) == [tmp_path / "notes.txt"]  # named files are kept
    assert find_slide(tmp_path, "a").name == "a.svs" and find_slide(tmp_path, "zzz") is None
    assert ".czi" in SLIDE_SUFFIXES and ".dcm" in SLIDE_SUFFIXES


def test_a_folder_without_a_table_lists_every_slide_unlabelled(tmp_path):
    touch(tmp_path / "slides" / "x.svs")
    touch(tmp_path / "slides" / "y.tiff")
    (tmp_path / "annotations").mkdir()
    write_geojson(tmp_path / "annotations" / "y.geojson", [box(0, 0, 5, 5)])
    rows = folder_rows(tmp_path)
    assert [(r.slide, r.label, r.split) for r in rows] == [("x", None, None), ("y", None, None)]
    assert rows[1].annotations.name == "y.geojson"
    assert folder_rows(tmp_path / "absent") == []


def test_load_cohort_tumors_reads_gzipped_geojson(tmp_path):
    write_geojson(tmp_path / "t.geojson", [box(0, 0, 10, 10)])
    (tmp_path / "g.geojson.gz").write_bytes(gzip.compress((tmp_path / "t.geojson").read_bytes()))
    tumors = load_cohort_tumors(tmp_path, ["t", "g"])
    assert len(tumors["t"]) == 1 and tumors["g"][0].equals(tumors["t"][0])


def test_training_finds_what_evaluation_finds(demo_cohort, tmp_path):
    """Training's table reader and evaluation use the same lookup: a .geojson.gz annotation counts for both."""
    import shutil

    from core.training.data import read_cohort_table

    folder = tmp_path / "c"
    shutil.copytree(demo_cohort, folder)
    tumor = next(r for r in read_cohort_rows(folder / "cohort.csv") if r.label == "tumor")
    source = folder / "annotations" / f"{tumor.slide}.geojson"
    (folder / "annotations" / f"{tumor.slide}.geojson.gz").write_bytes(gzip.compress(source.read_bytes()))
    source.unlink()
    (folder / "annotations" / f"{tumor.slide}.xml").unlink()
    slides = {s.name: s for s in read_cohort_table(folder / "cohort.csv")}
    assert slides[tumor.slide].annotations.name == f"{tumor.slide}.geojson.gz"
    assert len(load_cohort_tumors(folder / "annotations", [tumor.slide])[tumor.slide]) > 0


def test_cohort_module_imports_neither_torch_nor_streamlit():
    code = "import sys, core.cohort; print(sorted(m for m in ('torch', 'streamlit', 'pandas') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


def test_a_dicom_slide_of_several_files_is_one_slide(shared_slides, tmp_path):
    import shutil

    for name in ("boxes_0.dcm", "boxes_1.dcm", "small.svs"):
        shutil.copy(shared_slides / name, tmp_path / name)
    assert [p.name for p in list_slides([tmp_path])] == ["boxes_0.dcm", "small.svs"]
    assert [r.slide for r in folder_rows(tmp_path)] == ["boxes_0", "small"]
