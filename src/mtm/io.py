"""Atomic file writes and provenance metadata shared by every stage.

Every output is written to a temporary file in the destination folder, then renamed into place,
so a killed job never leaves a file that looks finished; the next write of that output removes
the temporary file it left.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import glob
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

import mtm

_UMASK = os.umask(0)
os.umask(_UMASK)


class CorruptFileError(RuntimeError):
    """A file that a stage wrote cannot be read back as what it should be: truncated, damaged,
    changed after it was written, or a file of another kind."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}. If the workflow wrote it, rerun the rule that writes it: snakemake -f {path}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The writer holds an exclusive lock (flock) on its temporary file until it ends, or dies: the
    temporary files of earlier writes of `path` that nobody holds were left by killed writers,
    and are removed; those of live writers are left alone.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs are shared like any other file
        _remove_abandoned_temporaries(path, Path(tmp))
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        os.close(fd)


def _remove_abandoned_temporaries(path: Path, own: Path) -> None:
    """Remove the temporary files beside `path` that atomic_path made for it and no writer holds."""
    prefix = f".{path.name}."
    for candidate in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        # mkstemp's random part has no dot: a dot means another output's temporary (".x.png.*" vs ".x.*")
        if candidate == own or "." in candidate.name[len(prefix) : -len(".tmp")]:
            continue
        try:
            fd = os.open(candidate, os.O_RDONLY)
        except FileNotFoundError:  # its writer finished in the meantime
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            candidate.unlink(missing_ok=True)
        except BlockingIOError:  # a live writer's
            pass
        finally:
            os.close(fd)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_parquet(path: str | os.PathLike, table: pa.Table, metadata: dict[str, Any] | None = None) -> None:
    """Write a pyarrow table (zstd, with a CRC of each page, which readers may verify) with
    `metadata` stored as JSON strings under `mtm.<key>`."""
    if metadata:
        extra = {f"mtm.{k}".encode(): json.dumps(v, default=_json_default).encode() for k, v in metadata.items()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_page_checksum=True)


def read_parquet_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The `mtm.<key>` entries of a Parquet file's schema metadata, JSON-decoded."""
    raw = pq.read_schema(path).metadata or {}
    return {k.decode()[4:]: json.loads(v) for k, v in raw.items() if k.startswith(b"mtm.")}


def config_hash(*sections: Any) -> str:
    """A short, order-independent hash of config sections (dicts, lists, scalars)."""
    blob = json.dumps(sections, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def provenance(eid: str, *, config: Any = None, **extra: Any) -> dict[str, Any]:
    """What produced a per-session file: eid, config hash, package version, creation time, ..."""
    return {
        "eid": eid,
        "mtm_version": mtm.__version__,
        "config_hash": config_hash(config) if config is not None else None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, paths and dates show up in configs and QC summaries
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (Path, datetime.date)):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
