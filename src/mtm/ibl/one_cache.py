"""Write ONE cache tables (sessions.pqt, datasets.pqt) for ALF folders, keeping real eids.

`one.alf.cache.make_parquet_db` draws random eids on every rebuild, so the demo and the private
per-job caches write the tables themselves. Dataset ids are uuid5 of (eid, relative path): the
same folder always gives the same tables.
"""

from __future__ import annotations

import datetime
import hashlib
import uuid
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from iblutil.io import parquet
from one.alf.cache import QC_TYPE
from one.alf.path import session_path_parts

REVISION_PATTERN = r"#([^#]+)#"


def md5sum(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def dataset_rows(eid: str, session_dir: Path, *, hash_files: bool = False) -> list[dict]:
    """One row per file under `session_dir` (relative paths include collection and revision)."""
    rows = []
    for f in sorted(p for p in session_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
        rel = f.relative_to(session_dir).as_posix()
        rows.append(
            dict(
                eid=eid,
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{eid}/{rel}")),
                rel_path=rel,
                file_size=f.stat().st_size,
                hash=md5sum(f) if hash_files else None,  # None: ONE skips its md5 check
                exists=True,
                qc="NOT_SET",
            )
        )
    return rows


def write_one_tables(
    cache_dir: str | Path,
    sessions: Mapping[str, str],
    *,
    tables_dir: str | Path | None = None,
    datasets: list[dict] | None = None,
    hash_files: bool = False,
) -> None:
    """Write sessions.pqt and datasets.pqt for `sessions` = {'lab/Subjects/subj/date/nnn': eid}.

    `datasets` gives the dataset rows directly (e.g. from a fetch manifest); otherwise every file
    in each session folder is listed. The newest revision of each dataset is the default one.
    Tables go to `tables_dir` (default: `cache_dir`), written atomically.
    """
    cache_dir = Path(cache_dir)
    tables_dir = Path(tables_dir or cache_dir)
    ses_rows, ds_rows = [], list(datasets or [])
    for rel_ses, eid in sessions.items():
        lab, subject, date, number = session_path_parts(rel_ses, as_dict=False, assert_valid=True)
        ses_rows.append(
            dict(id=eid, lab=lab or "", subject=subject, date=datetime.date.fromisoformat(date),
                 number=int(number), task_protocol="", projects="")
        )
        if datasets is None:
            ds_rows += dataset_rows(eid, cache_dir / rel_ses, hash_files=hash_files)
    ds = pd.DataFrame(ds_rows, columns=["eid", "id", "rel_path", "file_size", "hash", "exists", "qc"])
    revision = ds.rel_path.str.extract(REVISION_PATTERN, expand=False).fillna("")
    unrevisioned = ds.eid + "/" + ds.rel_path.str.replace(REVISION_PATTERN + "/", "", regex=True)
    ds["default_revision"] = revision.groupby(unrevisioned).transform("max").eq(revision)
    ds = ds.astype({"file_size": "UInt64", "qc": QC_TYPE}).set_index(["eid", "id"]).sort_index()
    ses = pd.DataFrame(ses_rows).astype({"number": np.uint16}).set_index("id").sort_index()
    meta = {"date_created": datetime.datetime.now().isoformat(sep=" ", timespec="minutes"), "origin": "mtm"}
    tables_dir.mkdir(parents=True, exist_ok=True)
    for name, table in (("sessions.pqt", ses), ("datasets.pqt", ds)):
        tmp = tables_dir / f".{name}.tmp"
        parquet.save(tmp, table, meta)  # ONE skips tables whose metadata lack date_created
        tmp.replace(tables_dir / name)
