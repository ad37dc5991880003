"""``python -m core export``: one slide's results for QuPath, ASAP, Camelyon16 or as a picture.

    python -m core export --db results.sqlite --slide demo_001 --format qupath --out demo_001.geojson.gz
    python -m core export --slide demo_001 --format png --threshold 0.7 --cut --out demo_001.png
    python -m core export --format camelyon-slides --out slides.csv

The work is done by :mod:`core.export`, imported when the command runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from core.cli import common
from core.errors import CommandError

HELP = "export one slide's predictions at a threshold: QuPath GeoJSON, ASAP XML, Camelyon16 CSV or an overview PNG"

FORMATS = ("qupath", "asap", "camelyon", "camelyon-slides", "png")

EPILOG = """formats:
  qupath           GeoJSON FeatureCollection (level-0 px): every patch as a QuPath tile (or
                   --object-type detection) classified Tumor/Normal at t with measurement
                   tumor_prob, plus the merged tumor regions at t as annotations; gzip when
                   --out ends in .gz (e.g. slide.geojson.gz)
  asap             ASAP XML: the merged tumor regions at t as polygons of group "Tumor"
  camelyon         Camelyon16 detections CSV of the slide: lines prob,x,y (NMS as the
                   evaluation's Camelyon16 mode; x, y = patch centre, level-0 px; no header
                   line unless --header, as the official script reads numbers only)
  camelyon-slides  Camelyon16 slide-level CSV name,prob (max F(I)) of every slide the model
                   has predicted (--slide not needed)
  png              the slide overview with the heatmap, a colour bar with t marked and a
                   title line, --width px wide
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``export`` (defaults: those of :mod:`core.export`'s writers)."""
    from core.cli.common import keyword_default as default
    from core.export.pictures import render_overview
    from core.export.qupath import OBJECT_TYPES, build_qupath_geojson

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    common.add_db(parser)
    common.add_model_id(parser)
    common.add_threshold(parser)
    parser.add_argument("--slide", metavar="NAME", help="slide name (file stem) in the store; required except for camelyon-slides")
    parser.add_argument("--format", required=True, choices=FORMATS, help="what to write (see below)")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE", help="file to write (replaced atomically)")
    object_type = default(build_qupath_geojson, "object_type")
    parser.add_argument(
        "--object-type", choices=OBJECT_TYPES, default=object_type, help=f"qupath: QuPath object type of the patches (default {object_type})"
    )
    parser.add_argument("--no-regions", action="store_true", help="qupath: leave out the merged tumor-region annotations")
    parser.add_argument("--header", action="store_true", help="camelyon: start the CSV with the line prob,x,y")
    common.add_nms_radius_um(parser, applies_to="camelyon")
    width, colormap, opacity = (default(render_overview, k) for k in ("width", "colormap", "opacity"))
    parser.add_argument("--width", type=int, default=width, help=f"png: picture width in px (default {width})")
    parser.add_argument("--colormap", default=colormap, help=f"png: colour map of the heatmap (default {colormap})")
    parser.add_argument("--opacity", type=float, default=opacity, help=f"png: heatmap opacity in [0, 1] (default {opacity:g})")
    parser.add_argument("--cut", action="store_true", help="png: hide the heatmap where F(I) < t")


def run(args: argparse.Namespace) -> int:
    """Write the export file of one slide (or the slide-level CSV of all); return 0."""
    from core import export

    common.check_threshold(args.threshold)
    if args.format != "camelyon-slides" and not args.slide:
        raise CommandError(f"--format {args.format} needs --slide NAME")
    started = time.perf_counter()
    t = args.threshold
    with common.open_store(args.db) as store:
        if args.format == "camelyon-slides":
            model = store.choose_model(args.model)
            predictions = store.predictions_for_model(model["id"])
            if not predictions:
                raise export.ExportError(f"the store holds no complete prediction run of model {model['id']!r}")
            export.write_camelyon_slides_csv(args.out, predictions)
            print(f"wrote the slide-level CSV of {len(predictions)} slides (model {model['id']}) to {args.out} ({common.size_text(args.out)})")
            return 0
        item = export.load_slide_export(store, args.slide, args.model)
    provenance = {
        "slide": item.slide.name, "model_id": item.model_id, "threshold": t, "run_id": item.run.id,
        "units": "level-0 pixels", "synthetic_demo": item.demo is not None, "software": "Pathology Explorer",
    }
    if args.format == "qupath":
        export.write_qupath_geojson(
            args.out, item.predictions, t, object_type=args.object_type, regions=not args.no_regions, properties=provenance,
        )
        what = f"{len(item.predictions):,} {args.object_type}s" + ("" if args.no_regions else f" and {len(export.merge_regions(item.predictions, t))} tumor regions")
    elif args.format == "asap":
        export.write_asap_regions(args.out, item.predictions, t)
        what = f"{len(export.merge_regions(item.predictions, t))} tumor regions"
    elif args.format == "camelyon":
        export.write_camelyon_csv(args.out, item.predictions, header=args.header, mpp=item.slide.mpp, nms_radius_um=args.nms_radius_um)
        n = len(export.select_detections(item.predictions, mpp=item.slide.mpp, nms_radius_um=args.nms_radius_um))
        what = f"{n} detections"
    else:
        export.write_slide_overview_png(
            args.out, item, t, width=args.width, colormap=args.colormap, opacity=args.opacity, cut=args.cut,
        )
        what = f"a {args.width} px overview"
    note = f" [{item.demo}]" if item.demo else ""
    print(
        f"wrote {what} of {item.slide.name} (model {item.model_id}, t = {t:g}) to {args.out} "
        f"({common.size_text(args.out)}, {time.perf_counter() - started:.1f} s){note}"
    )
    return 0
