"""Cheap integrity checks of ALF files: headers and lengths, without reading the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from mtm.ibl.errors import SessionDataError


def check_alf_file(eid: str, path: Path, rel_path: str) -> None:
    """Raise SessionDataError if a .npy or .pqt file cannot be opened or is shorter than its header says."""
    try:
        if path.suffix == ".npy":
            # Memory-mapping validates the header and that the file holds every element it declares.
            np.load(path, mmap_mode="r", allow_pickle=False)
        elif path.suffix == ".pqt":
            pq.read_metadata(path)
    except Exception as err:
        raise SessionDataError(eid, rel_path, f"unreadable ({type(err).__name__}: {err}); truncated or corrupt file") from None
