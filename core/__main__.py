"""Entry point of ``python -m core`` (also ``torchrun -m core``)."""

import sys

from core.cli import main

if __name__ == "__main__":
    sys.exit(main())
