"""Session-state keys shared by the frame and the pages (one constant per key)."""

DATA_DIR = "data_dir"
MODEL_CHOICE = "model_choice"
MODEL_UPLOAD = "model_upload"
UPLOAD_DIR = "upload_dir"
UPLOADED_SLIDES = "uploaded_slides"
UPLOADED_MPP = "uploaded_mpp"  # dict: uploaded slide name -> microns per pixel typed next to the upload
UPLOAD_MPP_INPUT = "upload_mpp_input"
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
VIEW_FOCUS = "view_focus"  # (slide, level-0 x, level-0 y) the viewer opens at

DEFAULT_THRESHOLD = 0.5
DEFAULT_OPACITY = 0.45

#: The Review page's viewer settings and their defaults (set as session state, not value=).
VIEWER_DEFAULTS = {OPACITY: DEFAULT_OPACITY, SHOW_ANNOTATIONS: True, CUT_BELOW_T: False, FADE_LOW: True, VIEW_MODE: "Deep zoom"}
#: Widget keys the frame keeps across page switches (Streamlit drops a widget's value when a
#: run does not draw it): the sidebar's, the chosen slide, the viewer settings, the FROC mode.
PERSISTENT_KEYS = (DATA_DIR, MODEL_CHOICE, THRESHOLD, SELECTED_SLIDE, COLORMAP, EVAL_MODE, *VIEWER_DEFAULTS)
