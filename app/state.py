"""Session-state keys shared by the frame and the pages (one constant per key)."""

DATA_DIR = "data_dir"
THRESHOLD = "threshold"
SELECTED_SLIDE = "selected_slide"

DEFAULT_THRESHOLD = 0.5
