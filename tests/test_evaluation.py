"""Tests of core.evaluation (metrics, modes) and core.cohort: hand-computed metrics, FROC, Camelyon16 mode, CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from shapely.geometry import Polygon, box
from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_curve, roc_auc_score, roc_curve

from core.annotations import AnnotationError, write_geojson
from core.cohort import Cohort, find_annotation_file, load_cohort_tumors, read_cohort
from core.errors import CohortError
from core.evaluation.camelyon16 import evaluation_regions, major_axis_length, nms_detections
from core.evaluation import (
    FROC_TARGETS,
    EvaluationError,
    EvaluationWarning,
    evaluate_cohort,
    evaluate_patches,
    evaluate_slides,
    froc_curve,
    froc_score,
    read_predictions_csv,
)

ROOT = Path(__file__).resolve().parents[1]


def patches(xs, probs, *, y=0, side=100):
    """Predictions of a row of square patches (level-0 px), one per x."""
    n = len(xs)
    return SimpleNamespace(
        x=np.asarray(xs, dtype=np.int64), y=np.full(n, y, dtype=np.int64),
        width=np.full(n, side, dtype=np.int64), height=np.full(n, side, dtype=np.int64),
        prob=np.asarray(probs, dtype=np.float64),
    )


def no_patches():
    return patches([], [])


# --------------------------------------------------------------------------- the hand-made cohort
# Patches 100 x 100 at x = 0, 100, 200, ...; inner square (fraction 0.5) of the patch at x is
# [x + 25, x + 75] x [25, 75].
#   tumor a: inside the inner square of patch x=100                 -> hit by it only
#   tumor b: its left edge x=275 touches the inner square of x=200   -> hit (edge counts)
#   tumor c: x 380..395, inside patch x=300 but not its inner square -> never hit
TUMORS_T1 = [box(130, 30, 170, 70), box(275, 40, 290, 60), box(380, 40, 395, 60)]


def hand_cohort():
    predictions = {
        "T1": patches([0, 100, 200, 300, 400], [0.2, 0.7, 0.4, 0.9, 0.1]),
        "N1": patches([0, 100, 200], [0.8, 0.4, 0.3]),
        "N2": patches([0, 100], [0.5, 0.3]),
        "N3": no_patches(),  # no tissue
    }
    cohort = {"T1": "tumor", "N1": "normal", "N2": "normal", "N3": "normal"}
    return predictions, cohort, {"T1": TUMORS_T1}


def test_hand_cohort_froc_points_and_score():
    # Tumor scores: a 0.7, b 0.4, c never hit. False positives (3 normal slides, one empty):
    # 0.8 0.5 0.4 0.3 0.3. T1's 0.9, 0.2, 0.1 are neither (patch mode).
    result = evaluate_cohort(*hand_cohort())
    froc = result.froc
    assert froc.n_tumors == 3 and froc.n_fp_slides == 3
    np.testing.assert_allclose(froc.thresholds, [0.8, 0.7, 0.5, 0.4, 0.3])
    np.testing.assert_allclose(froc.sensitivity, [0, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(froc.avg_fp, [1 / 3, 1 / 3, 2 / 3, 1, 5 / 3])
    # Interpolation over (0,0) (1/3,0) (1/3,1/3) (2/3,1/3) (1,2/3) (5/3,2/3):
    # 0.25 -> 0; 0.5 -> 1/3; 1 -> 2/3; 2, 4, 8 -> 2/3 (held beyond the end). Mean 0.5.
    np.testing.assert_allclose(froc.target_sensitivity, [0, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert result.froc_score == pytest.approx(0.5)
    point = result.at_threshold(0.4).froc
    assert (point.n_detected, point.n_fp, point.sensitivity, point.avg_fp) == (2, 3, pytest.approx(2 / 3), pytest.approx(1.0))
    assert result.froc.tumor_slides == ("T1", "T1", "T1")
    assert result.froc.tumor_scores.tolist() == [0.7, 0.4, -np.inf]


def test_inner_square_edge_hits_and_the_prefilter_agrees_with_tiling():
    from core.evaluation import patch_tumor_hits
    from core.tiling import inner_square_hits

    p = patches([0, 100, 200, 300, 400], [0] * 5)
    hit_patch, hit_tumor = patch_tumor_hits(p.x, p.y, p.width, p.height, TUMORS_T1)
    # a by x=100; b only by the edge of x=200's inner square (x = 275); c by nothing.
    assert sorted(zip(hit_patch.tolist(), hit_tumor.tolist())) == [(1, 0), (2, 1)]
    # The bounding-box prefilter changes nothing: same pairs as core.tiling on random data.
    rng = np.random.default_rng(5)
    n = 4000
    x, y = rng.integers(0, 5000, n), rng.integers(0, 5000, n)
    w = rng.integers(50, 300, n)
    tumors = [box(100, 100, 900, 400), box(2500, 2500, 2510, 2510), Polygon([(3000, 0), (4000, 1000), (3000, 1000)])]
    for fraction in (0.5, 0.25, 1.0):
        ours = sorted(zip(*(a.tolist() for a in patch_tumor_hits(x, y, w, w, tumors, fraction))))
        reference = sorted(zip(*(a.tolist() for a in inner_square_hits(x, y, w, w, tumors, fraction))))
        assert ours == reference and len(ours) > 0


def test_hand_cohort_patch_and_slide_levels():
    result = evaluate_cohort(*hand_cohort())
    # Patch labels: only T1's x=100 and x=200 (inner square); the patch over tumor c is negative.
    # Positives 0.7, 0.4 vs negatives 0.2 0.9 0.1 0.8 0.4 0.3 0.5 0.3: (6 + 4 + 0.5 tie) / 16.
    assert (result.patch.n_pos, result.patch.n_neg) == (2, 8)
    assert result.patch_auc == pytest.approx(10.5 / 16)
    cm = result.at_threshold(0.4).patch
    assert cm.confusion_matrix == [[4, 4], [0, 2]]  # negatives >= 0.4: 0.9, 0.8, 0.5, 0.4
    # Slides: T1 0.9, N1 0.8, N2 0.5, N3 no tissue -> 0.
    np.testing.assert_allclose(result.slide.scores, [0.9, 0.8, 0.5, 0.0])
    assert result.slide_auc == 1.0
    s = result.at_threshold(0.5).slide
    assert (s.tp, s.fp, s.tn, s.fn) == (1, 2, 1, 0)
    assert (s.accuracy, s.sensitivity, s.specificity) == (0.5, 1.0, pytest.approx(1 / 3))
    s0 = result.at_threshold(0.0).slide  # a slide without patches is never positive
    assert (s0.tp, s0.fp, s0.tn) == (1, 2, 1)
    table = {row["slide"]: row for row in result.slide_table(0.5)}
    assert table["T1"]["n_tumors"] == 3 and table["T1"]["n_detected"] == 1
    assert table["N3"]["n_patches"] == 0 and table["N3"]["predicted"] == "normal"


def test_patch_metrics_with_ties_by_hand_and_sklearn():
    prob = [0.9, 0.8, 0.8, 0.3, 0.3, 0.1]
    label = [1, 1, 0, 1, 0, 0]
    e = evaluate_patches(prob, label)
    # AUC: 0.9 beats 3; 0.8 ties one, beats 2 (2.5); 0.3 ties one, beats 1 (1.5) -> 7/9.
    assert e.auc == pytest.approx(7 / 9)
    # AP: recall steps 1/3 at precisions 1, 2/3, 3/5 -> 34/45.
    assert e.average_precision == pytest.approx(34 / 45)
    assert e.auc == pytest.approx(roc_auc_score(label, prob))
    assert e.average_precision == pytest.approx(average_precision_score(label, prob))
    c = e.at_threshold(0.8)
    assert (c.tn, c.fp, c.fn, c.tp) == (2, 1, 1, 2)
    assert c.precision == pytest.approx(2 / 3)


def test_patch_curves_match_sklearn_on_random_data():
    rng = np.random.default_rng(7)
    prob = np.round(rng.random(3000), 2)  # many ties
    label = rng.random(3000) < 0.2 + 0.5 * prob
    e = evaluate_patches(prob, label)
    assert e.auc == pytest.approx(roc_auc_score(label, prob), abs=1e-12)
    assert e.average_precision == pytest.approx(average_precision_score(label, prob), abs=1e-12)
    for ours, theirs in zip(e.roc_curve(), roc_curve(label, prob)):
        np.testing.assert_allclose(ours, theirs)
    precision, recall, thr = precision_recall_curve(label, prob)
    ours = e.pr_curve()
    np.testing.assert_allclose(ours[0], precision[:-1][::-1])
    np.testing.assert_allclose(ours[1], recall[:-1][::-1])
    np.testing.assert_allclose(ours[2], thr[::-1])
    for t in [0.0, 0.005, 0.3, 0.5, 0.505, 0.99, 1.0]:
        c = e.at_threshold(t)
        assert c.confusion_matrix == confusion_matrix(label, prob >= t, labels=[False, True]).tolist()


def test_slide_auc_with_tied_scores_and_no_tissue():
    e = evaluate_slides(["A", "B", "C", "D"], [True, True, False, False], [0.9, 0.6, 0.6, 0.0], [3, 3, 3, 0])
    # pairs: 0.9 beats both; 0.6 ties 0.6 (0.5) and beats 0 -> 3.5 / 4
    assert e.auc == pytest.approx(3.5 / 4)
    c = e.at_threshold(0.6)
    assert (c.tp, c.fp, c.tn, c.fn) == (2, 1, 1, 0)


def test_froc_score_interpolation_by_hand():
    # Curve by descending threshold.
    score, at = froc_score([0.5, 1, 3, 6], [0.2, 0.4, 0.6, 0.9])
    # 0.25: halfway from the (0, 0) anchor to (0.5, 0.2) -> 0.1; 0.5 -> 0.2; 1 -> 0.4;
    # 2: halfway 1..3 -> 0.5; 4: a third of 3..6 -> 0.7; 8: beyond the end -> 0.9.
    np.testing.assert_allclose(at, [0.1, 0.2, 0.4, 0.5, 0.7, 0.9])
    assert score == pytest.approx(2.8 / 6)
    # The curve only starts at AvgFP 2: linear from (0, 0) up to it.
    _, at = froc_score([2.0, 4.0], [0.5, 1.0])
    np.testing.assert_allclose(at, [0.0625, 0.125, 0.25, 0.5, 1.0, 1.0])
    # Same AvgFP at several points: the highest sensitivity counts there.
    _, at = froc_score([0, 0, 1, 1], [0.1, 0.3, 0.5, 0.7], targets=[0, 1])
    np.testing.assert_allclose(at, [0.3, 0.7])


def test_froc_curve_matches_a_naive_pass_per_threshold():
    rng = np.random.default_rng(3)
    tumor = np.round(rng.random(40), 2)
    tumor[:5] = -np.inf  # never hit
    fp = np.round(rng.random(500) ** 3, 3)
    curve = froc_curve(tumor, fp, n_fp_slides=7)
    expected_thr = np.unique(np.r_[tumor[np.isfinite(tumor)], fp])[::-1]
    np.testing.assert_array_equal(curve.thresholds, expected_thr)
    for t, sens, avg in zip(curve.thresholds, curve.sensitivity, curve.avg_fp):
        assert sens == np.count_nonzero(tumor >= t) / 40
        assert avg == np.count_nonzero(fp >= t) / 7
    for t in [0.0, 0.123, 0.5, 1.0]:
        p = curve.at_threshold(t)
        assert p.sensitivity == np.count_nonzero(tumor >= t) / 40
        assert p.avg_fp == np.count_nonzero(fp >= t) / 7


def test_all_normal_and_all_tumor_cohorts_give_reasons_not_crashes():
    preds = {"N1": patches([0, 100], [0.2, 0.6]), "N2": patches([0], [0.1])}
    result = evaluate_cohort(preds, {"N1": "normal", "N2": "normal"}, {})
    assert result.slide_auc is None and "all 2 slides are normal" in result.slide.auc_reason
    assert result.patch_auc is None and "none of the 3 patches" in result.patch.auc_reason
    assert result.froc_score is None and "no tumors" in result.froc.score_reason
    data = result.to_dict(0.5)
    json.dumps(data, allow_nan=False)  # no NaN anywhere
    assert data["froc"][0]["sensitivity"] is None and data["at_threshold"]["slide"]["sensitivity"] is None

    preds = {"T1": patches([0, 100, 200], [0.9, 0.2, 0.1])}
    result = evaluate_cohort(preds, {"T1": "tumor"}, {"T1": [box(130, 30, 170, 70)]})
    assert result.slide_auc is None and "all 1 slides are tumor" in result.slide.auc_reason
    assert result.patch_auc == 0.5  # the tumor patch (0.2) ranks between the others
    assert result.froc_score is None and "normal slides" in result.froc.score_reason
    assert result.at_threshold(0.15).froc.sensitivity == 1.0
    json.dumps(result.to_dict(0.5), allow_nan=False)


def test_missing_and_extra_slides():
    preds, cohort, tumors = hand_cohort()
    del preds["N2"]
    with pytest.raises(EvaluationError, match=r"1 cohort slide\(s\) have no predictions: 'N2'"):
        evaluate_cohort(preds, cohort, tumors)
    preds["X9"] = patches([0], [0.99])
    preds["X8"] = patches([0], [0.99])
    with pytest.warns(EvaluationWarning) as record:
        result = evaluate_cohort(preds, cohort, tumors, allow_missing=True)
    messages = [str(w.message) for w in record]
    assert any("ignored the predictions of 2 slide(s) not in the cohort" in m for m in messages)
    assert any("'N2'" in m and "without tissue" in m for m in messages)
    assert len(result.warnings) == 2
    assert result.slide.scores[result.slide.slides.index("N2")] == 0.0
    assert result.froc.n_fp_slides == 3  # N2 still a normal slide in the AvgFP


def test_tumor_slide_without_tissue_misses_its_tumors():
    preds = {"T1": no_patches(), "N1": patches([0], [0.3])}
    result = evaluate_cohort(preds, {"T1": "tumor", "N1": "normal"}, {"T1": [box(0, 0, 50, 50)]})
    assert result.slide.scores.tolist() == [0.0, 0.3]
    assert result.n_tumors == 1 and result.froc.sensitivity.tolist() == [0.0]
    assert result.froc_score == 0.0


def test_bad_inputs_are_errors():
    preds, cohort, tumors = hand_cohort()
    with pytest.raises(EvaluationError, match="'N1' is 'normal' in the cohort but its annotations hold 1 tumor"):
        evaluate_cohort(preds, cohort, {**tumors, "N1": [box(0, 0, 10, 10)]})
    bad = dict(preds, N1=patches([0], [np.nan]))
    with pytest.raises(EvaluationError, match="'N1': probabilities must be in"):
        evaluate_cohort(bad, cohort, tumors)
    with pytest.raises(EvaluationError, match="unknown evaluation mode"):
        evaluate_cohort(preds, cohort, tumors, mode="lesion")
    with pytest.raises(CohortError, match="'T1': label must be tumor"):
        evaluate_cohort(preds, {"T1": "maybe"}, tumors)
    with pytest.raises(EvaluationError, match="needs the microns per pixel.*'T1'"):
        evaluate_cohort(preds, cohort, tumors, mode="camelyon16-polygons")


def test_tumor_slide_without_annotations_warns_and_leaves_patch_level():
    preds, cohort, tumors = hand_cohort()
    with pytest.warns(EvaluationWarning, match="1 tumor slide\\(s\\) have no tumor annotations.*'T1'"):
        result = evaluate_cohort(preds, cohort, {})
    assert result.slide_auc == 1.0  # still at slide level
    assert result.patch.n == 5 and "T1" not in result.patch_slides


# --------------------------------------------------------------------------- Camelyon16 mode
MPP = 0.5  # um per px: the dilation moves outlines by 37.5 um = 75 px; ITC below 275 um = 550 px
A = box(1000, 1000, 1600, 1600)  # 300 um square
B = box(1700, 1000, 2300, 1600)  # 50 um (100 px) from A: the dilation merges them
C = box(4000, 4000, 4100, 4100)  # 50 um square: dilated major axis ~144 um -> ITC
D = box(6000, 1000, 6600, 1600)  # 300 um square, far from the others


def centred(points, probs, side=200):
    """Patches of ``side`` px centred on the given (x, y) points."""
    xy = np.asarray(points, dtype=np.int64)
    return SimpleNamespace(
        x=xy[:, 0] - side // 2, y=xy[:, 1] - side // 2,
        width=np.full(len(xy), side), height=np.full(len(xy), side), prob=np.asarray(probs, dtype=np.float64),
    )


def test_evaluation_regions_merge_and_itc():
    regions = evaluation_regions([A, B, C, D], MPP)
    assert len(regions) == 3
    # Ordered by (miny, minx): AB (one region holding both squares and the gap), D, then C (ITC).
    assert regions.is_itc.tolist() == [False, False, True]
    assert regions.regions[0].contains(A) and regions.regions[0].contains(B)
    assert regions.locate([1650, 6650, 4050, 8000], [1300, 1300, 4050, 8000]).tolist() == [0, 1, 2, -1]
    # 100 um apart (more than 75 um): not merged.
    assert len(evaluation_regions([A, box(1800, 1000, 2400, 1600)], MPP)) == 2
    # C dilated: a 250 px square would give 4 * 250 / sqrt(12) px ~ 144 um; its rounded corners less.
    assert 130 < regions.major_axis_um[2] < 144 and regions.n_tumors == 2


def test_evaluation_regions_8_connectivity():
    # Without dilation, two squares that touch at one corner are one region (8-connectivity).
    regions = evaluation_regions([box(0, 0, 1000, 1000), box(1000, 1000, 2000, 2000)], MPP, dilation_um=0)
    assert len(regions) == 1 and regions.regions[0].geom_type == "MultiPolygon"


def test_evaluation_regions_agree_with_the_official_raster_method():
    from scipy import ndimage
    from skimage import draw, measure

    level_scale = 8  # evaluate the raster at 1/8 of level 0, as the official script uses a low level
    mask = np.zeros((8000 // level_scale, 8000 // level_scale), dtype=np.uint8)
    for tumor in (A, B, C, D):
        xs, ys = np.asarray(tumor.exterior.coords).T / level_scale
        rr, cc = draw.polygon(ys, xs, mask.shape)
        mask[rr, cc] = 255
    # computeEvaluationMask and computeITCList, resolution = mpp * level_scale.
    resolution = MPP * level_scale
    distance = ndimage.distance_transform_edt(255 - mask)
    labelled = measure.label(ndimage.binary_fill_holes(distance < 75 / (resolution * 2)), connectivity=2)
    official_axes = [p.axis_major_length * resolution for p in measure.regionprops(labelled)]
    regions = evaluation_regions([A, B, C, D], MPP)
    assert labelled.max() == len(regions) == 3
    np.testing.assert_allclose(sorted(official_axes), sorted(regions.major_axis_um), rtol=0.06)
    assert sorted(a < 275 for a in official_axes) == sorted(regions.is_itc.tolist())


def test_major_axis_length_matches_skimage():
    from skimage import draw, measure

    ellipse = Polygon([(300 + 200 * np.cos(a), 300 + 60 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 400, endpoint=False)])
    from shapely import affinity

    ellipse = affinity.rotate(ellipse, 30, origin=(300, 300))
    image = np.zeros((600, 600), dtype=np.uint8)
    xs, ys = np.asarray(ellipse.exterior.coords).T
    image[draw.polygon(ys, xs, image.shape)] = 1
    expected = measure.regionprops(image)[0].axis_major_length
    assert major_axis_length(ellipse) == pytest.approx(400, rel=1e-3)  # the ellipse's major axis
    assert major_axis_length(ellipse) == pytest.approx(expected, rel=5e-3)
    with_hole = box(0, 0, 100, 100).difference(box(25, 25, 75, 75))
    assert major_axis_length(with_hole) > major_axis_length(box(0, 0, 100, 100))  # mass further out


def test_nms_is_greedy_with_ties_broken_by_order():
    x = np.array([0, 10, 20, 30, 100, 105])
    p = np.array([0.5, 0.9, 0.6, 0.7, 0.3, 0.3])
    # 0.9 at x=10 removes x=0 and x=20; 0.7 at x=30 is 20 away (kept); the tie at 100/105
    # keeps the first.
    assert nms_detections(x, np.zeros(6), p, radius=12).tolist() == [1, 3, 4]
    assert nms_detections(x, np.zeros(6), p, radius=0).tolist() == [1, 3, 2, 0, 4, 5]


def test_vectorized_nms_equals_the_sequential_definition(monkeypatch):
    import core.evaluation.camelyon16 as camelyon
    from scipy.spatial import cKDTree

    def sequential(x, y, p, radius):
        points = np.column_stack([x, y])
        tree, kept = cKDTree(points), []
        suppressed = np.zeros(p.size, dtype=bool)
        for i in np.argsort(-p, kind="stable"):
            if not suppressed[i]:
                kept.append(i)
                suppressed[tree.query_ball_point(points[i], radius)] = True
        return kept

    rng = np.random.default_rng(11)
    for trial in range(12):
        n = int(rng.integers(2, 600))
        x, y = rng.integers(0, 25, n) * 10.0, rng.integers(0, 25, n) * 10.0  # duplicates and ties too
        p = np.round(rng.random(n), 1) if trial % 2 else x * 1e-3 + y * 1e-4  # noise, or a long ramp
        for rounds in (64, 2):  # 2: the sequential finish takes over
            monkeypatch.setattr(camelyon, "NMS_MAX_ROUNDS", rounds)
            assert nms_detections(x, y, p, 15.0).tolist() == sequential(x, y, p, 15.0)


def test_camelyon16_polygon_mode_hand_case():
    preds = {
        "T": centred(
            [(1300, 1300), (2000, 1300), (1300, 1450), (4050, 4050), (6650, 1300), (8000, 8000), (1650, 1300)],
            [0.9, 0.6, 0.8, 0.95, 0.3, 0.7, 0.5],
        ),
        "N": centred([(1000, 1000), (5000, 5000)], [0.4, 0.2]),
    }
    # NMS radius 100 um = 200 px: (1300, 1450) is suppressed by (1300, 1300).
    # AB (merged) scores 0.9, D 0.3 (a detection in its dilated margin, outside D itself);
    # the ITC's 0.95 is ignored; FPs 0.7 (tumor slide, outside tumors), 0.4, 0.2; AvgFP over 2 slides.
    result = evaluate_cohort(preds, {"T": "tumor", "N": "normal"}, {"T": [A, B, C, D]}, mode="camelyon16-polygons", mpp=MPP, nms_radius_um=100)
    froc = result.froc
    assert result.mode == "camelyon16-polygons" and froc.n_tumors == 2 and froc.n_fp_slides == 2
    assert result.camelyon.n_itc == 1 and result.camelyon.n_detections == 8 and result.camelyon.n_fp_detections == 3
    np.testing.assert_allclose(froc.thresholds, [0.9, 0.7, 0.4, 0.3, 0.2])
    np.testing.assert_allclose(froc.sensitivity, [0.5, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(froc.avg_fp, [0, 0.5, 1, 1, 1.5])
    # 0.25 -> 0.5; 0.5 -> 0.5; 1 -> 1 (last of the points at AvgFP 1); beyond -> 1. Mean 5/6.
    assert result.froc_score == pytest.approx(5 / 6)
    # The same data in patch mode counts four tumors (A, B, C, D) and no ITC rule.
    patch_mode = evaluate_cohort(preds, {"T": "tumor", "N": "normal"}, {"T": [A, B, C, D]})
    assert patch_mode.n_tumors == 4 and patch_mode.froc.n_fp_slides == 1
    data = result.to_dict(0.5)
    assert data["mode"] == "camelyon16-polygons" and data["camelyon16"]["n_itc"] == 1
    json.dumps(data, allow_nan=False)


# --------------------------------------------------------------------------- files
def write_csv(path: Path, rows, header=("slide", "x", "y", "width", "height", "prob")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_read_predictions_csv(tmp_path):
    path = write_csv(tmp_path / "p.csv", [("007", 100, 0, 100, 100, 0.5), ("b", 0, 0, 100, 100, 1.0), ("007", 0, 0, 100, 100, 0.25), ("007", 0, 100, 100, 100, 0)])
    preds = read_predictions_csv(path)
    assert sorted(preds) == ["007", "b"]  # names stay strings
    p = preds["007"]
    assert p.x.tolist() == [0, 100, 0] and p.y.tolist() == [0, 0, 100] and p.prob.tolist() == [0.25, 0.5, 0.0]  # by (y, x)
    with pytest.raises(EvaluationError, match="given twice"):
        read_predictions_csv(write_csv(tmp_path / "d.csv", [("a", 0, 0, 1, 1, 0.1), ("a", 0, 0, 1, 1, 0.2)]))
    with pytest.raises(EvaluationError, match="header must be"):
        read_predictions_csv(write_csv(tmp_path / "h.csv", [("a", 0, 0, 1, 1, 0.1)], header=("slide", "x", "y", "w", "h", "p")))
    with pytest.raises(EvaluationError, match=r"prob must be numbers in \[0, 1\]"):
        read_predictions_csv(write_csv(tmp_path / "r.csv", [("a", 0, 0, 1, 1, 1.5)]))
    with pytest.raises(EvaluationError, match="whole numbers"):
        read_predictions_csv(write_csv(tmp_path / "w.csv", [("a", 0.5, 0, 1, 1, 0.5)]))
    with pytest.raises(EvaluationError, match="not found"):
        read_predictions_csv(tmp_path / "absent.csv")


def test_read_cohort(tmp_path):
    (tmp_path / "c.csv").write_text("slide,label,split,mpp\ns1,Tumor,test,0.25\ns2,normal,train,\n")
    cohort = read_cohort(tmp_path / "c.csv")
    assert cohort.slides == ("s1", "s2") and cohort.labels == ("tumor", "normal") and cohort.mpp == (0.25, None)
    assert cohort.select("test").slides == ("s1",)
    (tmp_path / "bad.csv").write_text("slide,label\ns1,cancer\n")
    with pytest.raises(CohortError, match="line 2: slide 's1': label must be"):
        read_cohort(tmp_path / "bad.csv")
    (tmp_path / "dup.csv").write_text("slide,label\ns1,tumor\ns1,normal\n")
    with pytest.raises(CohortError, match="line 3: .*more than once"):
        read_cohort(tmp_path / "dup.csv")
    assert isinstance(Cohort.from_labels({"a": True, "b": "normal"}), Cohort)


def test_load_cohort_tumors(tmp_path):
    write_geojson(tmp_path / "t.geojson", [box(0, 0, 10, 10), box(100, 0, 110, 10)])
    (tmp_path / "t.xml").write_text("not xml")  # the GeoJSON wins
    (tmp_path / "e.geojson").write_text("")  # empty: no tumors
    (tmp_path / "bad.geojson").write_text("{not json")
    tumors = load_cohort_tumors(tmp_path, ["t", "e", "absent"])
    assert len(tumors["t"]) == 2 and tumors["e"] == [] and tumors["absent"] == []
    assert find_annotation_file(tmp_path, "t").name == "t.geojson"
    with pytest.raises(AnnotationError, match="bad.geojson"):
        load_cohort_tumors(tmp_path, ["bad"])
    with pytest.raises(CohortError, match="annotations folder not found"):
        load_cohort_tumors(tmp_path / "nope", ["t"])


# --------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def demo_eval(demo_cohort, tmp_path_factory):
    """The demo cohort with a predictions CSV: prob = 0.6 x inner-square label + uniform noise."""
    from core.annotations import load_tumors
    from core.slide_io import open_slide
    from core.tiling import TilingParams, label_grid, tile_grid

    rng = np.random.default_rng(0)
    rows = []
    cohort = read_cohort(demo_cohort / "cohort.csv")
    for name in cohort.slides:
        grid = tile_grid(open_slide(demo_cohort / "slides" / f"{name}.tiff"), TilingParams(patch_size=128))
        tumors = load_tumors(find_annotation_file(demo_cohort / "annotations", name))
        prob = np.clip(0.6 * label_grid(grid, tumors) + 0.5 * rng.random(len(grid)), 0, 1).round(3)
        rows += [(name, int(x), int(y), grid.size0, grid.size0, float(p)) for x, y, p in zip(grid.x, grid.y, prob)]
    out = tmp_path_factory.mktemp("eval")
    return demo_cohort, write_csv(out / "preds.csv", rows), rows, out


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "core", "evaluate", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_end_to_end_json(demo_eval):
    demo, preds, _, out = demo_eval
    report = out / "report.json"
    proc = run_cli("--predictions", preds, "--annotations", demo / "annotations", "--cohort", demo / "cohort.csv", "--threshold", "0.5", "--json", report)
    assert proc.returncode == 0, proc.stderr
    assert "slide level: AUC" in proc.stdout and "FROC: score" in proc.stdout
    data = json.loads(report.read_text())
    for key in ("slide_auc", "patch_auc", "froc_score", "n_tumors", "froc", "mode", "at_threshold"):
        assert key in data
    assert data["mode"] == "patch" and data["n_tumors"] > 0 and data["slide_auc"] == 1.0
    assert set(data["froc"][0]) == {"threshold", "sensitivity", "avg_fp"}
    thresholds = [p["threshold"] for p in data["froc"]]
    assert thresholds == sorted(set(thresholds), reverse=True)
    at = data["at_threshold"]
    assert {"tp", "fp", "tn", "fn", "accuracy", "sensitivity", "specificity"} <= set(at["slide"])
    assert np.array(at["patch"]["confusion_matrix"]).sum() == data["n_patches"]


def test_cli_in_process_camelyon16_and_store(demo_eval, capsys):
    from core.cli import main
    from core.store import ResultStore

    demo, preds_csv, rows, out = demo_eval
    common = ["--annotations", str(demo / "annotations"), "--cohort", str(demo / "cohort.csv")]
    assert main(["evaluate", "--predictions", str(preds_csv), *common, "--mode", "camelyon16-polygons", "--slides", str(demo / "slides"), "--json", str(out / "c.json")]) == 0
    data = json.loads((out / "c.json").read_text())
    assert data["mode"] == "camelyon16-polygons" and set(data["camelyon16"]["mpp"].values()) == {0.5}
    # The official mode measures at 0.243 um/px unless told, and says where a slide's own differs.
    capsys.readouterr()
    assert main(["evaluate", "--predictions", str(preds_csv), *common, "--mode", "camelyon16", "--slides", str(demo / "slides"), "--json", str(out / "o.json")]) == 0
    assert "warning: Camelyon16 mode measures in microns at 0.243 um/px, but 4 slide(s) have another resolution" in capsys.readouterr().err
    assert set(json.loads((out / "o.json").read_text())["camelyon16"]["mpp"].values()) == {0.243}
    assert main(["evaluate", "--predictions", str(preds_csv), *common, "--mode", "camelyon16", "--mpp", "0.5", "--json", str(out / "o.json")]) == 0
    assert set(json.loads((out / "o.json").read_text())["camelyon16"]["mpp"].values()) == {0.5}
    # The same predictions through the results store give the same numbers.
    by_slide = read_predictions_csv(preds_csv)
    with ResultStore(out / "results.sqlite") as store:
        store.register_model("demo-model", arch="test", metadata={})
        for name, p in by_slide.items():
            rec = store.register_slide(demo / "slides" / f"{name}.tiff", width=2048, height=2048, mpp=0.5)
            run = store.get_or_create_run(rec.id, "demo-model", {"patch_size": 128})
            store.add_predictions(run.id, p.x, p.y, p.width, p.height, p.prob)
            store.finish_run(run.id)
    capsys.readouterr()
    assert main(["evaluate", "--db", str(out / "results.sqlite"), *common, "--json", str(out / "db.json")]) == 0
    assert main(["evaluate", "--predictions", str(preds_csv), *common, "--json", str(out / "csv.json")]) == 0
    from_db, from_csv = json.loads((out / "db.json").read_text()), json.loads((out / "csv.json").read_text())
    for key in ("slide_auc", "patch_auc", "froc_score", "n_tumors", "froc", "at_threshold"):
        assert from_db[key] == from_csv[key]


def test_cli_errors_are_one_line_exit_2(demo_eval, tmp_path, capsys):
    from core.cli import main

    demo, _, rows, _ = demo_eval
    dropped = rows[0][0]
    partial = write_csv(tmp_path / "partial.csv", [r for r in rows if r[0] != dropped])
    common = ["--annotations", str(demo / "annotations"), "--cohort", str(demo / "cohort.csv")]
    capsys.readouterr()
    assert main(["evaluate", "--predictions", str(partial), *common]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: 1 cohort slide(s) have no predictions") and dropped in err
    # --allow-missing: a warning line, then the numbers.
    assert main(["evaluate", "--predictions", str(partial), *common, "--allow-missing"]) == 0
    assert "warning: 1 cohort slide(s) have no predictions" in capsys.readouterr().err
    # A bad annotation file.
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    for f in (demo / "annotations").glob("*.geojson"):
        (annotations / f.name).write_bytes(f.read_bytes())
    (annotations / f"{dropped}.geojson").write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, "x"]]]}}]}')
    full = write_csv(tmp_path / "full.csv", rows)
    assert main(["evaluate", "--predictions", str(full), "--annotations", str(annotations), "--cohort", str(demo / "cohort.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and f"{dropped}.geojson" in err
    # The polygon variant of Camelyon16 mode without any mpp source.
    assert main(["evaluate", "--predictions", str(full), *common, "--mode", "camelyon16-polygons"]) == 2
    assert "mpp" in capsys.readouterr().err


def test_evaluation_does_not_import_torch_or_streamlit():
    code = "import sys, core.evaluation, core.cohort; print(sorted(m for m in ('torch', 'streamlit') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


def test_froc_targets_are_camelyon16s():
    assert FROC_TARGETS == (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the happy path emits no warning
        evaluate_cohort(*hand_cohort())
