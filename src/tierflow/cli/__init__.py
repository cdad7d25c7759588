"""Command-line interface (``tierflow …`` and ``python -m tierflow …``)."""

from tierflow.cli.app import app, main

__all__ = ["app", "main"]
