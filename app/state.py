"""Session-state keys shared by the frame and the pages (one constant per key)."""

DATA_DIR = "data_dir"
MODEL_CHOICE = "model_choice"
MODEL_UPLOAD = "model_upload"
UPLOAD_DIR = "upload_dir"
UPLOADED_SLIDES = "uploaded_slides"
UPLOADED_MPP = "uploaded_mpp"  # dict: uploaded slide name -> microns per pixel typed next to the upload
UPLOAD_MPP_INPUT = "upload_mpp_input"
GIVEN_MPP = "given_mpp"  # dict: data-folder slide name -> microns per pixel typed on Review (overrides cohort.csv)
THRESHOLD = "threshold"
SELECTED_SLIDE = "selected_slide"
SELECTED_PATCH = "selected_patch"  # dict: slide, path, x, y, size0, level, patch_size, prob
OPACITY = "heatmap_opacity"
COLORMAP = "heatmap_colormap"
SHOW_ANNOTATIONS = "show_annotations"
CUT_BELOW_T = "cut_below_t"
FADE_LOW = "fade_low_probabilities"
OVERVIEW_CHART = "overview_chart"
EVAL_MODE = "evaluation_mode"
VIEW_MODE = "view_mode"
VIEW_FOCUS = "view_focus"  # (slide, level-0 x, level-0 y, nonce[, zoom]): the viewer centres there (at full resolution, or zoom) once per nonce
LINK_APPLIED = "link_applied"  # the URL's slide, view, t and patch were taken into this session (app/links.py)
LINK_PATCH = "link_patch"  # (slide, level-0 x, level-0 y): the patch a link selects once its slide's predictions are read
SLIDE_VIEWER = "slide_viewer"  # the deep-zoom viewer component's key (one for every slide: its view lives across reruns)
VIEW_FRAGMENT = "view_fragment"  # the key of the fragment the current page redraws on a t move (set by the page each full run; None: none)
REVIEW_SLIDE = "review-slide"  # Review's outer fragment: the slide choice and all drawn from the chosen slide (a slide switch reruns it alone)
REVIEW_VIEW = "review-view"  # Review's fragment: table decision column, metrics, viewer, colour bar, downloads, selected patch

DEFAULT_THRESHOLD = 0.5
DEFAULT_OPACITY = 0.6  # with transparent low F(I): chosen on real tissue, see README "The viewer"

#: The Review page's viewer settings and their defaults (set as session state, not value=).
VIEWER_DEFAULTS = {OPACITY: DEFAULT_OPACITY, SHOW_ANNOTATIONS: True, CUT_BELOW_T: False, FADE_LOW: True, VIEW_MODE: "Deep zoom"}
#: The Explain page's settings: target, methods and each method's parameters.
EXPLAIN_TARGET, EXPLAIN_METHODS = "explain_target", "explain_methods"
EXPLAIN_LAYER, EXPLAIN_SG_SAMPLES, EXPLAIN_SG_NOISE = "explain_gradcam_layer", "explain_smoothgrad_samples", "explain_smoothgrad_noise"
EXPLAIN_OCC_WINDOW, EXPLAIN_OCC_STRIDE = "explain_occlusion_window", "explain_occlusion_stride"
EXPLAIN_LIME_SEGMENTS, EXPLAIN_LIME_SAMPLES, EXPLAIN_LIME_COMPACTNESS = "explain_lime_segments", "explain_lime_samples", "explain_lime_compactness"
EXPLAIN_IG_BASELINE, EXPLAIN_IG_STEPS = "explain_ig_baseline", "explain_ig_steps"
ASCENT_RESULT, ASCENT_RUNS = "ascent", "ascent_runs"  # Network: the activation maximization shown; this session's runs by settings
EXPLAIN_SETTINGS = (
    EXPLAIN_TARGET, EXPLAIN_METHODS, EXPLAIN_LAYER, EXPLAIN_SG_SAMPLES, EXPLAIN_SG_NOISE, EXPLAIN_OCC_WINDOW, EXPLAIN_OCC_STRIDE,
    EXPLAIN_LIME_SEGMENTS, EXPLAIN_LIME_SAMPLES, EXPLAIN_LIME_COMPACTNESS, EXPLAIN_IG_BASELINE, EXPLAIN_IG_STEPS,
)
#: The model chosen by an upload, applied before the Model selectbox is drawn on the next run.
PENDING_MODEL_CHOICE = "pending_model_choice"
#: How many patches the last click or box selected (its caption survives the rerun that follows).
SELECTION_COUNT = "selection_count"
DEMO_SLIDES_SEEN = "demo_slides_seen"  # slides of the first-start demo cohort this session's page was drawn with

#: Widget keys the frame keeps across page switches (Streamlit drops a widget's value when a
#: run does not draw it): the sidebar's, the chosen slide, the viewer settings, the FROC mode.
PERSISTENT_KEYS = (DATA_DIR, MODEL_CHOICE, THRESHOLD, SELECTED_SLIDE, COLORMAP, EVAL_MODE, *VIEWER_DEFAULTS, *EXPLAIN_SETTINGS)
