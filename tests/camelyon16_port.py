"""Our port of the Camelyon16 organisers' ``Evaluation_FROC.py`` semantics, loop for loop, for tests.

Written from the script's documented behaviour (baidu-research/NCRF ``wsi/bin/Evaluation_FROC.py``),
without its file handling: the level-5 mask is built from polygons by the top-left-pixel rule
(what ASAP's AnnotationToMask pyramid gives), over the whole slide, with no window. It keeps
the script's types (a Python list of floats for FPs, a float32 array for TPs, a Python set of
both) and its loops, so core's vectorised :class:`core.evaluation.camelyon16.Camelyon16Mode`
is checked against the slow, literal computation.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from skimage import draw, measure

LEVEL = 5
RESOLUTION = 0.243


def level5_mask(tumors, dimensions) -> np.ndarray:
    """Return the level-5 tumor mask of a slide: 255 where the level-0 point (32 j, 32 i) is in a tumor."""
    width, height = dimensions
    scale = 2**LEVEL
    mask = np.zeros((math.ceil(height / scale), math.ceil(width / scale)), dtype=np.uint8)
    polygons = [g for t in tumors for g in getattr(t, "geoms", [t])]
    for polygon in polygons:
        xs, ys = np.asarray(polygon.exterior.coords).T
        mask[draw.polygon(ys / scale, xs / scale, mask.shape)] = 255
    for polygon in polygons:
        for ring in polygon.interiors:
            xs, ys = np.asarray(ring.coords).T
            mask[draw.polygon(ys / scale, xs / scale, mask.shape)] = 0
    return mask


def compute_evaluation_mask(mask: np.ndarray, resolution: float = RESOLUTION) -> np.ndarray:
    """``computeEvaluationMask`` on a level-5 mask (255 = tumor)."""
    distance = ndimage.distance_transform_edt(255 - mask)
    threshold = 75 / (resolution * pow(2, LEVEL) * 2)
    binary = distance < threshold
    filled = ndimage.binary_fill_holes(binary)
    return measure.label(filled, connectivity=2)


def compute_itc_list(evaluation_mask: np.ndarray, resolution: float = RESOLUTION) -> list[int]:
    """``computeITCList``: labels whose major axis is below 275 um."""
    max_label = np.amax(evaluation_mask)
    properties = measure.regionprops(evaluation_mask)
    threshold = 275 / (resolution * pow(2, LEVEL))
    return [i + 1 for i in range(0, max_label) if properties[i].axis_major_length < threshold]


def compute_fp_tp_probs(ys, xs, probs, is_tumor, evaluation_mask, itc):
    """``compute_FP_TP_Probs``: FP probabilities (a list), TP probabilities (float32 per label), tumor count."""
    max_label = np.amax(evaluation_mask) if is_tumor else 0
    fp_probs = []
    tp_probs = np.zeros((max_label,), dtype=np.float32)
    if is_tumor:
        for i in range(len(xs)):
            hit = evaluation_mask[int(ys[i] / pow(2, LEVEL)), int(xs[i] / pow(2, LEVEL))]
            if hit == 0:
                fp_probs.append(probs[i])
            elif hit not in itc:
                if probs[i] > tp_probs[hit - 1]:
                    tp_probs[hit - 1] = probs[i]
    else:
        fp_probs = list(probs)
    return fp_probs, tp_probs, max_label - len(itc)


def compute_froc(fps_per_file, tps_per_file, n_tumors_per_file):
    """``computeFROC``: (average FPs, sensitivity) per threshold, the (0, 0) point last."""
    unlisted_fps = [item for sublist in fps_per_file for item in sublist]
    unlisted_tps = [item for sublist in tps_per_file for item in sublist]
    total_fps, total_tps = [], []
    # The script sorts Python floats and NumPy float32 scalars together. Under the NumPy of its
    # time (1.x) such a comparison is made in float64; NumPy 2 makes it in float32, which puts a
    # float32 TP and a Python-float FP that round to the same float32 in an arbitrary order.
    # key=float keeps the script's own (float64) order.
    all_probs = sorted(set(unlisted_fps + unlisted_tps), key=float)
    for threshold in all_probs[1:]:
        total_fps.append((np.asarray(unlisted_fps) >= threshold).sum())
        total_tps.append((np.asarray(unlisted_tps) >= threshold).sum())
    total_fps.append(0)
    total_tps.append(0)
    total_fps = np.asarray(total_fps) / float(len(fps_per_file))
    with np.errstate(invalid="ignore", divide="ignore"):  # no tumors: NaN, as the script gives
        sensitivity = np.asarray(total_tps) / float(sum(n_tumors_per_file))
    return total_fps, sensitivity


def froc_score(total_fps, sensitivity) -> float:
    """The mean sensitivity at 1/4 .. 8 average FPs, by ``np.interp`` as the script."""
    return float(np.mean(np.interp([0.25, 0.5, 1, 2, 4, 8], total_fps[::-1], sensitivity[::-1])))


def evaluate(slides, resolution: float = RESOLUTION):
    """Return (total_fps, sensitivity, score) of ``slides``: a list of (tumors, dimensions, detections).

    ``detections`` is a list of (prob, x, y) with whole level-0 pixels; a slide with tumors is a
    tumor slide (the script's "mask exists").
    """
    fps, tps, counts = [], [], []
    for tumors, dimensions, detections in slides:
        probs = [float(p) for p, _, _ in detections]
        xs = [int(x) for _, x, _ in detections]
        ys = [int(y) for _, _, y in detections]
        is_tumor = len(tumors) > 0
        if is_tumor:
            evaluation_mask = compute_evaluation_mask(level5_mask(tumors, dimensions), resolution)
            itc = compute_itc_list(evaluation_mask, resolution)
        else:
            evaluation_mask, itc = 0, []
        fp, tp, n = compute_fp_tp_probs(ys, xs, probs, is_tumor, evaluation_mask, itc)
        fps.append(fp)
        tps.append(tp)
        counts.append(n)
    total_fps, sensitivity = compute_froc(fps, tps, counts)
    return total_fps, sensitivity, froc_score(total_fps, sensitivity)
