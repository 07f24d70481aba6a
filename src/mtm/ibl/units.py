"""Per-unit table for a session (all probes merged) and the unit-selection rule."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mtm.ibl.errors import SessionDataError
from mtm.ibl.local_session import LocalSession
from mtm.ibl.regions import AtlasStub, region_labels

UNIT_RULES = ("all", "good")
CORRUPT_SORTING = "a corrupt file: download it again, or leave the session out of `sessions`"
UNIT_TABLE_COLUMNS = ("uuid", "probe", "cluster_id", "channel", "depth_um", "atlas_id", "allen", "beryl", "cosmos",
                      "label", "firing_rate", "n_spikes")  # fmt: skip


def select_units(units: pd.DataFrame, *, rule: str = "all", min_firing_rate_hz: float = 0.0) -> np.ndarray:
    """Boolean mask of the units to model.

    rule: 'all' (every cluster, as the MtM paper) or 'good' (IBL label == 1: passes the
    refractory-period, noise-cutoff and amplitude criteria). Units must also fire at least
    `min_firing_rate_hz` (column `firing_rate`, Hz over the recording).
    """
    if rule not in UNIT_RULES:
        raise ValueError(f"unit rule must be one of {UNIT_RULES}, not {rule!r}")
    keep = np.ones(len(units), dtype=bool)
    if rule == "good":
        # label is the mean of three 0/1 criteria, so "all passed" is exactly 1
        keep &= np.isclose(units["label"].to_numpy(dtype=float), 1.0)
    if min_firing_rate_hz > 0:
        keep &= units["firing_rate"].to_numpy(dtype=float) >= min_firing_rate_hz
    return keep


def load_units(session: LocalSession) -> pd.DataFrame:
    """All units of all probes, one row each, with QC metrics and region labels.

    Loaded with ibllib's SpikeSortingLoader (eid + probe name, no pid, no Allen volumes).
    Columns: uuid, probe, cluster_id (row of the probe's clusters.*), channel, depth_um, atlas_id,
    allen, beryl, cosmos, label, firing_rate (Hz), n_spikes, amp_median (V), and the other metrics.
    """
    from brainbox.io.one import SpikeSortingLoader

    frames = []
    for probe in session.manifest["probes"]:
        sorter = probe["collection"].split("/")[2] if probe["collection"].count("/") == 2 else ""
        loader = SpikeSortingLoader(one=session.one, eid=session.eid, pname=probe["name"], atlas=AtlasStub())
        where = f"{probe['collection']} (revision {probe['revision'] or 'none'})"
        try:
            spikes, clusters, channels = loader.load_spike_sorting(spike_sorter=sorter)
        except Exception as err:
            raise SessionDataError(session.eid, where, f"spike sorting failed to load: {type(err).__name__}: {err}") from None
        check_spike_times(session.eid, spike_times_file(session, probe["collection"]), spikes["times"])
        frames.append(_probe_units(session.eid, probe, where, spikes, clusters, channels))
    if not frames:
        return pd.DataFrame(columns=list(UNIT_TABLE_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def _probe_units(eid: str, probe: dict[str, Any], where: str, spikes, clusters, channels) -> pd.DataFrame:
    from brainbox.io.one import SpikeSortingLoader

    n_clusters = clusters["channels"].size
    if spikes["times"].size != spikes["clusters"].size:
        raise SessionDataError(eid, f"{where}/spikes.*", f"spikes.times has {spikes['times'].size} entries, spikes.clusters {spikes['clusters'].size}")
    if spikes["clusters"].size and int(spikes["clusters"].max()) >= n_clusters:
        raise SessionDataError(eid, f"{where}/spikes.clusters.npy", f"cluster index {int(spikes['clusters'].max())} >= {n_clusters} clusters")
    if "brainLocationIds_ccf_2017" not in channels and "atlas_id" not in channels:
        raise SessionDataError(eid, f"{where}/channels.brainLocationIds_ccf_2017.npy", "no histology (channel brain locations) for this probe")
    n_spikes = np.bincount(spikes["clusters"].astype(np.int64), minlength=n_clusters)
    merged = SpikeSortingLoader.merge_clusters(spikes, clusters, channels)
    units = pd.DataFrame({k: v for k, v in merged.items() if np.ndim(v) == 1 and len(v) == n_clusters})
    duration = float(spikes["times"][-1] - spikes["times"][0]) if spikes["times"].size > 1 else np.nan
    if "firing_rate" not in units:
        units["firing_rate"] = n_spikes / duration
    labels = region_labels(units["atlas_id"].to_numpy())
    out = pd.DataFrame(
        {
            "uuid": units["uuids"].astype(str) if "uuids" in units else [f"{probe['name']}-{i}" for i in range(n_clusters)],
            "probe": probe["name"],
            "cluster_id": np.arange(n_clusters, dtype=np.int64),
            "channel": units["channels"].astype(np.int64),
            "depth_um": units["depths"].astype(np.float32),
            "atlas_id": units["atlas_id"].astype(np.int64),
            **labels,
            "label": units["label"].astype(float) if "label" in units else np.nan,
            "firing_rate": units["firing_rate"].astype(np.float32),
            "n_spikes": n_spikes,
        }
    )
    extra = [c for c in ("amp_median", "noise_cutoff", "slidingRP_viol", "max_confidence", "presence_ratio") if c in units]
    return pd.concat([out, units[extra].reset_index(drop=True)], axis=1)


def spike_times_file(session: LocalSession, collection: str) -> str:
    """The relative path of a sorting's spikes.times.npy, revision folder included."""
    return session.find(f"{collection}/*spikes.times.npy") or f"{collection}/spikes.times.npy"


def check_spike_times(eid: str, rel_path: str, times: np.ndarray) -> None:
    """SessionDataError naming `rel_path` unless the spike times (s) are finite and sorted
    ascending, as binning needs them. O(n_spikes), a bool per spike of working memory."""
    if not np.isfinite(times).all():
        bad = np.flatnonzero(~np.isfinite(times))
        raise SessionDataError(eid, rel_path, f"{bad.size} spike times are NaN or infinite (the first at index {bad[0]}); "
                               f"{CORRUPT_SORTING}")  # fmt: skip
    decreasing = times[1:] < times[:-1]
    if decreasing.any():
        first = int(np.argmax(decreasing)) + 1
        raise SessionDataError(eid, rel_path, f"spike times are not sorted ascending ({int(decreasing.sum())} decreases, "
                               f"the first at index {first}); {CORRUPT_SORTING}")  # fmt: skip


def load_spikes(session: LocalSession, probe: str) -> tuple[np.ndarray, np.ndarray]:
    """(times s float64 sorted, cluster row uint32) of one probe, loading only those two files."""
    collection = next(p["collection"] for p in session.manifest["probes"] if p["name"] == probe)
    try:
        spikes = session.one.load_object(session.eid, "spikes", collection=collection, attribute=["times", "clusters"])
    except Exception as err:
        raise SessionDataError(session.eid, f"{collection}/spikes.*", f"{type(err).__name__}: {err}") from None
    times, clusters = np.asarray(spikes["times"]), np.asarray(spikes["clusters"])
    if times.size != clusters.size:
        raise SessionDataError(session.eid, f"{collection}/spikes.*", f"spikes.times has {times.size} entries, spikes.clusters {clusters.size}")
    check_spike_times(session.eid, spike_times_file(session, collection), times)
    return times, clusters
