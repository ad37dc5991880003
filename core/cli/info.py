"""``python -m core info``: a slide's format, levels, dimensions, downsamples and mpp as JSON.

    python -m core info slide.tiff
    python -m core info slide.svs --properties      # with every OpenSlide property
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "print a slide's format, levels, dimensions, downsamples and mpp as JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``info``."""
    parser.add_argument("slide", type=Path, help="slide file (any format OpenSlide reads, or PNG/JPEG)")
    parser.add_argument("--properties", action="store_true", help="also print every OpenSlide property")


def run(args: argparse.Namespace) -> int:
    """Print the slide's description as JSON on stdout; return 0."""
    from core.slide_io import open_slide

    slide = open_slide(args.slide)
    data = slide.info.to_dict()
    if args.properties:
        data["properties"] = slide.properties
    print(json.dumps(data, indent=2))
    return 0
