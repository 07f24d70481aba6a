"""QC of one fetched session: which units and trials to use, and the behaviour signals.

Writes units.parquet (every unit, `selected` flag), trials.parquet (every trial,
`exclusion_reason`), behaviour.parquet (wheel speed and whisker motion energy, long format) and
qc.json. A session with too few usable units or trials is *unusable*: a successful output whose
qc.json says why. Broken files raise SessionDataError naming the file.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mtm.config.sessions import QcConfig
from mtm.io import provenance, write_json, write_parquet
from mtm.ibl.behaviour import load_whisker_energy, load_wheel_speed
from mtm.ibl.local_session import open_session, read_manifest
from mtm.ibl.trials import EXCLUSION_REASONS, check_align_event, filter_trials, load_trials
from mtm.ibl.units import load_units, select_units

log = logging.getLogger(__name__)

QC_OUTPUTS = ("units", "trials", "behaviour", "qc")


def run_qc(manifest_path: str | Path, config: QcConfig, outputs: dict[str, str | Path]) -> dict[str, Any]:
    """QC one session. outputs: paths for 'units', 'trials', 'behaviour' (Parquet) and 'qc' (JSON)."""
    align_event = check_align_event(config.align_event)
    manifest = read_manifest(manifest_path)
    session = open_session(manifest)
    eid = session.eid
    warnings: list[str] = []

    units = load_units(session)
    units["selected"] = select_units(
        units, rule=config.unit_rule, min_firing_rate_hz=float(config.min_firing_rate_hz)
    ) if len(units) else np.zeros(0, dtype=bool)

    trials = load_trials(session, align_event)
    trials.insert(0, "trial_index", np.arange(len(trials), dtype=np.int64))
    trials["exclusion_reason"] = filter_trials(
        trials,
        min_rt=float(config.min_rt),
        max_rt=float(config.max_rt),
        max_trial_len=float(config.max_trial_len),
        exclude_no_choice=bool(config.exclude_no_choice),
        align_event=align_event,
    ).to_numpy()
    trials["keep"] = trials["exclusion_reason"].eq("")

    wheel = load_wheel_speed(session, warnings)
    whisker = load_whisker_energy(session, warnings)
    behaviour = _behaviour_table(wheel, whisker)

    n_units, n_trials = int(units["selected"].sum()), int(trials["keep"].sum())
    min_units, min_trials = int(config.min_units), int(config.min_trials)
    reasons = []
    if not manifest["probes"]:
        reasons.append(no_sorting_reason(manifest))
    elif n_units < min_units:
        reasons.append(f"{n_units} selected units < min_units {min_units}")
    if len(trials) == 0:
        reasons.append("no trials table")
    elif n_trials < min_trials:
        reasons.append(f"{n_trials} usable trials < min_trials {min_trials}")
    verdict = dict(
        eid=eid,
        usable=not reasons,
        reason="; ".join(reasons),
        n_units_total=len(units),
        n_units_selected=n_units,
        n_trials_total=len(trials),
        n_trials_kept=n_trials,
        excluded_trials={r: int((trials["exclusion_reason"] == r).sum()) for r in EXCLUSION_REASONS},
        probes=[p["name"] for p in manifest["probes"]],
        spike_sorting=[{k: p[k] for k in ("collection", "revision")} for p in manifest["probes"]],
        wheel=wheel is not None,
        whisker_camera=whisker[2] if whisker else None,
        warnings=warnings,
        regions=sorted(set(units.loc[units["selected"], "beryl"])) if len(units) else [],
    )
    meta = provenance(eid, config=dataclasses.asdict(config))
    write_parquet(outputs["units"], pa.Table.from_pandas(units, preserve_index=False), {"provenance": meta})
    write_parquet(outputs["trials"], pa.Table.from_pandas(trials, preserve_index=False), {"provenance": meta})
    write_parquet(outputs["behaviour"], behaviour, {"provenance": meta})
    write_json(outputs["qc"], {**verdict, "provenance": meta})
    log.info("%s: %s", eid, "usable" if verdict["usable"] else f"unusable ({verdict['reason']})")
    return verdict


def no_sorting_reason(manifest: dict[str, Any]) -> str:
    """Why fetch chose no spike sorting: the configured one.spike_sorter, or the default
    preference, and the sortings the session has."""
    sorter = manifest.get("spike_sorter")
    wanted = f"one.spike_sorter {sorter!r}" if sorter else "iblsorter, pykilosort or alf/probeXX (one.spike_sorter: null)"
    found = ", ".join(manifest.get("sortings_found") or []) or "none"
    return f"no spike sorting by {wanted}; the session has: {found}"


def _behaviour_table(wheel, whisker) -> pa.Table:
    """Long format: signal ('wheel_speed' rad/s, 'whisker_motion_energy' a.u.), times (s), value."""
    parts = []
    if wheel is not None:
        parts.append(("wheel_speed", *wheel))
    if whisker is not None:
        parts.append(("whisker_motion_energy", whisker[0], whisker[1]))
    frame = pd.DataFrame(
        {
            "signal": pd.Categorical(
                np.concatenate([np.repeat(name, len(t)) for name, t, _ in parts]) if parts else [],
                categories=["wheel_speed", "whisker_motion_energy"],
            ),
            "times": np.concatenate([t for _, t, _ in parts]).astype(np.float64) if parts else np.zeros(0),
            "value": np.concatenate([v for _, _, v in parts]).astype(np.float32) if parts else np.zeros(0, np.float32),
        }
    )
    return pa.Table.from_pandas(frame, preserve_index=False)


def read_behaviour(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{signal: (times, values)} from a behaviour.parquet."""
    frame = pd.read_parquet(path)
    return {
        str(name): (group["times"].to_numpy(), group["value"].to_numpy())
        for name, group in frame.groupby("signal", observed=True)
    }
