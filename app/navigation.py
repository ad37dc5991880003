"""The pages of the app, defined once so any page can switch to another (st.switch_page)."""

from __future__ import annotations

import streamlit as st

from core.paths import REPO_ROOT

PAGES_DIR = REPO_ROOT / "pages"

# (file, title, icon); the first page is the default.
PAGE_SPECS = [
    ("review.py", "Review", ":material/biotech:"),
    ("threshold.py", "Threshold tuning", ":material/tune:"),
    ("explain.py", "Explain", ":material/visibility:"),
    ("network.py", "Network", ":material/hub:"),
    ("cnn_basics.py", "CNN basics", ":material/school:"),
    ("training.py", "Training", ":material/monitoring:"),
]


def pages() -> list:
    """Return the st.Page objects of the pages that exist, in menu order."""
    found = []
    for i, (file, title, icon) in enumerate(PAGE_SPECS):
        path = PAGES_DIR / file
        if path.exists():
            found.append(st.Page(str(path), title=title, icon=icon, default=(i == 0)))
    return found


def page(file: str):
    """Return the st.Page of ``file`` (e.g. "explain.py") for st.switch_page."""
    title, icon = next((t, i) for f, t, i in PAGE_SPECS if f == file)
    return st.Page(str(PAGES_DIR / file), title=title, icon=icon, default=(file == PAGE_SPECS[0][0]))
