"""Logging for workflow jobs: everything a job says goes to its Snakemake log file."""

from __future__ import annotations

import logging
import sys


def log_to_file(path: str) -> None:
    """Send logging records, warnings and stderr (tracebacks included) to `path`."""
    handle = open(path, "a", buffering=1)
    sys.stderr = handle
    logging.basicConfig(
        stream=handle, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    logging.captureWarnings(True)
