"""Pathology Explorer core: slides, tiles, annotations, models, inference, evaluation, explanations.

Pure Python; never imports streamlit. ``python -m core --help`` lists the command line.
"""

__version__ = "0.1.0"
