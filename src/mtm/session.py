"""The binned session file (`binned.parquet`) and its fast loader.

One row per kept trial. Columns:
    trial_index      int64    row of the session's trials table
    split            string   'train' | 'val' | 'test' (a function of eid and seed only)
    align_time       float64  s, session clock, the alignment event of the trial
    choice           int8     -1 / +1 (IBL: +1 is the correct response to a left stimulus)
    block            float32  probabilityLeft of the block (0.2, 0.5, 0.8)
    reward           int8     1 if rewarded (feedbackType == 1)
    signed_contrast  float32  contrastRight - contrastLeft, in [-1, 1]
    reaction_time    float32  s, firstMovement_times - stimOn_times
    counts           fixed_size_list<uint8|uint16>[n_bins * n_units]  spike counts, (bin, unit) C order
    wheel_speed      fixed_size_list<float32>[n_bins]   rad/s at bin centres (NaN: no data)
    whisker_motion_energy fixed_size_list<float32>[n_bins]  a.u. at bin centres (NaN: no data)
    true_rate        fixed_size_list<float32>[n_bins * n_units]  Hz, demo only: the generating rates
Schema metadata (JSON under `mtm.*`): provenance, binning, units (one record per unit, column
order), session (usable, reason, ...).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mtm.io import CorruptFileError, read_parquet_metadata, write_parquet

TRIAL_COLUMNS = {
    "trial_index": pa.int64(),
    "split": pa.string(),
    "align_time": pa.float64(),
    "choice": pa.int8(),
    "block": pa.float32(),
    "reward": pa.int8(),
    "signed_contrast": pa.float32(),
    "reaction_time": pa.float32(),
}
BEHAVIOUR_SIGNALS = ("wheel_speed", "whisker_motion_energy")
UNIT_COLUMNS = ("uuid", "probe", "cluster_id", "allen", "beryl", "cosmos", "depth_um", "firing_rate", "label")


@dataclass
class SessionHeader:
    """What a binned session is, without its arrays. Reading one takes milliseconds, so a run
    can list many sessions cheaply.

    trials: per-trial table (TRIAL_COLUMNS); units: per-unit table (UNIT_COLUMNS)
    meta: the file's `mtm.*` metadata (provenance, binning, units, session)
    """

    trials: pd.DataFrame
    units: pd.DataFrame
    meta: dict[str, Any]

    @property
    def eid(self) -> str:
        return self.meta["provenance"]["eid"]

    @property
    def usable(self) -> bool:
        return bool(self.meta["session"]["usable"])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_trials, n_bins, n_units) of the session's counts."""
        return len(self.trials), int(self.meta["binning"]["n_bins"]), len(self.units)

    @property
    def bin_size(self) -> float:
        return float(self.meta["binning"]["bin_size"])

    @property
    def pre_event_bins(self) -> int:
        """Bins that end at or before the alignment event (the window's start is negative)."""
        binning = self.meta["binning"]
        before = -float(binning["window"][0]) / self.bin_size
        return int(min(max(np.floor(before + 1e-9), 0), int(binning["n_bins"])))

    @property
    def split(self) -> np.ndarray:
        return self.trials["split"].to_numpy()


@dataclass
class SessionData(SessionHeader):
    """One binned session as arrays: the header's tables, and

    counts: (n_trials, n_bins, n_units) uint8/uint16 spike counts
    wheel_speed, whisker_motion_energy: (n_trials, n_bins) float32, NaN where missing
    true_rate: (n_trials, n_bins, n_units) float32 Hz, or None (real data)
    """

    counts: np.ndarray
    wheel_speed: np.ndarray
    whisker_motion_energy: np.ndarray
    true_rate: np.ndarray | None

    def regions(self, level: str = "beryl") -> np.ndarray:
        """Region acronym of each unit, (n_units,), at level 'allen', 'beryl' or 'cosmos'."""
        return self.units[level].to_numpy()


def write_session(
    path: str | Path,
    *,
    trials: pd.DataFrame,
    counts: np.ndarray,
    behaviour: dict[str, np.ndarray],
    units: pd.DataFrame,
    meta: dict[str, Any],
    true_rate: np.ndarray | None = None,
) -> None:
    """Write a binned session atomically. Shapes as in SessionData; `trials` holds TRIAL_COLUMNS."""
    n_trials, n_bins, n_units = counts.shape
    if len(trials) != n_trials or len(units) != n_units:
        raise ValueError(f"counts {counts.shape} disagree with {len(trials)} trials and {len(units)} units")
    columns = {
        name: pa.array(trials[name].to_numpy().astype(str) if kind == pa.string() else trials[name].to_numpy(), type=kind)
        for name, kind in TRIAL_COLUMNS.items()
    }
    columns["counts"] = _fixed_lists(counts, n_bins * n_units)
    for name in BEHAVIOUR_SIGNALS:
        columns[name] = _fixed_lists(behaviour[name].astype(np.float32), n_bins)
    if true_rate is not None:
        columns["true_rate"] = _fixed_lists(true_rate.astype(np.float32), n_bins * n_units)
    unit_records = units.loc[:, list(UNIT_COLUMNS)].to_dict(orient="list")
    write_parquet(path, pa.table(columns), {**meta, "units": unit_records})


def _fixed_lists(array: np.ndarray, width: int) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(array).reshape(-1))
    if width == 0:  # a session without units: Arrow has no zero-width fixed-size lists
        return pa.array([[]] * len(array), type=pa.list_(flat.type))
    return pa.FixedSizeListArray.from_arrays(flat, width)


def load_session(path: str | Path, *, true_rate: bool = True) -> SessionData:
    """Read a binned session into arrays (about 0.2 s for 700 units x 800 trials).
    CorruptFileError, naming the file, when it cannot be read as one."""
    with _reading(path):
        meta = read_parquet_metadata(path)
        n_bins = int(meta["binning"]["n_bins"])
        units = pd.DataFrame(meta["units"])
        n_units = len(units)
        names = pq.read_schema(path).names
        columns = [c for c in names if true_rate or c != "true_rate"]
        table = pq.read_table(path, columns=columns, page_checksum_verification=True)
        n_trials = table.num_rows
        return SessionData(
            counts=_unpack(table, "counts", (n_trials, n_bins, n_units)),
            wheel_speed=_unpack(table, "wheel_speed", (n_trials, n_bins)),
            whisker_motion_energy=_unpack(table, "whisker_motion_energy", (n_trials, n_bins)),
            true_rate=_unpack(table, "true_rate", (n_trials, n_bins, n_units)) if "true_rate" in columns else None,
            trials=table.select(list(TRIAL_COLUMNS)).to_pandas(),
            units=units,
            meta=meta,
        )


def read_session_header(path: str | Path) -> SessionHeader:
    with _reading(path):
        meta = read_parquet_metadata(path)
        trials = pq.read_table(path, columns=list(TRIAL_COLUMNS), page_checksum_verification=True).to_pandas()
        return SessionHeader(trials=trials, units=pd.DataFrame(meta["units"]), meta=meta)


def read_counts(path: str | Path) -> np.ndarray:
    """The session's spike counts alone, (n_trials, n_bins, n_units) uint8/uint16."""
    with _reading(path):
        meta = read_parquet_metadata(path)
        table = pq.read_table(path, columns=["counts"], page_checksum_verification=True)
        return _unpack(table, "counts", (table.num_rows, int(meta["binning"]["n_bins"]), len(meta["units"]["uuid"])))


@contextlib.contextmanager
def _reading(path: str | Path):
    """Turn what a damaged or foreign file raises while it is read as a binned session (Arrow's
    errors, ZSTD's OSError, missing metadata keys or columns, arrays of the wrong size) into a
    CorruptFileError naming it. A missing file stays a FileNotFoundError."""
    try:
        yield
    except FileNotFoundError:
        raise
    except KeyError as err:
        raise CorruptFileError(path, f"not a binned session: it lacks {err} (metadata or column)") from None
    except (OSError, ValueError, pa.ArrowException) as err:
        raise CorruptFileError(path, f"unreadable as a binned session ({type(err).__name__}: {err})") from None


def _unpack(table: pa.Table, name: str, shape: tuple[int, ...]) -> np.ndarray:
    flat = table.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(shape)


def load_model_session(model_dir: str | Path, binned_path: str | Path, eids: list[str]) -> SessionData:
    """The binned session a saved model (with layers for `eids`) is to be scored on; ValueError if
    the file holds another session."""
    session = load_session(binned_path)
    if session.eid not in eids:
        raise ValueError(f"{model_dir} holds the sessions {eids}, not {session.eid} ({binned_path})")
    return session
