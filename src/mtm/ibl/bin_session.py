"""The bin stage: QC'd units and trials of one session -> binned.parquet.

Each probe is binned on its own (spikes of one probe are already sorted in time) and the unit
axes are concatenated, so merging probes never re-sorts tens of millions of spikes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtm.binning import bin_signal, bin_spikes
from mtm.config.sessions import BinningConfig
from mtm.io import provenance
from mtm.ibl.errors import SessionDataError
from mtm.ibl.local_session import open_session, read_manifest
from mtm.ibl.qc import read_behaviour
from mtm.ibl.trials import signed_contrast
from mtm.ibl.units import load_spikes
from mtm.session import BEHAVIOUR_SIGNALS, write_session
from mtm.splits import check_fractions, split_trials

log = logging.getLogger(__name__)


def bin_session(
    *,
    manifest: str | Path,
    units: str | Path,
    trials: str | Path,
    behaviour: str | Path,
    qc: str | Path,
    config: BinningConfig,
    output: str | Path,
    truth: str | Path | None = None,
) -> None:
    """Bin one session's kept trials and selected units; write `output` (see mtm.session)."""
    params = config.grid()
    seed = int(config.split_seed)
    fractions = check_fractions(config.split_fractions).tolist()
    verdict = json.loads(Path(qc).read_text())
    man = read_manifest(manifest)
    eid = man["eid"]
    unit_table = pd.read_parquet(units)
    trial_table = pd.read_parquet(trials)
    if params["align_event"] not in trial_table:
        raise SessionDataError(
            eid, str(trials), f"no column {params['align_event']!r} (binning.align_event): qc wrote it for another "
            "binning; rerun qc with this config",
        )  # fmt: skip
    if verdict["usable"]:
        unit_table = unit_table[unit_table["selected"]].reset_index(drop=True)
        trial_table = trial_table[trial_table["keep"]].reset_index(drop=True)
    else:  # an unusable session still gets a (zero-trial) file, so aggregates can read its verdict
        unit_table, trial_table = unit_table.iloc[:0], trial_table.iloc[:0]

    align = trial_table[params["align_event"]].to_numpy(float)
    window, bin_size, nb = tuple(params["window"]), params["bin_size"], params["n_bins"]
    session = open_session(man)
    blocks = []
    for probe in man["probes"] if len(trial_table) else []:
        probe_units = unit_table[unit_table["probe"] == probe["name"]]
        times, clusters = load_spikes(session, probe["name"])
        rows = probe_units["cluster_id"].to_numpy()
        lookup = np.full(max(int(clusters.max(initial=0)), int(rows.max(initial=0))) + 1, -1, dtype=np.int64)
        lookup[rows] = np.arange(len(rows))  # cluster row -> unit column, -1 for unselected clusters
        blocks.append(bin_spikes(times, lookup[clusters], len(probe_units), align, window=window, bin_size=bin_size))
    # qc lists units probe by probe in manifest order, the order in which the blocks are concatenated
    counts = (
        np.concatenate(blocks, axis=2) if blocks else np.zeros((len(trial_table), nb, len(unit_table)), np.uint8)
    )

    signals = read_behaviour(behaviour)
    binned_behaviour = {
        name: bin_signal(*signals[name], align, window=window, bin_size=bin_size, max_gap=1.0)
        if name in signals and len(trial_table)
        else np.full((len(trial_table), nb), np.nan, np.float32)
        for name in BEHAVIOUR_SIGNALS
    }

    per_trial = pd.DataFrame(
        {
            "trial_index": trial_table["trial_index"].to_numpy(np.int64),
            "split": split_trials(eid, len(trial_table), seed=seed, fractions=fractions),
            "align_time": align,
            "choice": trial_table["choice"].to_numpy().astype(np.int8),
            "block": trial_table["probabilityLeft"].to_numpy(np.float32),
            "reward": (trial_table["feedbackType"].to_numpy() == 1).astype(np.int8),
            "signed_contrast": signed_contrast(trial_table).astype(np.float32),
            "reaction_time": (trial_table["firstMovement_times"] - trial_table["stimOn_times"]).to_numpy(np.float32),
        }
    )
    true_rate = load_truth(truth, eid, per_trial["trial_index"].to_numpy(), unit_table, params) if truth else None
    meta = dict(
        provenance=provenance(
            eid,
            config={"binning": params, "splits": {"seed": seed, "fractions": fractions}},
            source=man["mode"],
            spike_sorting=[{k: p[k] for k in ("collection", "revision")} for p in man["probes"]],
        ),
        binning=params,
        session=dict(
            usable=verdict["usable"],
            reason=verdict["reason"],
            whisker_camera=verdict.get("whisker_camera"),
            wheel=verdict.get("wheel"),
            split_seed=seed,
            split_fractions=fractions,
        ),
    )
    write_session(
        output, trials=per_trial, counts=counts, behaviour=binned_behaviour, units=unit_table, meta=meta, true_rate=true_rate
    )
    log.info("%s: %s trials x %s bins x %s units", eid, *counts.shape)


def load_truth(path: str | Path, eid: str, trial_index: np.ndarray, units: pd.DataFrame, params: dict[str, Any]) -> np.ndarray | None:
    """The demo's generating rates (Hz) for these trials and units, (n_trials, n_bins, n_units).

    None (with a warning) when the truth was written for another binning than `params`.
    """
    truth = np.load(path, allow_pickle=False)
    same = (
        str(truth["align_event"]) == params["align_event"]
        and np.allclose(truth["window"], params["window"])
        and np.isclose(float(truth["bin_size"]), params["bin_size"])
    )
    if not same:
        log.warning("%s: demo truth was written for another binning; no true rates attached", eid)
        return None
    row_of_trial = {int(t): i for i, t in enumerate(truth["trial_index"])}
    row_of_unit = {(str(p), int(c)): i for i, (p, c) in enumerate(zip(truth["probe"], truth["cluster_id"]))}
    trial_rows = np.array([row_of_trial[int(t)] for t in trial_index], dtype=np.int64)
    unit_rows = np.array([row_of_unit[(p, int(c))] for p, c in zip(units["probe"], units["cluster_id"])], dtype=np.int64)
    return truth["rates"][trial_rows][:, :, unit_rows]
