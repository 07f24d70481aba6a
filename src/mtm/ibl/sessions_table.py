"""The `sessions.tsv` join: every session, whether it is usable, and why not."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mtm.io import write_text

COLUMNS = ("eid", "usable", "reason", "n_units_selected", "n_units_total", "n_trials_kept", "n_trials_total", "probes", "whisker_camera", "regions")


def sessions_table(qc_paths: list[str | Path]) -> pd.DataFrame:
    rows = []
    for path in qc_paths:
        qc = json.loads(Path(path).read_text())
        rows.append(
            {
                **{k: qc.get(k) for k in COLUMNS},
                "usable": "yes" if qc["usable"] else "no",
                "probes": ",".join(qc.get("probes", [])),
                "regions": ",".join(qc.get("regions", [])),
            }
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def write_sessions_table(qc_paths: list[str | Path], output: str | Path) -> pd.DataFrame:
    table = sessions_table(qc_paths)
    write_text(output, table.to_csv(sep="\t", index=False))
    return table
