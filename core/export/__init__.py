"""Exports a pathologist or an engineer can open elsewhere: QuPath, ASAP, Camelyon16, pictures, report.

Every export is a function returning the file's content (``str`` or ``bytes``, for the app's
download buttons) and a ``write_*`` function writing it to a path (atomically). Inputs are
plain data: patch predictions with arrays ``x, y, width, height`` (level-0 pixels, top-left
corner) and ``prob`` in [0, 1], e.g. :class:`core.store.PatchPredictions`;
:func:`load_slide_export` reads them, with the slide's and model's records, from the store.

=====================  ===========================================  ==========================
what                   content                                      file
=====================  ===========================================  ==========================
QuPath                 :func:`build_qupath_geojson` (str),          :func:`write_qupath_geojson`
                       :func:`qupath_geojson_bytes` (gzip option)   (``.gz``: gzip)
ASAP XML regions       :func:`build_asap_xml` (str)                 :func:`write_asap_regions`
Camelyon16 detections  :func:`build_camelyon_csv` (str)             :func:`write_camelyon_csv`
Camelyon16 slides      :func:`build_camelyon_slides_csv` (str)      :func:`write_camelyon_slides_csv`
slide overview         :func:`render_slide_overview_png` (bytes),   :func:`write_slide_overview_png`
                       :func:`render_overview` (RGB array)
figures                :func:`evaluation_figures` (plotly),         :func:`write_figure`
                       :func:`figure_bytes` (html/png/svg)
patch + explanations   :func:`render_explanations_png` (bytes)
cohort report          :func:`build_cohort_report` (str, HTML),     :func:`write_cohort_report`
                       :func:`render_cohort_report` (from
                       :func:`core.evaluation.evaluate_store_cohort`'s results)
=====================  ===========================================  ==========================

Nothing here imports torch, streamlit or app.
"""

from core.export.asap import ASAP_GROUP, asap_annotations, build_asap_xml, write_asap_regions
from core.export.camelyon import (
    Detections,
    build_camelyon_csv,
    build_camelyon_slides_csv,
    select_detections,
    write_camelyon_csv,
    write_camelyon_slides_csv,
)
from core.export.common import (
    NORMAL_RGB,
    TUMOR_RGB,
    ExportError,
    SlideExport,
    TumorRegion,
    demo_note,
    load_slide_export,
    merge_regions,
    write_bytes,
)
from core.export.figures import (
    confusion_figure,
    evaluation_figures,
    figure_bytes,
    froc_figure,
    pr_figure,
    roc_figure,
    static_engine,
    write_figure,
)
from core.export.pictures import (
    overview_title,
    read_thumbnail,
    render_colorbar,
    render_explanations,
    render_explanations_png,
    render_overview,
    render_overview_png,
    render_slide_overview_png,
    write_slide_overview_png,
)
from core.export.qupath import OBJECT_TYPES, build_qupath_geojson, qupath_geojson_bytes, write_qupath_geojson
from core.export.report import (
    QUESTIONS,
    CohortResults,
    build_cohort_report,
    render_cohort_report,
    write_cohort_report,
)

__all__ = [
    "ASAP_GROUP",
    "NORMAL_RGB",
    "OBJECT_TYPES",
    "QUESTIONS",
    "TUMOR_RGB",
    "CohortResults",
    "Detections",
    "ExportError",
    "SlideExport",
    "TumorRegion",
    "asap_annotations",
    "build_asap_xml",
    "build_camelyon_csv",
    "build_camelyon_slides_csv",
    "build_cohort_report",
    "build_qupath_geojson",
    "confusion_figure",
    "demo_note",
    "evaluation_figures",
    "figure_bytes",
    "froc_figure",
    "load_slide_export",
    "merge_regions",
    "overview_title",
    "pr_figure",
    "qupath_geojson_bytes",
    "read_thumbnail",
    "render_cohort_report",
    "render_colorbar",
    "render_explanations",
    "render_explanations_png",
    "render_overview",
    "render_overview_png",
    "render_slide_overview_png",
    "roc_figure",
    "select_detections",
    "static_engine",
    "write_asap_regions",
    "write_bytes",
    "write_camelyon_csv",
    "write_camelyon_slides_csv",
    "write_cohort_report",
    "write_figure",
    "write_qupath_geojson",
    "write_slide_overview_png",
]
