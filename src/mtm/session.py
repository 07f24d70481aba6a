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
    counts           uint8|uint16 (n_bins, n_units)  spike counts
    wheel_speed      float32 (n_bins,)   rad/s at bin centres (NaN: no data)
    whisker_motion_energy float32 (n_bins,)  a.u. at bin centres (NaN: no data)
    true_rate        float32 (n_bins, n_units)  Hz, demo only: the generating rates
Schema metadata (JSON under `mtm.*`): provenance, binning, units (one record per unit, column
order), session (usable, reason, ...).

The array columns hold one `fixed_size_binary` value per trial: the bytes of its row (its
(bins, units) or (bins,) array, C order, little-endian), kept out of Parquet's dictionary
encoding and statistics and left to zstd. Their field metadata `mtm.array` records the dtype
(numpy's `str`, e.g. "|u1") and the shape of one row. Row groups hold about ROW_GROUP_BYTES of
counts each; a load decompresses them (READ_THREADS at a time) into arrays allocated whole, so
it costs about the decompression itself, and peaks at about 1.5x the arrays.
Files binned before this layout hold the arrays as `fixed_size_list` columns (one Parquet value,
with its own repetition level, per count): they still load, about 10x slower and at 15x the
arrays' memory; rerunning the bin rule rewrites them.
"""

from __future__ import annotations

import contextlib
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mtm.io import CorruptFileError, _json_default, atomic_path, read_parquet_metadata

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
ARRAY_METADATA = b"mtm.array"  # field metadata of an array column: {"dtype": ..., "shape": [...]} of one row
# zstd level of the counts (the other columns take Arrow's default, 1). For 800 trials x 100 bins
# x 700 units, level 9 packs the 56 MB into 7.5 MB (9.1 MB at level 1) and decompresses them in
# 65 ms instead of 100: the bin stage pays 2.3 s once, training gains at every read of the file.
COUNTS_ZSTD_LEVEL = 9
# Counts per Parquet row group (of whole trials). A load holds the arrays it returns and, per
# reading thread, a row group's buffers (see `_read`): with 2 MB (29 of 800 trials of 700 units)
# and two threads it peaks at about 1.5x the arrays, with 8 MB at about 2.2x; smaller groups
# would slow the header reads, which read the trial columns across all row groups.
ROW_GROUP_BYTES = 2 << 20
# Row groups decoded side by side (Arrow and numpy release the GIL while they decompress and
# copy): two threads read 800 x 100 x 700 counts in about 0.6 of the time of one, on 2 cores.
# Each more holds one more row group, for little gain where a prefetch (mtm.data.CountsCache)
# already hides the read behind training.
READ_THREADS = 2


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
    fields, columns = [], []
    for name, kind in TRIAL_COLUMNS.items():
        values = trials[name].to_numpy()
        fields.append(pa.field(name, kind))
        columns.append(pa.array(values.astype(str) if kind == pa.string() else values, type=kind))
    arrays = {"counts": counts, **{name: behaviour[name].astype(np.float32) for name in BEHAVIOUR_SIGNALS}}
    if true_rate is not None:
        arrays["true_rate"] = true_rate.astype(np.float32)
    for name, array in arrays.items():
        field, column = _array_column(name, array)
        fields.append(field)
        columns.append(column)
    unit_records = units.loc[:, list(UNIT_COLUMNS)].to_dict(orient="list")
    metadata = {f"mtm.{k}": json.dumps(v, default=_json_default) for k, v in {**meta, "units": unit_records}.items()}
    table = pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=metadata))
    # As mtm.io.write_parquet (zstd, page checksums, atomic), with the array columns kept out of
    # Parquet's dictionary encoding and statistics: a dictionary of 70 kB values is abandoned
    # after a page but still doubles the read time, and the min and max of each would be stored
    # whole in the footer, which every header read parses.
    row_bytes = max(1, n_bins * n_units * counts.itemsize)
    with atomic_path(path) as tmp:
        pq.write_table(
            table, tmp, row_group_size=max(1, ROW_GROUP_BYTES // row_bytes), compression="zstd",
            compression_level={"counts": COUNTS_ZSTD_LEVEL}, write_page_checksum=True,
            use_dictionary=list(TRIAL_COLUMNS), write_statistics=list(TRIAL_COLUMNS),
        )  # fmt: skip


def _array_column(name: str, array: np.ndarray) -> tuple[pa.Field, pa.Array]:
    """(n_trials, *row_shape) array -> a non-null column of one fixed_size_binary value per trial
    (its row's bytes in C order, little-endian), with the dtype and row shape in its metadata."""
    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    n_rows, row_shape = len(array), array.shape[1:]
    width = math.prod(row_shape) * array.itemsize
    info = {ARRAY_METADATA: json.dumps({"dtype": array.dtype.str, "shape": list(row_shape)})}
    if width == 0:  # a session without units: Parquet has no zero-width fixed-size binary
        return pa.field(name, pa.binary(), nullable=False, metadata=info), pa.array([b""] * n_rows, pa.binary())
    values = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n_rows, [None, pa.py_buffer(array)])
    return pa.field(name, pa.binary(width), nullable=False, metadata=info), values


def load_session(path: str | Path, *, true_rate: bool = True) -> SessionData:
    """Read a binned session into arrays (about 60 ms for 800 trials x 100 bins x 700 units on
    2 cores, peaking at about 1.5x the arrays). CorruptFileError, naming the file, when it
    cannot be read as one."""
    with _reading(path):
        meta = read_parquet_metadata(path)
        n_bins = int(meta["binning"]["n_bins"])
        units = pd.DataFrame(meta["units"])
        n_units = len(units)
        names = pq.read_schema(path).names
        shapes = {"counts": (n_bins, n_units), **{name: (n_bins,) for name in BEHAVIOUR_SIGNALS}}
        if true_rate and "true_rate" in names:
            shapes["true_rate"] = (n_bins, n_units)
        trials, arrays = _read(path, list(TRIAL_COLUMNS), shapes)
        return SessionData(
            counts=arrays["counts"],
            wheel_speed=arrays["wheel_speed"],
            whisker_motion_energy=arrays["whisker_motion_energy"],
            true_rate=arrays.get("true_rate"),
            trials=trials.to_pandas(),
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
        _, arrays = _read(path, [], {"counts": (int(meta["binning"]["n_bins"]), len(meta["units"]["uuid"]))})
        return arrays["counts"]


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


def _read(path: str | Path, columns: list[str], shapes: dict[str, tuple[int, ...]]) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """The `columns` of a binned session file as a table, and its array columns named in
    `shapes` (name -> the shape of one trial's row, from the file's metadata) as arrays of
    shape (n_trials, *row_shape). ValueError if an array column disagrees with its shape.

    The arrays are allocated whole, then filled one row group at a time (`_fill_row_groups`),
    so the load peaks at the arrays plus a row group per reading thread, rather than at twice
    the arrays, where Arrow's buffer for a column of the whole file grows by doubling.
    """
    with pq.ParquetFile(path, page_checksum_verification=True) as file:
        table = file.read(columns=columns)
        n_trials, metadata = file.metadata.num_rows, file.metadata
        fields = {name: file.schema_arrow.field(name) for name in shapes}
        if any(pa.types.is_fixed_size_list(f.type) or pa.types.is_list(f.type) for f in fields.values()):
            lists = file.read(columns=list(shapes))  # the earlier layout, as it was read then
            return table, {name: _unpack_lists(lists.column(name), (n_trials, *shape)) for name, shape in shapes.items()}
    arrays = {name: _allocate(fields[name], (n_trials, *shape)) for name, shape in shapes.items()}
    filled = {name: array for name, array in arrays.items() if array.nbytes}  # a session without units has no bytes
    if filled:
        _fill_row_groups(path, filled, [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)])
    return table, arrays


def _fill_row_groups(path: str | Path, arrays: dict[str, np.ndarray], group_rows: list[int]) -> None:
    """Copy the array columns named in `arrays` from the file's row groups (of `group_rows`
    rows each) into `arrays`, READ_THREADS row groups side by side, each thread through a
    reader of its own (a Parquet reader is not for sharing between threads)."""
    starts = np.cumsum([0, *group_rows])
    threads = min(READ_THREADS, len(group_rows))

    def read_share(first: int) -> None:
        # Each reader reads and decodes in its own thread (no pre-buffering, which reads on
        # Arrow's I/O threads; one Arrow thread per row group: the columns besides the counts are
        # small): buffers freed by another thread than the one that took them are slow to be
        # reused, which made the peak vary from 1.5x to 1.9x the arrays.
        with pq.ParquetFile(path, page_checksum_verification=True, pre_buffer=False) as file:
            for group in range(first, len(group_rows), threads):
                part = file.read_row_group(group, columns=list(arrays), use_threads=False)
                if part.num_rows != group_rows[group]:
                    raise ValueError(f"row group {group} holds {part.num_rows} rows, the footer says {group_rows[group]}")
                for name, array in arrays.items():
                    _fill(array, int(starts[group]), part.column(name))
                del part  # before the next row group is read, not after

    if threads == 1:
        read_share(0)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="row-groups") as pool:
        for share in [pool.submit(read_share, first) for first in range(threads)]:
            share.result()  # raises what the thread raised


def _allocate(field: pa.Field, shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised array for the array column `field`, with the dtype its metadata names,
    after checking its row shape and width against `shape` (n_trials, *row_shape)."""
    info = json.loads((field.metadata or {})[ARRAY_METADATA])
    dtype = np.dtype(info["dtype"])
    if tuple(info["shape"]) != shape[1:]:
        raise ValueError(f"column {field.name} holds rows of {info['shape']}, the metadata says {list(shape[1:])}")
    width = math.prod(shape[1:]) * dtype.itemsize
    if field.type != (pa.binary(width) if width else pa.binary()):
        raise ValueError(f"column {field.name} is {field.type}, not rows of {dtype} x {list(shape[1:])}")
    return np.zeros(shape, dtype) if width == 0 else np.empty(shape, dtype)


def _fill(array: np.ndarray, row: int, column: pa.ChunkedArray) -> None:
    """Copy the fixed_size_binary `column` (one value per row) into `array` from `row` on."""
    rows = array.reshape(len(array), -1).view(np.uint8)  # (n_trials, bytes per row)
    width = rows.shape[1]
    for chunk in column.chunks:
        if chunk.null_count:
            raise ValueError(f"the array column {column.type} has null rows")
        values = np.frombuffer(chunk.buffers()[1], np.uint8, count=len(chunk) * width, offset=chunk.offset * width)
        rows[row : row + len(chunk)] = values.reshape(len(chunk), width)
        row += len(chunk)


def _unpack_lists(column: pa.ChunkedArray, shape: tuple[int, ...]) -> np.ndarray:
    """An array column of the earlier layout (fixed_size_list: one Parquet value per entry)."""
    flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(shape)


def load_model_session(model_dir: str | Path, binned_path: str | Path, eids: list[str]) -> SessionData:
    """The binned session a saved model (with layers for `eids`) is to be scored on; ValueError if
    the file holds another session."""
    session = load_session(binned_path)
    if session.eid not in eids:
        raise ValueError(f"{model_dir} holds the sessions {eids}, not {session.eid} ({binned_path})")
    return session
