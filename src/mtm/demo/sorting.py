"""A probe's spike sorting as IBL's pykilosort ALF datasets (spikes.*, clusters.*, channels.*)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

METRIC_COLUMNS = ["cluster_id", "firing_rate", "spike_count", "amp_median", "noise_cutoff", "slidingRP_viol", "label"]
N_CHANNELS = 384


@dataclass
class Sorting:
    """One spike sorting of one probe.

    times: [n_spikes] float64 s, sorted; clusters: [n_spikes] uint32, row into `units`;
    amps: [n_spikes] float32 V; depths: [n_spikes] float32 µm.
    units: [n_clusters] real-unit rows (columns channels, depths, amp_median, noise_cutoff,
        slidingRP_viol, label) in clusters.* order.
    uuids: [n_clusters] uuid strings.
    """

    times: np.ndarray
    clusters: np.ndarray
    amps: np.ndarray
    depths: np.ndarray
    units: pd.DataFrame
    uuids: list[str]

    def metrics(self) -> pd.DataFrame:
        """clusters.metrics table [n_clusters]: counts and rates from the spikes, QC from the units.

        firing_rate = spike_count / (last spike - first spike of the probe), in Hz.
        """
        count = np.bincount(self.clusters, minlength=len(self.units))
        duration = self.times[-1] - self.times[0] if len(self.times) > 1 else np.nan
        table = self.units[["amp_median", "noise_cutoff", "slidingRP_viol", "label"]].reset_index(drop=True)
        table.insert(0, "cluster_id", np.arange(len(self.units), dtype=np.int64))
        table.insert(1, "firing_rate", count / duration)
        table.insert(2, "spike_count", count.astype(np.int64))
        return table[METRIC_COLUMNS]


def random_uuids(rng: np.random.Generator, n: int) -> list[str]:
    """`n` version-4 uuid strings drawn from `rng` (so reproducible, unlike uuid.uuid4)."""
    return [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(n)]


def make_sorting(rng: np.random.Generator, unit_spikes: list[np.ndarray], units: pd.DataFrame) -> Sorting:
    """Merge per-unit spike times [n_units lists] into a time-sorted sorting of `units`.

    Amplitudes scatter around each unit's real median amplitude, depths around its real depth.
    """
    counts = np.array([len(s) for s in unit_spikes])
    clusters = np.repeat(np.arange(len(units), dtype=np.uint32), counts)
    times = np.concatenate(unit_spikes) if unit_spikes else np.zeros(0)
    order = np.argsort(times, kind="stable")
    n = len(times)
    amps = units.amp_median.to_numpy()[clusters] * rng.lognormal(0.0, 0.25, n)
    depths = units.depths.to_numpy()[clusters] + rng.normal(0.0, 8.0, n)
    return Sorting(
        times=times[order],
        clusters=clusters[order],
        amps=amps[order].astype(np.float32),
        depths=depths[order].astype(np.float32),
        units=units,
        uuids=random_uuids(rng, len(units)),
    )


def older_sorting(rng: np.random.Generator, new: Sorting) -> Sorting:
    """A plausible earlier sort of the same recording, different from `new` in every dataset.

    It misses 15% of the clusters and 5% of the spikes, its spike times differ by a fraction of
    a millisecond, its amplitudes are scaled, and its QC metrics and labels are perturbed.
    """
    kept = np.sort(rng.choice(len(new.units), int(round(0.85 * len(new.units))), replace=False))
    new_index = np.full(len(new.units), -1, dtype=np.int64)
    new_index[kept] = np.arange(len(kept))
    spike_ok = (new_index[new.clusters] >= 0) & (rng.random(len(new.times)) > 0.05)
    times = new.times[spike_ok] + rng.normal(0.0, 3e-4, spike_ok.sum())
    order = np.argsort(times, kind="stable")
    units = new.units.iloc[kept].copy()
    units["noise_cutoff"] *= rng.uniform(0.8, 1.2, len(units))
    flip = rng.random(len(units)) < 0.1
    units.loc[flip, "label"] = 1.0 - units.loc[flip, "label"]
    return replace(
        new,
        times=times[order],
        clusters=new_index[new.clusters[spike_ok]][order].astype(np.uint32),
        amps=(new.amps[spike_ok][order] * 1.1).astype(np.float32),
        depths=new.depths[spike_ok][order],
        units=units,
        uuids=random_uuids(rng, len(units)),
    )


def write_sorting(folder: Path, sorting: Sorting, channels: pd.DataFrame) -> None:
    """Write the spikes, clusters and channels datasets of `sorting` into `folder`.

    `channels`: the 384 rows of the real insertion's channel table (x, y, z m, atlas_id,
    lateral_um, axial_um), in channel order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "spikes.times": sorting.times.astype(np.float64),
        "spikes.clusters": sorting.clusters.astype(np.uint32),
        "spikes.amps": sorting.amps.astype(np.float32),
        "spikes.depths": sorting.depths.astype(np.float32),
        "clusters.channels": sorting.units.channels.to_numpy(np.int64),
        "clusters.depths": sorting.units.depths.to_numpy(np.float64),
        "channels.brainLocationIds_ccf_2017": channels.atlas_id.to_numpy(np.int64),
        "channels.mlapdv": channels[["x", "y", "z"]].to_numpy(np.float64) * 1e6,  # m -> µm
        "channels.localCoordinates": channels[["lateral_um", "axial_um"]].to_numpy(np.float64),
        "channels.rawInd": np.arange(N_CHANNELS, dtype=np.int64),
    }
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
    sorting.metrics().to_parquet(folder / "clusters.metrics.pqt", index=False)
    pd.DataFrame({"uuids": sorting.uuids}).to_csv(folder / "clusters.uuids.csv", index=False)
