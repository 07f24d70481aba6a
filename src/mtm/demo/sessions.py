"""Which real IBL sessions the demo imitates, and which real units each of its probes borrows.

A demo session keeps the real eid, session path and probe names of an MtM target session (from
the bundled BWM release table), so that everything downstream sees IBL's own identifiers. Its
units come from the bundled repeated-site (RE) tables: the probe's own insertion when that one is
an RE insertion, otherwise another RE insertion picked deterministically from the probe's pid.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class DemoSession:
    """One demo session: real eid, ALF path 'lab/Subjects/subject/date/NNN', and its probes.

    `probes` holds (probe_name, source_pid) pairs sorted by probe name; source_pid is the RE
    insertion of `re_clusters.pqt` / `re_channels.pqt` whose units and channels the probe uses.
    """

    eid: str
    rel_path: str
    probes: tuple[tuple[str, str], ...]


def _data_path(name: str):
    return resources.files("mtm") / "data" / name


@functools.cache
def re_clusters() -> pd.DataFrame:
    """Real RE units, MultiIndex (pid, cluster_id); see src/mtm/data/ATTRIBUTION.md."""
    return pd.read_parquet(_data_path("re_clusters.pqt"))


@functools.cache
def re_channels() -> pd.DataFrame:
    """Real RE channel tables, MultiIndex (pid, channel), 384 channels per insertion."""
    return pd.read_parquet(_data_path("re_channels.pqt"))


@functools.cache
def _bwm_release() -> pd.DataFrame:
    return pd.read_csv(_data_path("bwm_2023_12_release.csv"), index_col=0)


def target_eids() -> list[str]:
    """The 40 MtM target eids, in the authors' order."""
    return _data_path("mtm_target_eids.txt").read_text().split()


def test_eids() -> list[str]:
    """The 5 MtM sessions held out of pretraining and finetuned on, in the authors' order."""
    return _data_path("mtm_test_eids.txt").read_text().split()


def _substitute_pid(pid: str, taken: set[str], re_pids: list[str]) -> str:
    """An RE pid standing in for `pid`: a fixed function of `pid`, skipping pids in `taken`."""
    start = uuid.UUID(pid).int % len(re_pids)
    for k in range(len(re_pids)):
        candidate = re_pids[(start + k) % len(re_pids)]
        if candidate not in taken:
            return candidate
    raise ValueError("not enough RE insertions to substitute from")


def demo_sessions(n_sessions: int) -> list[DemoSession]:
    """The first `n_sessions` MtM target sessions that are in the BWM release with an RE probe.

    Target-list order; every probe of the BWM release is kept, so some sessions have two.
    """
    re_pids = sorted(re_clusters().index.unique(level=0))
    bwm = _bwm_release()
    sessions = []
    for eid in target_eids():
        rows = bwm[bwm.eid == eid].sort_values("probe_name")
        if not rows.pid.isin(re_pids).any():
            continue
        taken = set(rows.pid) & set(re_pids)
        probes = []
        for row in rows.itertuples():
            source = row.pid if row.pid in re_pids else _substitute_pid(row.pid, taken, re_pids)
            taken.add(source)
            probes.append((row.probe_name, source))
        first = rows.iloc[0]
        rel_path = f"{first.lab}/Subjects/{first.subject}/{first.date}/{int(first.session_number):03d}"
        sessions.append(DemoSession(eid=eid, rel_path=rel_path, probes=tuple(probes)))
        if len(sessions) == n_sessions:
            return sessions
    raise ValueError(f"only {len(sessions)} demo sessions are available, {n_sessions} asked for")


def select_units(rng: np.random.Generator, pid: str, n_units: int, min_rate: float = 0.5) -> pd.DataFrame:
    """`n_units` real units of insertion `pid` firing above `min_rate` Hz, drawn with `rng`.

    Rows of `re_clusters()` for that pid (index: the real cluster id), in cluster-id order.
    """
    units = re_clusters().loc[pid]
    units = units[units.firing_rate > min_rate]
    if n_units > len(units):
        raise ValueError(f"insertion {pid} has {len(units)} units above {min_rate} Hz, {n_units} asked for")
    return units.iloc[np.sort(rng.choice(len(units), n_units, replace=False))]
