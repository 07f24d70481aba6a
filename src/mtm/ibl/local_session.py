"""Open a fetched session from its manifest, with a private, read-only ONE instance.

Each job builds its own cache tables (in a temporary folder) listing only the datasets of its
manifest, so parallel jobs never read or write ONE state that another job touches, and ibllib's
loaders see exactly the revision and sorting that fetch chose.
"""

from __future__ import annotations

import fnmatch
import json
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtm.ibl.alf_check import check_alf_file
from mtm.ibl.errors import SessionDataError
from mtm.ibl.one_cache import write_one_tables


@dataclass
class LocalSession:
    """A fetched session: its manifest, its folder, and a private local ONE over its files."""

    manifest: dict[str, Any]
    one: Any
    _tables: tempfile.TemporaryDirectory = field(repr=False)

    @property
    def eid(self) -> str:
        return self.manifest["eid"]

    @property
    def path(self) -> Path:
        return Path(self.manifest["cache_dir"]) / self.manifest["session_path"]

    def has(self, rel_path_pattern: str) -> bool:
        return self.find(rel_path_pattern) is not None

    def find(self, rel_path_pattern: str) -> str | None:
        """The relative path of the first dataset of the manifest that matches the pattern (fnmatch)."""
        paths = (d["rel_path"] for d in self.manifest["datasets"])
        return next((path for path in paths if fnmatch.fnmatch(path, rel_path_pattern)), None)


def read_manifest(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def open_session(manifest: dict[str, Any] | str | Path, *, check_files: bool = True) -> LocalSession:
    """Check the manifest's files (exist, size, readable header) and open a private local ONE."""
    from one.api import One

    if not isinstance(manifest, dict):
        manifest = read_manifest(manifest)
    eid, cache_dir = manifest["eid"], Path(manifest["cache_dir"])
    session_dir = cache_dir / manifest["session_path"]
    if check_files:
        for d in manifest["datasets"]:
            path = session_dir / d["rel_path"]
            if not path.exists():
                raise SessionDataError(eid, d["rel_path"], f"file listed in the manifest is missing from {session_dir}")
            if path.stat().st_size != d["file_size"]:
                raise SessionDataError(
                    eid, d["rel_path"], f"size changed since fetch ({path.stat().st_size} != {d['file_size']} bytes)"
                )
            check_alf_file(eid, path, d["rel_path"])
    rows = [
        dict(eid=eid, id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{eid}/{d['rel_path']}")), rel_path=d["rel_path"],
             file_size=d["file_size"], hash=None, exists=True, qc="NOT_SET")
        for d in manifest["datasets"]
    ]
    tables = tempfile.TemporaryDirectory(prefix="mtm-one-")
    write_one_tables(cache_dir, {manifest["session_path"]: eid}, tables_dir=tables.name, datasets=rows)
    one = One(cache_dir=cache_dir, tables_dir=tables.name, mode="local")
    return LocalSession(manifest=manifest, one=one, _tables=tables)
