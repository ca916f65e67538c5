"""Thin shim: ``python cli.py ...`` is the same as the ``geoaudit`` console script."""
import sys

from geoaudit.cli import main

if __name__ == "__main__":
    sys.exit(main())
