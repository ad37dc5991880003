"""The synthetic demo cohort: OpenSlide-readable pyramids, annotations, cohort table, determinism."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import tifffile
import shapely
from shapely import contains_xy

from core.annotations import load_tumors
from core.demo import cohort_layout, make_demo_cohort
from core.slide_io import Slide
from core.tiling import TilingParams, label_grid, tile_grid


def _nuclear_mask(image):
    """Nuclear pixels of an H&E-like RGB image: haematoxylin absorbs red, so they are darker in red
    than pink stroma or glass and bluer than red."""
    red, blue = image[..., 0].astype(int), image[..., 2].astype(int)
    return (red < 195) & (blue > red + 8)


def _nuclear_share(image):
    return float(_nuclear_mask(image).mean())


def _rows(folder):
    with open(folder / "cohort.csv") as handle:
        return list(csv.DictReader(handle))


def test_cohort_files_and_table(demo_cohort):
    rows = _rows(demo_cohort)
    assert [r["slide"] for r in rows] == ["demo_001", "demo_002", "demo_003", "demo_004"]
    assert sorted(r["label"] for r in rows) == ["normal", "normal", "tumor", "tumor"]
    assert list(rows[0].keys()) == ["slide", "label", "split"]
    for row in rows:
        assert (demo_cohort / "slides" / f"{row['slide']}.tiff").is_file()
        assert (demo_cohort / "annotations" / f"{row['slide']}.geojson").is_file()
        assert (demo_cohort / "annotations" / f"{row['slide']}.xml").is_file()


def test_slides_open_as_generic_tiff_pyramids_with_mpp(demo_cohort):
    slide = Slide(demo_cohort / "slides" / "demo_001.tiff")
    assert slide.vendor == "generic-tiff"
    assert slide.mpp == pytest.approx(0.5)
    assert slide.dimensions[0] == 2048
    assert slide.level_count >= 2
    assert slide.level_downsamples[:2] == (1.0, 2.0)
    assert "synthetic" in slide.properties["tiff.ImageDescription"]
    with tifffile.TiffFile(demo_cohort / "slides" / "demo_001.tiff") as tif:
        assert len(tif.pages) == slide.level_count  # one page per level, no SubIFDs
        assert all(page.is_tiled and page.tilewidth == 256 for page in tif.pages)
        assert [page.subfiletype for page in tif.pages[1:]] == [1] * (len(tif.pages) - 1)


def test_tumors_only_on_tumor_slides_and_they_look_like_tumor(demo_cohort):
    plans = {p.name: p for p in _plans((4, 3, 2048))}  # the fixture's cohort (tests/conftest.py)
    for row in _rows(demo_cohort):
        tumors = load_tumors(demo_cohort / "annotations" / f"{row['slide']}.geojson")
        assert (len(tumors) > 0) == (row["label"] == "tumor"), row
        features = json.loads((demo_cohort / "annotations" / f"{row['slide']}.geojson").read_text())
        assert features["properties"]["synthetic"] is True
        if row["label"] != "tumor":
            continue
        slide = Slide(demo_cohort / "slides" / f"{row['slide']}.tiff")
        grid = tile_grid(slide, TilingParams(level=0, patch_size=128))
        labels = label_grid(grid, tumors)
        assert labels.any() and not labels.all()
        # Tumor patches hold more haematoxylin: the typical (median) tumor patch has at least
        # 1.5 times the share of nuclear pixels of the typical normal tissue patch outside the
        # mimics (most tumor patches of these small slides are tumour edges, or one patch around
        # an isolated tumor cell cluster; lymphoid aggregates and hyperchromatic mimics are as
        # dark: that is the point of the mimics, and they cover a third of these small slides).
        nuclear = np.array([_nuclear_share(slide.read_region((int(x), int(y)), 0, (128, 128))) for x, y in zip(grid.x, grid.y)])
        mimic = np.array([any(m.intersects(shapely.box(x, y, x + 128, y + 128)) for m in plans[row["slide"]].mimics) for x, y in zip(grid.x, grid.y)])
        ordinary = ~labels & ~mimic
        assert np.median(nuclear[labels]) > 1.5 * np.median(nuclear[ordinary]), (np.median(nuclear[labels]), np.median(nuclear[ordinary]))


def test_geojson_and_asap_agree(demo_cohort):
    for row in _rows(demo_cohort):
        a = load_tumors(demo_cohort / "annotations" / f"{row['slide']}.geojson")
        b = load_tumors(demo_cohort / "annotations" / f"{row['slide']}.xml")
        assert len(a) == len(b)
        for pa, pb in zip(a, b):
            assert pa.symmetric_difference(pb).area < 1e-6 * pa.area


def test_same_seed_same_cohort(tmp_path):
    make_demo_cohort(tmp_path / "a", n_slides=2, seed=5, size=1024, workers=1)
    make_demo_cohort(tmp_path / "b", n_slides=2, seed=5, size=1024, workers=2)
    make_demo_cohort(tmp_path / "c", n_slides=2, seed=6, size=1024, workers=1)
    for name in ("slides/demo_001.tiff", "slides/demo_002.tiff", "annotations/demo_001.geojson", "cohort.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "slides/demo_001.tiff").read_bytes() != (tmp_path / "c" / "slides/demo_001.tiff").read_bytes()
    assert not (tmp_path / "a" / ".generating").exists()


def test_held_out_slides_alone_are_the_same_slides(tmp_path):
    from core.demo import cohort_in_progress

    make_demo_cohort(tmp_path / "all", n_slides=6, seed=2, size=1024, workers=1)
    make_demo_cohort(tmp_path / "held", n_slides=6, seed=2, size=1024, workers=1, splits=("val", "test"))
    rows = _rows(tmp_path / "held")
    assert {r["split"] for r in rows} == {"val", "test"} and len(rows) == len([r for r in _rows(tmp_path / "all") if r["split"] != "train"])
    for row in rows:
        name = f"slides/{row['slide']}.tiff"
        assert (tmp_path / "held" / name).read_bytes() == (tmp_path / "all" / name).read_bytes()
    assert sorted(p.stem for p in (tmp_path / "held" / "slides").glob("*.tiff")) == sorted(r["slide"] for r in rows)
    assert not cohort_in_progress(tmp_path / "held")


def test_slides_are_usable_as_they_are_written_and_an_interrupted_cohort_resumes(tmp_path):
    """After each slide the cohort table lists the slides written so far (each with its
    annotations); a second call after an interruption keeps them and writes the rest."""
    from core.demo import cohort_in_progress

    seen = []

    def on_slide(name):
        rows = _rows(tmp_path / "c")
        seen.append((name, [r["slide"] for r in rows]))
        assert cohort_in_progress(tmp_path / "c")
        for r in rows:
            assert (tmp_path / "c" / "slides" / f"{r['slide']}.tiff").is_file()
            assert (tmp_path / "c" / "annotations" / f"{r['slide']}.geojson").is_file()
        if len(seen) == 2:
            raise KeyboardInterrupt  # the server stopped half-way

    with pytest.raises(KeyboardInterrupt):
        make_demo_cohort(tmp_path / "c", n_slides=3, seed=1, size=1024, workers=1, on_slide=on_slide)
    assert [len(listed) for _, listed in seen] == [1, 2]
    assert cohort_in_progress(tmp_path / "c")
    first = (tmp_path / "c" / "slides" / "demo_001.tiff").stat().st_mtime_ns
    seen.clear()
    make_demo_cohort(tmp_path / "c", n_slides=3, seed=1, size=1024, workers=1, on_slide=lambda n: seen.append(n))
    assert seen == ["demo_003"]
    assert (tmp_path / "c" / "slides" / "demo_001.tiff").stat().st_mtime_ns == first
    assert not cohort_in_progress(tmp_path / "c")
    assert [r["slide"] for r in _rows(tmp_path / "c")] == ["demo_001", "demo_002", "demo_003"]


def test_a_tumor_slide_is_written_first(tmp_path):
    """First start: the first slide a user can open has a tumor on it (in the default cohort, a
    macrometastasis); the others follow in layout order."""
    from core.demo import _first_start_order

    order = _first_start_order(_plans((24, 0, 6144)))
    assert order[0].label == "tumor" and order[0].scenario == "macro" and "macro" in order[0].tumor_sizes
    rest = [p.name for p in order[1:]]
    assert rest == sorted(rest) and len(order) == 24
    seen = []
    make_demo_cohort(tmp_path / "c", n_slides=3, seed=1, size=1024, workers=1, on_slide=seen.append)
    labels = {r["slide"]: r["label"] for r in _rows(tmp_path / "c")}
    assert labels[seen[0]] == "tumor" and sorted(seen) == sorted(labels)


def _plan_with_every_artefact():
    """A 2048 px tumor slide with a fold, a pen mark, a blur patch and a bubble, each crossing
    strip and tile boundaries (rows 256, 512, 768...)."""
    from core.demo import Artefact, plan_slide

    plan = plan_slide("demo_x", "tumor", "train", 2048, (1, 1))
    artefacts = (
        Artefact("fold", ((300.0, 200.0), (900.0, 700.0), (1500.0, 900.0)), 80.0, 1.9),
        Artefact("pen", ((1200.0, 100.0), (1300.0, 520.0), (1700.0, 800.0)), 24.0, 0.9, "green"),
        Artefact("blur", ((1000.0, 512.0),), 220.0, 3.0),
        Artefact("bubble", ((600.0, 1024.0),), 150.0, 0.35),
    )
    return dataclasses.replace(plan, artefacts=artefacts)


def test_strip_rendering_is_seamless():
    """Rendering in strips must equal rendering the same rows at once (no seams), artefacts included."""
    from core.demo import SlideRenderer

    plan = _plan_with_every_artefact()
    renderer = SlideRenderer(plan)
    whole = renderer.render_strip(0, plan.height)
    parts = np.concatenate([renderer.render_strip(row, min(256, plan.height - row)) for row in range(0, plan.height, 256)])
    np.testing.assert_array_equal(whole, parts)
    # The artefacts are drawn: the pen's green ink and the fold's doubled tissue are there.
    r, g, b = (whole[..., c].astype(int) for c in range(3))
    assert ((g > r + 20) & (g > b)).sum() > 2000  # green ink (H&E never has green dominate)


def test_nuclei_are_whole_at_tile_edges():
    """A nucleus centred near a strip edge is drawn whole on both sides (no straight cuts)."""
    from core.demo import STRIP, SlideRenderer, plan_slide

    plan = plan_slide("demo_y", "tumor", "train", 2048, (3, 0))
    renderer = SlideRenderer(plan)
    x, y, kind, _ = renderer.nuclei(STRIP - 12, 24)  # nuclei centred within 12 rows of the first strip edge
    assert len(x) > 0
    lower = renderer.render_strip(STRIP, 256)
    upper = renderer.render_strip(STRIP - 256, 256)
    joined = np.concatenate([upper, lower])
    whole = renderer.render_strip(STRIP - 256, 512)
    np.testing.assert_array_equal(joined, whole)


def _plans(cohort_args):
    from core.demo import cohort_layout, plan_slide

    n, seed, size = cohort_args
    return [plan_slide(name, label, split, size, (seed, i)) for i, (name, label, split) in enumerate(cohort_layout(n, seed))]


@pytest.mark.parametrize("cohort_args", [(4, 3, 2048), (24, 0, 6144)])
def test_tumor_annotations_cover_tumor_cells_and_mimics_stay_outside(cohort_args):
    """Every tumor annotation holds rendered tumor cells; every tumor cell is inside an
    annotation; mimic cells (lymphoid aggregates, hyperchromatic benign, crushed) never are;
    normal slides have no tumor cells at all."""
    from shapely.ops import unary_union

    from core.demo import TUMOR_CELL, SlideRenderer

    plans = _plans(cohort_args)
    if cohort_args[0] == 24:  # the full default cohort: the layout is checked, a few slides rendered
        assert {p.scenario for p in plans if p.label == "tumor"} == {"macro", "micro", "small"}
        sizes = [s for p in plans for s in p.tumor_sizes]
        assert {"itc", "micro", "macro"} <= set(sizes)
        assert any(p.label == "tumor" and set(p.tumor_sizes) <= {"itc"} for p in plans) or any(
            p.scenario == "small" for p in plans
        )
        assert sum(len(p.mimics) for p in plans if p.label == "normal") >= 10
        plans = [p for p in plans if p.scenario in ("small", "normal")][:3]
    for plan in plans:
        assert (len(plan.tumors) > 0) == (plan.label == "tumor")
        renderer = SlideRenderer(plan)
        masks = renderer.regions(0, plan.height)
        x, y, kind, _ = renderer.nuclei(0, plan.height, masks)
        tumor_area = unary_union(plan.tumors) if plan.tumors else None
        is_tumor = kind == "tumor"
        if plan.label == "normal":
            assert not is_tumor.any(), plan.name
        else:
            sheet = masks["tumor"] & ~masks["desmoplastic"]
            in_sheet = sheet[y[is_tumor], x[is_tumor]]
            for polygon, size in zip(plan.tumors, plan.tumor_sizes):
                inside = contains_xy(polygon, x[is_tumor] + 0.5, y[is_tumor] + 0.5)
                # One nucleus per filled tumor cell of the sheet (desmoplastic stroma holds fewer,
                # see the next test); an isolated-tumor-cell cluster has all its cells.
                x0, y0, x1, y1 = (int(v) for v in polygon.bounds)
                yy, xx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
                mine = contains_xy(polygon, xx + 0.5, yy + 0.5)  # this tumour's pixels, not a neighbour's in its box
                area = polygon.area if size == "itc" else (sheet[y0 : y1 + 1, x0 : x1 + 1] & mine).sum()
                cells = area / TUMOR_CELL**2 * (1.0 if size == "itc" else plan.cellularity)
                count = inside.sum() if size == "itc" else (inside & in_sheet).sum()
                assert count >= 0.6 * cells, (plan.name, size, count, cells)
                assert inside.sum() >= 2, (plan.name, size)
            assert contains_xy(tumor_area.buffer(1.0), x[is_tumor] + 0.5, y[is_tumor] + 0.5).all()
        mimic = np.isin(kind, ["lymph_aggregate", "hyperchromatic", "crushed"])
        assert mimic.sum() > 0 or not plan.mimics
        if tumor_area is not None:
            assert not contains_xy(tumor_area, x[mimic] + 0.5, y[mimic] + 0.5).any(), plan.name
            assert all(not m.intersects(tumor_area) for m in plan.mimics)


def test_desmoplastic_stroma_holds_scattered_tumor_cells_inside_the_annotation():
    """Part of each tumor slide's tumor is desmoplastic stroma: its share of the tumor area
    follows the plan (within the noise of a few patches), it lies inside the annotation, and
    its tumor cells are scattered (the plan's share of the sheet's density, within ±50%)."""
    from core.demo import SlideRenderer

    shares = []
    for plan in [p for p in _plans((24, 0, 6144)) if p.label == "tumor"][:5]:
        assert 0.3 <= plan.stroma_share <= 0.6 and 0.04 <= plan.stroma_fill <= 0.12
        renderer = SlideRenderer(plan)
        masks = renderer.regions(0, plan.height)
        x, y, kind, _ = renderer.nuclei(0, plan.height, masks)
        desmo, sheet = masks["desmoplastic"], masks["tumor"] & ~masks["desmoplastic"]
        assert not (desmo & ~masks["tumor"]).any()
        shares.append(desmo.sum() / masks["tumor"].sum())
        tumor = kind == "tumor"
        if desmo.sum() > 200_000:  # at least ~3 patches of it: the density is measured, not noise
            ratio = (desmo[y[tumor], x[tumor]].sum() / desmo.sum()) / (sheet[y[tumor], x[tumor]].sum() / sheet.sum())
            assert 0.5 * plan.stroma_fill <= ratio <= 1.5 * plan.stroma_fill + 0.1, (plan.name, ratio, plan.stroma_fill)
    assert 0.05 < float(np.mean(shares)) < 0.6, shares
    assert max(shares) > 0.15, shares


def test_tumor_pixels_are_nuclear_dense_inside_every_annotation(demo_cohort):
    """The rendered tumor is where the annotation says: inside each tumor outline the share of
    dark nuclear pixels is at least 1.5 times that of the tissue in a 100 µm ring around it."""
    for row in _rows(demo_cohort):
        if row["label"] != "tumor":
            continue
        slide = Slide(demo_cohort / "slides" / f"{row['slide']}.tiff")
        for tumor in load_tumors(demo_cohort / "annotations" / f"{row['slide']}.geojson"):
            ring = tumor.buffer(200).difference(tumor.buffer(20))
            x0, y0, x1, y1 = (max(int(v), 0) for v in ring.bounds)
            x1, y1 = min(x1, slide.dimensions[0]), min(y1, slide.dimensions[1])
            image = slide.read_region((x0, y0), 0, (x1 - x0, y1 - y0))
            nuclear = _nuclear_mask(image)
            tissue = image.astype(int).sum(axis=2) < 690  # not glass
            yy, xx = np.mgrid[y0:y1, x0:x1]
            inside = contains_xy(tumor, xx + 0.5, yy + 0.5)
            around = contains_xy(ring, xx + 0.5, yy + 0.5) & tissue
            assert nuclear[inside].mean() > 1.5 * nuclear[around].mean(), (row["slide"], nuclear[inside].mean(), nuclear[around].mean())


def test_tissue_panel_next_to_real_stained_tissue():
    """Full-resolution crops (level 0, 0.5 µm/px) of the default cohort's tumour (high and low
    grade, desmoplastic stroma), mimics and an artefact next to scikit-image's real IHC crop, written to
    test-artifacts/demo-tissue.png (the README's picture is a copy). Each crop is taken where
    the plan says its subject is."""
    from PIL import Image, ImageDraw
    from skimage import data as skdata

    from core.demo import FIELD_SCALE, SlideRenderer
    from tests.browser_support import ARTIFACTS

    plans = {p.name: p for p in _plans((24, 0, 6144))}
    side = 512

    def crop(plan, cx, cy):
        renderer = SlideRenderer(plan)
        x0 = int(min(max(cx - side // 2, 0), plan.width - side))
        row0 = int(min(max(cy - side // 2, 0), plan.height - side)) // 256 * 256
        strip = renderer.render_strip(row0, min(768, plan.height - row0))
        top = int(min(max(cy - side // 2 - row0, 0), strip.shape[0] - side))
        return strip[top : top + side, x0 : x0 + side], (x0, row0 + top)

    def subject(plan, polygon):
        point = polygon.representative_point()
        return point.x, point.y

    def tumour_subject(plan, stroma: bool):
        """The point of the plan's largest tumour deepest in its desmoplastic stroma (or in its sheet of cells)."""
        renderer = SlideRenderer(plan)
        tumor = max(plan.tumors, key=lambda t: t.area)
        x0, y0, x1, y1 = tumor.bounds
        yy, xx = np.mgrid[int(y0) : int(y1) : 32, int(x0) : int(x1) : 32]
        inside = shapely.contains_xy(tumor.buffer(-side / 2), xx, yy)
        field = renderer.desmoplasia[yy // FIELD_SCALE, xx // FIELD_SCALE] * (1 if stroma else -1)
        best = np.argmin(np.where(inside, field, np.inf))
        assert inside.flat[best] and field.flat[best] < 0
        return float(xx.flat[best]), float(yy.flat[best])

    high = next(p for p in plans.values() if p.grade == "high" and "macro" in p.tumor_sizes)
    low = next(p for p in plans.values() if p.grade == "low" and "macro" in p.tumor_sizes)
    normal = next(p for p in plans.values() if p.label == "normal" and {"lymphoid", "hyperchromatic"} <= set(p.mimic_kinds))
    folded = next(p for p in plans.values() if any(a.kind == "fold" for a in p.artefacts) and p.label == "normal")
    fold = next(a for a in folded.artefacts if a.kind == "fold")
    desmo = max((p for p in plans.values() if "macro" in p.tumor_sizes), key=lambda p: p.stroma_share)
    crushed = next(p for p in plans.values() if "crushed" in p.mimic_kinds)
    panels = []
    for title, plan, (cx, cy), region in [
        (f"tumour, high grade ({high.name})", high, tumour_subject(high, False), max(high.tumors, key=lambda t: t.area)),
        (f"tumour, low grade ({low.name})", low, tumour_subject(low, False), max(low.tumors, key=lambda t: t.area)),
        (f"tumour in desmoplastic stroma ({desmo.name})", desmo, tumour_subject(desmo, True), max(desmo.tumors, key=lambda t: t.area)),
        ("mimic: lymphoid aggregate", normal, subject(normal, normal.mimics[normal.mimic_kinds.index("lymphoid")]), None),
        ("mimic: hyperchromatic benign", normal, subject(normal, normal.mimics[normal.mimic_kinds.index("hyperchromatic")]), None),
        (f"mimic: crushed cells ({crushed.name})", crushed, subject(crushed, crushed.mimics[crushed.mimic_kinds.index("crushed")]), None),
        (f"artefact: tissue fold ({folded.name})", folded, fold.points[len(fold.points) // 2], None),
    ]:
        image, (x0, y0) = crop(plan, cx, cy)
        if region is not None:  # the crop's centre is tumour
            assert region.contains(shapely.Point(x0 + side / 2, y0 + side / 2)) or region.intersects(shapely.box(x0, y0, x0 + side, y0 + side))
        panels.append((title + " - synthetic", image))
    real = skdata.immunohistochemistry()[:side, :side]
    panels.append(("real: scikit-image immunohistochemistry() crop", real))
    label = 26
    sheet = Image.new("RGB", (4 * side + 5 * 8, 2 * (side + label) + 3 * 8), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (title, image) in enumerate(panels):
        x, y = 8 + (i % 4) * (side + 8), 8 + (i // 4) * (side + label + 8)
        draw.text((x, y + 6), title, fill="black")
        sheet.paste(Image.fromarray(np.ascontiguousarray(image)), (x, y + label))
    ARTIFACTS.mkdir(exist_ok=True)
    sheet.save(ARTIFACTS / "demo-tissue.png")
    # Synthetic crops are H&E-like (pink and purple, red channel never dominated by green).
    for title, image in panels[:5]:
        assert image.mean() < 235, title  # tissue, not glass


def test_overlapping_nuclei_are_not_cut_by_each_other():
    """Two nuclei of one sprite stamped in one call: each keeps its whole outline (the darker
    wins where they overlap); the sprite's empty square never cuts a neighbour."""
    from core.demo import SlideRenderer, _nucleus

    sprite = _nucleus(np.random.default_rng(0), "tumor")
    together = np.zeros((80, 80), dtype=np.float32)
    SlideRenderer._stamp(together, sprite, np.array([40, 44]), np.array([34, 46]))
    apart = [np.zeros((80, 80), dtype=np.float32) for _ in range(2)]
    SlideRenderer._stamp(apart[0], sprite, np.array([40]), np.array([34]))
    SlideRenderer._stamp(apart[1], sprite, np.array([44]), np.array([46]))
    np.testing.assert_array_equal(together, np.maximum(*apart))
