"""Camelyon16 mode equals the official evaluation, number for number: hand cases and a randomised
property test against our literal port of the script (tests/camelyon16_port.py)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
from shapely import affinity
from shapely.geometry import Point, box

from core.evaluation import evaluate_cohort
from core.evaluation.camelyon16 import CAMELYON16_MPP, evaluation_mask, itc_labels
from tests import camelyon16_port as port

UM = 1 / CAMELYON16_MPP  # level-0 pixels per micron at the official resolution
DIMS = (20000, 16000)


def detections_as_patches(detections):
    """Patches of side 2 centred exactly on each (prob, x, y) detection (level-0 px)."""
    if not detections:
        empty = np.zeros(0, dtype=np.int64)
        return SimpleNamespace(x=empty, y=empty, width=empty, height=empty, prob=np.zeros(0))
    prob, x, y = (np.asarray(v) for v in zip(*detections))
    n = len(prob)
    return SimpleNamespace(x=x.astype(np.int64) - 1, y=y.astype(np.int64) - 1, width=np.full(n, 2), height=np.full(n, 2), prob=prob.astype(np.float64))


def evaluate_mode(slides):
    """Camelyon16 mode on ``slides`` = {name: (tumors, detections)}; every detection kept (NMS radius ~0)."""
    predictions = {name: detections_as_patches(det) for name, (_, det) in slides.items()}
    labels = {name: "tumor" if tumors else "normal" for name, (tumors, _) in slides.items()}
    tumors = {name: t for name, (t, _) in slides.items() if t}
    return evaluate_cohort(
        predictions, labels, tumors, mode="camelyon16", nms_radius_um=1e-6, dimensions={n: DIMS for n in slides}, allow_missing=True,
    )


def evaluate_port(slides):
    return port.evaluate([(t, DIMS, det) for t, det in slides.values()])


def assert_same(slides):
    """The mode's curve and score equal the port's."""
    result = evaluate_mode(slides)
    fps, sens, score = evaluate_port(slides)
    # The port's points by ascending threshold, its (0, 0) last; the mode's by descending threshold.
    np.testing.assert_array_equal(result.froc.avg_fp[::-1], fps[:-1])
    np.testing.assert_array_equal(result.froc.sensitivity[::-1], sens[:-1])
    if np.isnan(score):  # no tumor to detect: the script divides by 0, we say why
        assert result.froc_score is None and "no tumors" in result.froc.score_reason
    else:
        assert result.froc_score == pytest.approx(score, abs=1e-12)
    return result, score


def test_near_tumors_merge_as_on_the_official_raster():
    """Tumors 60 um apart merge, 90 um apart do not; between, the level-5 pixels (7.78 um) decide, as officially."""
    left = box(4000, 4000, 4000 + 400 * UM, 4000 + 400 * UM)
    merged = {}
    for gap_um in range(60, 92, 2):
        right = affinity.translate(left, (400 + gap_um) * UM, 0)
        labels, _ = evaluation_mask([left, right], CAMELYON16_MPP, DIMS)
        merged[gap_um] = labels.max() == 1
        result, _ = assert_same({"t": ([left, right], [(0.9, int(left.centroid.x), int(left.centroid.y))])})
        assert result.froc.n_tumors == labels.max()
    assert merged[60] and not merged[90]
    assert list(merged.values()) == sorted(merged.values(), reverse=True)  # one cut between
    print("merged up to", max(g for g, m in merged.items() if m), "um apart")


def test_isolated_tumor_cells_at_the_275_um_boundary():
    """A region is an ITC when its major axis after dilation is below 275 um: ~200 um of tumor."""
    sizes = {}
    for side_um in (150, 190, 200, 210, 260):
        square = box(6000, 6000, 6000 + side_um * UM, 6000 + side_um * UM)
        labels, _ = evaluation_mask([square], CAMELYON16_MPP, DIMS)
        sizes[side_um] = itc_labels(labels, CAMELYON16_MPP).size == 1
        assert_same({"t": ([square], [(0.8, int(square.centroid.x), int(square.centroid.y))]), "n": ([], [(0.5, 100, 100)])})
    assert sizes[150] and not sizes[260]  # small: ITC; large: a tumor
    assert list(sizes.values()) == sorted(sizes.values(), reverse=True)  # one cut, monotone


def test_a_detection_is_looked_up_at_its_level5_pixel():
    """mask[int(y / 32), int(x / 32)]: a detection 1 px left of a region's first column is outside."""
    tumor = box(6400, 6400, 9600, 9600)
    labels, (i0, j0) = evaluation_mask([tumor], CAMELYON16_MPP, DIMS)
    rows, cols = np.nonzero(labels)
    first_col = cols.min() + j0  # level-5 column of the region's left edge (dilated)
    row = int(np.median(rows)) + i0
    inside = (0.7, first_col * 32, row * 32)
    outside = (0.6, first_col * 32 - 1, row * 32)
    result, _ = assert_same({"t": ([tumor], [inside, outside])})
    assert result.camelyon.n_fp_detections == 1 and result.froc.tumor_scores.tolist() == [pytest.approx(0.7)]


def test_the_lowest_threshold_is_dropped():
    """Every tumor hit, no ITC, no zero: the smallest probability is not a threshold (the script's [1:])."""
    tumor = box(6000, 6000, 9000, 9000)
    slides = {"t": ([tumor], [(0.3, 7500, 7500)]), "n": ([], [(0.5, 100, 100)])}
    result, score = assert_same(slides)
    # Thresholds {0.3, 0.5}[1:] = [0.5]: sensitivity 0 there; the tumor at 0.3 is never counted.
    assert result.froc.thresholds.tolist() == [0.5] and score == 0.0
    assert result.froc.sensitivity.tolist() == [0.0] and result.froc.avg_fp.tolist() == [0.5]


def test_a_probability_0_hit_never_counts():
    tumor = box(6000, 6000, 9000, 9000)
    result, score = assert_same({"t": ([tumor], [(0.0, 7500, 7500), (0.4, 100, 100)])})
    assert score == 0.0 and result.froc.at_threshold(0.0).n_detected == 0


def test_ties_between_a_tp_and_an_fp_behave_as_in_float32():
    """A TP of 0.1 is stored as float32 (0.10000000149); an FP of 0.1000000001 lies between the two."""
    tumor = box(6000, 6000, 9000, 9000)
    slides = {"t": ([tumor], [(0.1, 7500, 7500), (0.1000000001, 100, 100), (0.05, 200, 200)])}
    result, score = assert_same(slides)
    # Thresholds: {0.05, 0.1000000001, float32(0.1)}[1:]: at float32(0.1) the TP counts, the FP does not.
    assert result.froc.thresholds[0] == pytest.approx(float(np.float32(0.1)))
    assert result.froc.sensitivity[0] == 1.0 and result.froc.avg_fp[0] == 0.0
    assert score == 1.0


def test_an_unannotated_tumor_slide_counts_as_a_normal_slide():
    tumor = box(6000, 6000, 9000, 9000)
    slides = {"t": ([tumor], [(0.9, 7500, 7500)]), "u": ([], [(0.8, 100, 100), (0.2, 300, 300)])}
    predictions = {name: detections_as_patches(det) for name, (_, det) in slides.items()}
    with pytest.warns(UserWarning, match="no tumor annotations"):
        result = evaluate_cohort(
            predictions, {"t": "tumor", "u": "tumor"}, {"t": [tumor]}, mode="camelyon16", nms_radius_um=1e-6, dimensions={"t": DIMS, "u": DIMS},
        )
    _, _, score = port.evaluate([([tumor], DIMS, slides["t"][1]), ([], DIMS, slides["u"][1])])
    assert result.froc.n_fp_slides == 2 and result.camelyon.n_fp_detections == 2
    assert result.froc_score == pytest.approx(score)


def random_case(rng: np.random.Generator):
    """A random cohort: tumor slides with random blobs (some near each other, some ITC-sized), normal slides, detections."""
    slides = {}
    for s in range(int(rng.integers(2, 7))):
        tumors = []
        if rng.random() < 0.6:
            for _ in range(int(rng.integers(1, 5))):
                cx, cy = rng.uniform(2000, DIMS[0] - 2000), rng.uniform(2000, DIMS[1] - 2000)
                r = rng.uniform(40, 900) * UM / 2
                shape = affinity.scale(Point(cx, cy).buffer(r, quad_segs=8), rng.uniform(0.4, 1.6), 1.0)
                tumors.append(affinity.rotate(shape, rng.uniform(0, 180)))
            if rng.random() < 0.3:  # a hole (an exclusion) in the first tumor
                t = tumors[0]
                tumors[0] = t.difference(t.centroid.buffer(t.bounds[2] - t.bounds[0] > 0 and (t.bounds[2] - t.bounds[0]) / 6))
        n = int(rng.integers(0, 60))
        xs = rng.integers(0, DIMS[0], n)
        ys = rng.integers(0, DIMS[1], n)
        if tumors:  # many detections near the tumors, some on their edges
            near = rng.integers(0, n + 1)
            for k in range(near):
                t = tumors[int(rng.integers(len(tumors)))]
                minx, miny, maxx, maxy = t.bounds
                xs[k], ys[k] = rng.integers(int(minx) - 300, int(maxx) + 300), rng.integers(int(miny) - 300, int(maxy) + 300)
        probs = np.round(rng.random(n), int(rng.integers(1, 4)))  # rounding: ties, and exact zeros
        if rng.random() < 0.3:
            probs = probs.astype(np.float32).astype(np.float64) + rng.choice([0, 1e-9, -1e-9], n)  # near float32 ties
        probs = np.clip(probs, 0, 1)
        seen, det = set(), []
        for p, x, y in zip(probs.tolist(), xs.tolist(), ys.tolist()):
            if (x, y) not in seen:
                seen.add((x, y))
                det.append((p, max(x, 1), max(y, 1)))
        slides[f"s{s}"] = (tumors, det)
    return slides


def test_random_cases_equal_the_official_port():
    rng = np.random.default_rng(16)
    compared = 0
    scores = []
    for _ in range(60):
        slides = random_case(rng)
        if not any(t for t, _ in slides.values()) or not any(d for _, d in slides.values()):
            continue
        result = evaluate_mode(slides)
        if result.froc.n_tumors == 0:
            continue
        _, score = assert_same(slides)
        scores.append((result.froc_score, score))
        compared += 1
    assert compared >= 30
    print(f"{compared} random cohorts, mode vs port (first 8):", [(round(a, 4), round(b, 4)) for a, b in scores[:8]])


def test_time_for_100_slides():
    """Camelyon16 mode on 100 slides (40 with tumors, 200 detections each): printed, not asserted."""
    rng = np.random.default_rng(1)
    slides = {}
    for s in range(100):
        tumors = [Point(rng.uniform(3000, 17000), rng.uniform(3000, 13000)).buffer(rng.uniform(200, 3000)) for _ in range(3)] if s < 40 else []
        det = [(float(p), int(x), int(y)) for p, x, y in zip(rng.random(200), rng.integers(1, DIMS[0], 200), rng.integers(1, DIMS[1], 200))]
        slides[f"s{s:03d}"] = (tumors, list({(x, y): (p, x, y) for p, x, y in det}.values()))
    started = time.perf_counter()
    result = evaluate_mode(slides)
    seconds = time.perf_counter() - started
    print(f"Camelyon16 mode, 100 slides, {sum(len(d) for _, d in slides.values())} detections: {seconds:.2f} s; score {result.froc_score:.4f}")
    assert result.froc.n_fp_slides == 100
