"""Benchmark: exporting a 100,000-patch slide for QuPath (plain and .gz), plus ASAP and Camelyon16.

Synthetic predictions on a regular grid (316 x 316 patches of 256 level-0 px, an 81k px
slide), a smooth probability field with a few hot spots and noise. Baseline in the same run:
the obvious writer -- one shapely box, ``mapping`` and ``json.dumps`` per patch feature, and
gzip at Python's default level 9 -- producing the same features. Also timed: the merged
tumor regions (coverage union vs the general ``union_all``), ``json.loads`` of the file (a
proxy for how long a reader takes to parse it), the ASAP XML and the Camelyon16 CSV.

    python bench/bench_export.py [--patches 100000] [--repeat 3] [--threshold 0.5]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import shapely  # noqa: E402
from shapely.geometry import mapping  # noqa: E402

from core.export import build_asap_xml, build_camelyon_csv, build_qupath_geojson, merge_regions  # noqa: E402
from core.export.common import NORMAL_RGB, TUMOR_RGB, encode  # noqa: E402
from core.export.qupath import _region_features  # noqa: E402

SIDE = 256


def synthetic_slide(n_patches: int) -> SimpleNamespace:
    """Return ~n_patches predictions on a square grid: smooth field, hot spots, noise."""
    side = int(np.ceil(np.sqrt(n_patches)))
    gy, gx = np.indices((side, side))
    x, y = (gx.ravel() * SIDE)[:n_patches], (gy.ravel() * SIDE)[:n_patches]
    rng = np.random.default_rng(0)
    prob = 0.05 + rng.normal(0, 0.05, x.size)
    span = side * SIDE
    for cx, cy, r in rng.uniform([0.1 * span, 0.1 * span, 0.02 * span], [0.9 * span, 0.9 * span, 0.08 * span], (12, 3)):
        prob += 0.95 * np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r)))
    prob = np.clip(prob, 0, 1)
    n = x.size
    return SimpleNamespace(
        slide="bench", x=x.astype(np.int64), y=y.astype(np.int64), width=np.full(n, SIDE, np.int64),
        height=np.full(n, SIDE, np.int64), prob=prob,
    )


def naive_qupath_geojson(pred, t: float) -> str:
    """The baseline: a shapely box, a properties dict and json.dumps per patch feature."""
    features = []
    for x, y, w, h, p in zip(pred.x, pred.y, pred.width, pred.height, pred.prob):
        tumor = p >= t
        geometry = mapping(shapely.box(int(x), int(y), int(x + w), int(y + h), ccw=False))
        features.append(json.dumps({
            "type": "Feature",
            "geometry": geometry,
            "properties": {
                "objectType": "tile",
                "classification": {"name": "Tumor" if tumor else "Normal", "color": list(TUMOR_RGB if tumor else NORMAL_RGB)},
                "measurements": {"tumor_prob": float(p)},
                "isLocked": False,
            },
        }))
    features += _region_features(pred, t)  # same regions in both files
    return '{"type":"FeatureCollection","features":[' + ",".join(features) + "]}"


def timed(fn, repeat: int):
    """Return (median seconds, last result)."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def same_features(a: str, b: str) -> bool:
    """Return True when two GeoJSON texts hold the same features (geometry as polygons, properties)."""
    fa, fb = json.loads(a)["features"], json.loads(b)["features"]
    if len(fa) != len(fb):
        return False
    for x, y in zip(fa, fb):
        if x["properties"] != y["properties"]:
            return False
        gx, gy = x["geometry"], y["geometry"]
        if x["properties"]["objectType"] != "annotation":  # a patch square: same corners, any order
            if sorted(map(tuple, gx["coordinates"][0][:-1])) != sorted(map(tuple, gy["coordinates"][0][:-1])):
                return False
        elif not shapely.geometry.shape(gx).equals(shapely.geometry.shape(gy)):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args()
    t = args.threshold
    pred = synthetic_slide(args.patches)
    n_pos = int((pred.prob >= t).sum())
    print(f"slide: {len(pred.prob):,} patches of {SIDE} px, {n_pos:,} with F(I) >= {t} ({100 * n_pos / len(pred.prob):.1f}%)")

    # Regions alone: coverage union (ours) vs the general union of the same squares.
    t_regions, regions = timed(lambda: merge_regions(pred, t), args.repeat)
    m = pred.prob >= t
    t_union, union = timed(lambda: shapely.union_all(shapely.box(pred.x[m], pred.y[m], pred.x[m] + SIDE, pred.y[m] + SIDE)), 1)
    ours_union = shapely.union_all([r.geometry for r in regions])
    print(f"tumor regions: {len(regions)} regions in {t_regions:.2f} s (general union_all of the squares: {t_union:.2f} s, "
          f"{t_union / t_regions:.1f}x); same area: {abs(ours_union.area - union.area) == 0}")

    t_ours, text = timed(lambda: build_qupath_geojson(pred, t), args.repeat)
    t_ours_gz, packed = timed(lambda: encode(text, compress=True), args.repeat)
    t_base, base_text = timed(lambda: naive_qupath_geojson(pred, t), args.repeat)
    t_base_gz, base_packed = timed(lambda: gzip.compress(base_text.encode("utf-8")), args.repeat)
    plain = text.encode("utf-8")
    print(f"same features as the baseline: {same_features(text, base_text)}")
    print()
    print(f"{'QuPath GeoJSON':<34}{'time':>9}{'size':>11}")
    print(f"{'ours, plain (.geojson)':<34}{t_ours:>8.2f}s{len(plain) / 1e6:>9.1f}MB")
    print(f"{'ours, gzip level 6 (.geojson.gz)':<34}{t_ours + t_ours_gz:>8.2f}s{len(packed) / 1e6:>9.1f}MB")
    print(f"{'baseline, plain':<34}{t_base:>8.2f}s{len(base_text.encode()) / 1e6:>9.1f}MB")
    print(f"{'baseline, gzip level 9':<34}{t_base + t_base_gz:>8.2f}s{len(base_packed) / 1e6:>9.1f}MB")
    print(f"speed-up: plain {t_base / t_ours:.1f}x, gz {(t_base + t_base_gz) / (t_ours + t_ours_gz):.1f}x")
    t_parse, _ = timed(lambda: json.loads(gzip.decompress(packed)), 1)
    print(f"reading it back (gunzip + json.loads): {t_parse:.2f} s")
    print()
    t_asap, xml = timed(lambda: build_asap_xml(pred, t), args.repeat)
    t_csv, text_csv = timed(lambda: build_camelyon_csv(pred), args.repeat)
    print(f"ASAP XML of the regions: {t_asap:.2f} s, {len(xml) / 1e3:.0f} kB")
    print(f"Camelyon16 CSV: {text_csv.count(chr(10)):,} detections, {t_csv:.2f} s")


if __name__ == "__main__":
    main()
