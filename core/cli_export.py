"""``python -m core export`` (one slide's results for QuPath, ASAP, Camelyon16 or as a picture)
and ``python -m core report`` (the cohort report as one HTML file).

Registered with :func:`core.cli.register` when :mod:`core.cli` loads its extensions. The
work is done by :mod:`core.export`, imported when a command runs, so other commands start
without it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from core import cli

EXPORT_FORMATS = ("qupath", "asap", "camelyon", "camelyon-slides", "png")

EXPORT_HELP = "export one slide's predictions at a threshold: QuPath GeoJSON, ASAP XML, Camelyon16 CSV or an overview PNG"
EXPORT_EPILOG = """formats:
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

REPORT_HELP = "write the cohort report: one self-contained HTML file (cohort table, the three evaluation views at t, a heatmap thumbnail per slide)"


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, default=Path("results.sqlite"), metavar="SQLITE", help="results store written by `predict` (default results.sqlite)")
    parser.add_argument("--model", metavar="ID", help="model id in the store (default: its only model)")
    parser.add_argument("--threshold", type=float, default=0.5, help="threshold t in [0, 1] (default 0.5)")


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXPORT_EPILOG
    _add_common(parser)
    parser.add_argument("--slide", metavar="NAME", help="slide name (file stem) in the store; required except for camelyon-slides")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="what to write (see below)")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE", help="file to write (replaced atomically)")
    parser.add_argument("--object-type", choices=("tile", "detection"), default="tile", help="qupath: QuPath object type of the patches (default tile)")
    parser.add_argument("--no-regions", action="store_true", help="qupath: leave out the merged tumor-region annotations")
    parser.add_argument("--header", action="store_true", help="camelyon: start the CSV with the line prob,x,y")
    parser.add_argument("--nms-radius-um", type=float, help="camelyon: NMS radius in um (default 1.5 patch sides, as the evaluation)")
    parser.add_argument("--width", type=int, default=1024, help="png: picture width in px (default 1024)")
    parser.add_argument("--colormap", default="inferno", help="png: colour map of the heatmap (default inferno)")
    parser.add_argument("--opacity", type=float, default=0.5, help="png: heatmap opacity in [0, 1] (default 0.5)")
    parser.add_argument("--cut", action="store_true", help="png: hide the heatmap where F(I) < t")


def _open_store(path: Path):
    from core.export import ExportError
    from core.store import ResultStore

    # ResultStore creates a missing file; an export must not leave an empty store behind.
    if not path.is_file():
        raise ExportError(f"results store not found: {path}")
    return ResultStore(path)


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


def run_export(args: argparse.Namespace) -> int:
    from core import export

    if not 0 <= args.threshold <= 1:
        raise cli.CommandError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.format != "camelyon-slides" and not args.slide:
        raise cli.CommandError(f"--format {args.format} needs --slide NAME")
    started = time.perf_counter()
    t = args.threshold
    with _open_store(args.db) as store:
        if args.format == "camelyon-slides":
            model = store.choose_model(args.model)
            predictions = store.predictions_for_model(model["id"])
            if not predictions:
                raise export.ExportError(f"the store holds no complete prediction run of model {model['id']!r}")
            export.write_camelyon_slides_csv(args.out, predictions)
            print(f"wrote the slide-level CSV of {len(predictions)} slides (model {model['id']}) to {args.out} ({_size(args.out)})")
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
        f"({_size(args.out)}, {time.perf_counter() - started:.1f} s){note}"
    )
    return 0


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    parser.add_argument("--cohort", type=Path, required=True, metavar="CSV", help="cohort table: slide,label[,split][,mpp], label tumor/normal")
    parser.add_argument("--annotations", type=Path, metavar="DIR", help="folder of <slide>.geojson / <slide>.xml tumor annotations (without: no patch level or FROC)")
    parser.add_argument("--mode", choices=("patch", "camelyon16"), default="patch", help="FROC of the source material (patch) or of the official Camelyon16 evaluation")
    parser.add_argument("--split", help="report only the cohort's slides of this split (e.g. test)")
    parser.add_argument("--allow-missing", action="store_true", help="count cohort slides without predictions as slides without tissue (score 0)")
    parser.add_argument("--nms-radius-um", type=float, help="camelyon16: NMS radius in um (default 1.5 patch sides)")
    parser.add_argument("--thumbnail-width", type=int, default=360, help="width in px of each slide's heatmap picture (default 360)")
    parser.add_argument("--figures", type=Path, metavar="DIR", help="also write each evaluation figure to DIR (see --figure-format)")
    parser.add_argument(
        "--figure-format", choices=("png", "svg", "html"), action="append",
        help="format of the --figures files, repeatable (default png; png/svg by Plotly's kaleido when installed, else matplotlib)",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="HTML", help="the report file to write")


def run_report(args: argparse.Namespace) -> int:
    from core import export
    from core.cohort import read_cohort
    from core.evaluation import evaluate_store_cohort

    if not 0 <= args.threshold <= 1:
        raise cli.CommandError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.figure_format and args.figures is None:
        raise cli.CommandError("--figure-format goes with --figures DIR")
    started = time.perf_counter()
    with _open_store(args.db) as store:
        results = evaluate_store_cohort(
            store, read_cohort(args.cohort), annotations=args.annotations, model_id=args.model, split=args.split,
            mode=args.mode, allow_missing=args.allow_missing, nms_radius_um=args.nms_radius_um,
        )
    page = export.render_cohort_report(results, args.threshold, thumbnail_width=args.thumbnail_width)
    export.write_bytes(args.out, page.encode("utf-8"))
    figures = []
    if args.figures is not None:
        for name, fig in export.evaluation_figures(results.evaluation, args.threshold).items():
            for fmt in args.figure_format or ["png"]:
                figures.append(export.write_figure(args.figures / f"{name}.{fmt}", fig, fmt))
    print(
        f"wrote the cohort report of {len(results.cohort)} slides (model {results.model['id']}, t = {args.threshold:g}, "
        f"{args.mode} mode) to {args.out} ({_size(args.out)}, {time.perf_counter() - started:.1f} s)"
        + (f" and {len(figures)} figure files to {args.figures} (static images by {export.static_engine()})" if args.figures is not None else "")
    )
    return 0


cli.register("export", EXPORT_HELP, add_export_arguments, run_export)
cli.register("report", REPORT_HELP, add_report_arguments, run_report)
