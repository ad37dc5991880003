"""Benchmark of core.evaluation: 100 slides x 50,000 patches (5 M rows), labels included.

Usage: ``python bench/bench_evaluation.py [--slides 100] [--patches 50000] [--csv] [--camelyon]``

Builds a synthetic cohort in memory (half tumor slides with irregular tumor polygons, a
regular grid of 256-px patches per slide, probabilities higher near tumors), then times

* ``evaluate_cohort`` (inner-square labels, slide/patch/FROC curves): the target is < 10 s;
* ``at_threshold(t)`` (what the threshold slider calls);
* baselines measured in the same run on the same data: scikit-learn alone on the patch
  labels (``roc_auc_score`` + ``average_precision_score`` + ``precision_recall_curve``),
  and a naive FROC with one pass per threshold over 200 thresholds, extrapolated to the
  curve's real number of points;
* optionally reading the same data from a predictions CSV (``--csv``) and Camelyon16 mode
  (``--camelyon``).

Timings are wall-clock on whatever else the machine is doing; run it twice.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from shapely.geometry import Polygon

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.evaluation import evaluate_cohort, patch_tumor_hits, read_predictions_csv  # noqa: E402

PATCH = 256  # level-0 px


def blob(rng, cx, cy, radius, points=64) -> Polygon:
    """An irregular star-shaped tumor outline around (cx, cy), level-0 px."""
    theta = np.linspace(0, 2 * np.pi, points, endpoint=False)
    r = radius * (1 + 0.25 * np.sin(3 * theta + rng.uniform(0, 6)) + 0.1 * rng.standard_normal(points))
    return Polygon(np.column_stack([cx + r * np.cos(theta), cy + r * np.sin(theta)]))


def make_cohort(n_slides: int, n_patches: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    cols = int(np.ceil(np.sqrt(n_patches * 1.25)))
    rows = int(np.ceil(n_patches / cols))
    gy, gx = np.divmod(np.arange(n_patches), cols)
    x = (gx * PATCH).astype(np.int64)
    y = (gy * PATCH).astype(np.int64)
    side = np.full(n_patches, PATCH, dtype=np.int64)
    width0, height0 = cols * PATCH, rows * PATCH
    predictions, labels, tumors = {}, {}, {}
    for i in range(n_slides):
        name = f"slide_{i:03d}"
        is_tumor = i % 2 == 0
        prob = rng.beta(1.2, 6.0, n_patches)  # background: mostly low
        slide_tumors = []
        if is_tumor:
            for _ in range(rng.integers(1, 7)):
                cx, cy = rng.uniform(0.1, 0.9) * width0, rng.uniform(0.1, 0.9) * height0
                radius = float(rng.choice([150, 600, 2500, 6000]))
                slide_tumors.append(blob(rng, cx, cy, radius))
                d = np.hypot(x + PATCH / 2 - cx, y + PATCH / 2 - cy)
                near = d < radius
                prob[near] = np.maximum(prob[near], rng.beta(5, 2, int(near.sum())))
        prob = prob.astype(np.float32).astype(np.float64)  # models write float32
        predictions[name] = SimpleNamespace(x=x, y=y, width=side, height=side, prob=prob)
        labels[name] = "tumor" if is_tumor else "normal"
        tumors[name] = slide_tumors
    return predictions, labels, tumors


def naive_froc(predictions, labels, tumors, thresholds, inner_fraction=0.5):
    """One pass over the data per threshold (what the sorted version avoids)."""
    hits = {s: patch_tumor_hits(p.x, p.y, p.width, p.height, tumors[s]) for s, p in predictions.items() if tumors[s]}
    n_tumors = sum(len(t) for t in tumors.values())
    normals = [s for s, lab in labels.items() if lab == "normal"]
    points = []
    for t in thresholds:
        detected = 0
        for s, (pi, ti) in hits.items():
            above = predictions[s].prob[pi] >= t
            detected += np.unique(ti[above]).size
        fp = sum(int(np.count_nonzero(predictions[s].prob >= t)) for s in normals)
        points.append((t, detected / n_tumors, fp / len(normals)))
    return points


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=100)
    parser.add_argument("--patches", type=int, default=50_000, help="patches per slide")
    parser.add_argument("--csv", action="store_true", help="also time writing and reading the predictions CSV")
    parser.add_argument("--camelyon", action="store_true", help="also time Camelyon16 mode")
    args = parser.parse_args()

    (predictions, labels, tumors), t_make = timed(make_cohort, args.slides, args.patches)
    n_rows = sum(p.prob.size for p in predictions.values())
    n_tumors = sum(len(t) for t in tumors.values())
    print(f"cohort: {args.slides} slides x {args.patches} patches = {n_rows:,} rows, {n_tumors} tumors "
          f"(built in {t_make:.1f} s; {os.cpu_count()} CPUs)")

    result, t_eval = timed(evaluate_cohort, predictions, labels, tumors)
    print(f"evaluate_cohort (labels + slide/patch/FROC curves): {t_eval:.2f} s   [target < 10 s]")
    print(f"  slide AUC {result.slide_auc:.4f}, patch AUC {result.patch_auc:.4f}, AP {result.patch.average_precision:.4f}, "
          f"FROC score {result.froc_score:.4f} over {result.n_tumors} tumors, {len(result.froc):,} FROC points, "
          f"{result.patch.n_pos:,} tumor patches")

    ts = np.linspace(0.01, 0.99, 200)
    start = time.perf_counter()
    for t in ts:
        result.at_threshold(t)
    t_at = (time.perf_counter() - start) / ts.size
    print(f"at_threshold(t): {t_at * 1e3:.3f} ms per call (mean of {ts.size})")

    # Baseline 1: scikit-learn on the labels alone (no labelling, no FROC, no slide level).
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    prob = np.concatenate([predictions[s].prob for s in result.patch_slides])
    label = np.zeros(prob.size, dtype=bool)
    offset = 0
    for s in result.patch_slides:
        p = predictions[s]
        pi, _ = patch_tumor_hits(p.x, p.y, p.width, p.height, tumors[s])
        label[offset + pi] = True
        offset += p.prob.size
    start = time.perf_counter()
    sk_auc = roc_auc_score(label, prob)
    sk_ap = average_precision_score(label, prob)
    precision_recall_curve(label, prob)
    t_sk = time.perf_counter() - start
    assert abs(sk_auc - result.patch_auc) < 1e-9 and abs(sk_ap - result.patch.average_precision) < 1e-9
    print(f"baseline, scikit-learn alone on the same labels (roc_auc_score + average_precision_score + "
          f"precision_recall_curve): {t_sk:.2f} s -> evaluate_cohort does everything in {t_eval / t_sk:.2f}x that time "
          f"(same AUC and AP)")

    # Baseline 2: naive FROC, one pass per threshold.
    thresholds = np.quantile(result.froc.thresholds, np.linspace(0, 1, 200))
    naive, t_naive = timed(naive_froc, predictions, labels, tumors, thresholds)
    for t, sens, avg in naive[::37]:
        point = result.froc.at_threshold(t)
        assert abs(point.sensitivity - sens) < 1e-12 and abs(point.avg_fp - avg) < 1e-12
    per_threshold = t_naive / len(thresholds)
    print(f"baseline, naive FROC with a pass per threshold: {t_naive:.2f} s for 200 thresholds "
          f"({per_threshold * 1e3:.1f} ms each; all {len(result.froc):,} points would take ~{per_threshold * len(result.froc) / 3600:.1f} h); "
          f"sorted FROC: every point inside the {t_eval:.2f} s above")

    _, t_dict = timed(result.to_dict, 0.5)
    print(f"to_dict with every FROC point ({len(result.froc):,}): {t_dict:.2f} s")

    if args.camelyon:
        cam, t_cam = timed(evaluate_cohort, predictions, labels, tumors, mode="camelyon16", mpp=0.5)
        print(f"evaluate_cohort, Camelyon16 mode: {t_cam:.2f} s; FROC score {cam.froc_score:.4f} over {cam.n_tumors} tumors "
              f"({cam.camelyon.n_itc} ITC), {cam.camelyon.n_detections:,} detections")

    if args.csv:
        import pandas as pd

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "preds.csv"
            frame = pd.DataFrame({
                "slide": np.repeat(list(predictions), [p.prob.size for p in predictions.values()]),
                "x": np.concatenate([p.x for p in predictions.values()]),
                "y": np.concatenate([p.y for p in predictions.values()]),
                "width": PATCH, "height": PATCH,
                "prob": np.concatenate([p.prob for p in predictions.values()]),
            })
            _, t_write = timed(frame.to_csv, path, index=False)
            del frame
            read, t_read = timed(read_predictions_csv, path)
            print(f"predictions CSV ({path.stat().st_size / 1e6:.0f} MB): written in {t_write:.1f} s, read and checked in {t_read:.2f} s")
            with warnings.catch_warnings():
                again, t_again = timed(evaluate_cohort, read, labels, tumors)
            assert again.froc_score == result.froc_score
            print(f"CSV read + evaluate_cohort: {t_read + t_again:.2f} s")


if __name__ == "__main__":
    main()
