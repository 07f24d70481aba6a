"""Write synthetic IBL sessions as a local ONE cache in IBL's ALF layout, plus their true rates.

Per session `<cache>/<lab>/Subjects/<subject>/<date>/<NNN>/`:

    alf/_ibl_trials.table.pqt, _ibl_trials.goCueTrigger_times.npy, _ibl_trials.stimOff_times.npy
    alf/_ibl_wheel.position.npy, _ibl_wheel.timestamps.npy
    alf/_ibl_{left,right}Camera.times.npy, alf/{left,right}Camera.ROIMotionEnergy.npy
    alf/<probe>/pykilosort/[#2024-05-06#/]spikes.*, clusters.*, channels.*

In every second session the spike sorting is in the `#2024-05-06#` revision (the default one)
and an older, different sort sits in the unrevisioned folder. The ground truth of a session is
`<truth_dir>/<eid>.npz`: the mean true rate of every unit of the default sorts in each bin of
each trial (see `write_demo_session`). Everything is a fixed function of (seed, eid).
"""

from __future__ import annotations

import functools
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from mtm.demo.behaviour import Behaviour, simulate_behaviour
from mtm.demo.neural import UNITS_PER_CHUNK, binned_truth, build_rate_model, poisson_spikes
from mtm.demo.sessions import DemoSession, demo_sessions, re_channels, select_units
from mtm.demo.signals import GRID_DT
from mtm.demo.sorting import make_sorting, older_sorting, write_sorting
from mtm.demo.task import Task, simulate_task
from mtm.ibl.one_cache import write_one_tables
from mtm.io import atomic_path

REVISION = "2024-05-06"
SPIKE_SORTER = "pykilosort"
BASE_RATE_RANGE = (0.5, 60.0)  # Hz, clip of the real units' firing rates


@functools.cache
def _beryl():
    from iblatlas.regions import BrainRegions  # slow-ish import, only needed here

    return BrainRegions()


def _write_behaviour(alf: Path, task: Task, behaviour: Behaviour) -> None:
    alf.mkdir(parents=True, exist_ok=True)
    task.table.to_parquet(alf / "_ibl_trials.table.pqt", index=False)
    np.save(alf / "_ibl_trials.goCueTrigger_times.npy", task.go_cue_trigger)
    np.save(alf / "_ibl_trials.stimOff_times.npy", task.stim_off)
    np.save(alf / "_ibl_wheel.position.npy", behaviour.wheel_position)
    np.save(alf / "_ibl_wheel.timestamps.npy", behaviour.wheel_timestamps)
    for side in ("left", "right"):
        np.save(alf / f"_ibl_{side}Camera.times.npy", behaviour.camera_times[side])
        np.save(alf / f"{side}Camera.ROIMotionEnergy.npy", behaviour.motion_energy[side])


def _save_truth(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)  # a file object, so numpy does not append '.npz' to the tmp name


def write_demo_session(
    cache_dir: str | Path,
    truth_dir: str | Path,
    session: DemoSession,
    *,
    n_units: int = 128,
    n_trials: int = 400,
    seed: int = 0,
    revised: bool = False,
    align_event: str = "stimOn_times",
    window: tuple[float, float] = (-0.5, 1.5),
    bin_size: float = 0.02,
) -> None:
    """Write one session's ALF files under `cache_dir` and its truth to `truth_dir/<eid>.npz`.

    `n_units` are split over the session's probes (the first probes get the remainder).
    `revised`: put the sorts in the `#2024-05-06#` revision and an older sort beside them.
    The session folder is replaced as a whole. The ONE tables are not touched: call
    `write_one_tables` (or `build_demo_cache`) afterwards.

    Truth arrays: rates [n_trials, n_bins, n_units] float32 Hz, the mean true rate in bin k =
    [t0 + k bin_size, t0 + (k+1) bin_size) with t0 = trials[align_event] + window[0], NaN
    where the align time is NaN; trial_index [n_trials] int64; probe [n_units] str; cluster_id
    [n_units] int64, the row in that probe's default-revision clusters.*; align_event, window,
    bin_size as given.
    """
    streams = np.random.SeedSequence([seed, uuid.UUID(session.eid).int]).spawn(6)
    task_rng, behaviour_rng, unit_rng, model_rng, spike_rng, sorting_rng = map(np.random.default_rng, streams)

    task = simulate_task(task_rng, n_trials)
    n_steps = int(np.ceil(task.duration / GRID_DT))
    behaviour = simulate_behaviour(behaviour_rng, task, n_steps)

    per_probe = np.array_split(np.arange(n_units), len(session.probes))
    units = [select_units(unit_rng, pid, len(idx)) for (_, pid), idx in zip(session.probes, per_probe)]
    all_units = pd.concat(units)
    regions = _beryl().acronym2acronym(all_units.acronym.to_numpy(), mapping="Beryl")
    base_rate = np.clip(all_units.firing_rate.to_numpy(np.float64), *BASE_RATE_RANGE)
    model = build_rate_model(model_rng, task, behaviour, regions, base_rate)

    align = task.table[align_event].to_numpy()
    spikes, truth = [], []
    for start in range(0, n_units, UNITS_PER_CHUNK):
        cum = model.cumulative_intensity(slice(start, start + UNITS_PER_CHUNK))
        spikes += poisson_spikes(spike_rng, cum)
        truth.append(binned_truth(cum, align, window, bin_size))

    session_dir = Path(cache_dir) / session.rel_path
    shutil.rmtree(session_dir, ignore_errors=True)  # no stale files from an earlier build
    _write_behaviour(session_dir / "alf", task, behaviour)
    for (probe, pid), idx, probe_units in zip(session.probes, per_probe, units):
        sorting = make_sorting(sorting_rng, [spikes[i] for i in idx], probe_units)
        channels = re_channels().loc[pid].sort_index()
        folder = session_dir / "alf" / probe / SPIKE_SORTER
        if revised:
            write_sorting(folder, older_sorting(sorting_rng, sorting), channels)
            folder = folder / f"#{REVISION}#"
        write_sorting(folder, sorting, channels)

    _save_truth(
        Path(truth_dir) / f"{session.eid}.npz",
        rates=np.concatenate(truth, axis=2),
        trial_index=np.arange(n_trials, dtype=np.int64),
        probe=np.concatenate([[probe] * len(idx) for (probe, _), idx in zip(session.probes, per_probe)]),
        cluster_id=np.concatenate([np.arange(len(idx), dtype=np.int64) for idx in per_probe]),
        align_event=np.array(align_event),
        window=np.array(window, dtype=np.float64),
        bin_size=np.array(bin_size, dtype=np.float64),
    )


def build_demo_cache(
    cache_dir: str | Path,
    truth_dir: str | Path,
    *,
    n_sessions: int = 6,
    n_units: int = 128,
    n_trials: int = 400,
    seed: int = 0,
    align_event: str = "stimOn_times",
    window: tuple[float, float] = (-0.5, 1.5),
    bin_size: float = 0.02,
) -> list[str]:
    """Write `n_sessions` demo sessions (see the module docstring) and their ONE tables.

    The ONE tables (sessions.pqt, datasets.pqt, with md5 hashes) are written last and
    atomically, so a cache with tables is complete. Returns the eids, in target-list order.
    """
    sessions = demo_sessions(n_sessions)
    for i, session in enumerate(sessions):
        write_demo_session(
            cache_dir, truth_dir, session, n_units=n_units, n_trials=n_trials, seed=seed,
            revised=i % 2 == 1, align_event=align_event, window=window, bin_size=bin_size,
        )  # fmt: skip
    write_one_tables(cache_dir, {s.rel_path: s.eid for s in sessions}, hash_files=True)
    return [s.eid for s in sessions]
