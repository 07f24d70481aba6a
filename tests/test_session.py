"""The binned Parquet format: round trip, metadata, empty (unusable) sessions, row groups, files
of the earlier layout, damaged array columns."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mtm.session as session_module
from mtm.io import CorruptFileError, read_parquet_metadata, write_parquet
from mtm.session import TRIAL_COLUMNS, UNIT_COLUMNS, load_session, read_counts, write_session


def fake(n_trials=7, n_bins=5, n_units=3, seed=0):
    rng = np.random.default_rng(seed)
    trials = pd.DataFrame(
        {
            "trial_index": np.arange(n_trials) * 2,
            "split": np.array(["train", "val", "test"] * n_trials)[:n_trials],
            "align_time": rng.uniform(0, 100, n_trials),
            "choice": rng.choice([-1, 1], n_trials),
            "block": rng.choice([0.2, 0.8], n_trials),
            "reward": rng.integers(0, 2, n_trials),
            "signed_contrast": rng.choice([-1, 0, 0.25], n_trials),
            "reaction_time": rng.uniform(0.1, 1, n_trials),
        }
    )
    units = pd.DataFrame(
        {
            "uuid": [f"u{i}" for i in range(n_units)],
            "probe": ["probe00"] * n_units,
            "cluster_id": np.arange(n_units),
            "allen": ["CA1"] * n_units,
            "beryl": ["CA1"] * n_units,
            "cosmos": ["HPF"] * n_units,
            "depth_um": np.linspace(0, 100, n_units),
            "firing_rate": np.ones(n_units),
            "label": np.ones(n_units),
        }
    )
    counts = rng.poisson(2.0, (n_trials, n_bins, n_units)).astype(np.uint8)
    behaviour = {name: rng.normal(size=(n_trials, n_bins)) for name in ("wheel_speed", "whisker_motion_energy")}
    meta = {
        "provenance": {"eid": "e1"},
        "binning": {"n_bins": n_bins, "bin_size": 0.02},
        "session": {"usable": n_trials > 0},
    }
    return trials, units, counts, behaviour, meta


def test_round_trip(tmp_path):
    trials, units, counts, behaviour, meta = fake()
    rate = np.random.default_rng(1).uniform(0, 50, counts.shape).astype(np.float32)
    write_session(tmp_path / "b.parquet", trials=trials, counts=counts, behaviour=behaviour, units=units, meta=meta, true_rate=rate)
    s = load_session(tmp_path / "b.parquet")
    assert s.counts.dtype == np.uint8 and np.array_equal(s.counts, counts)
    assert np.array_equal(s.true_rate, rate)
    np.testing.assert_array_equal(s.wheel_speed, behaviour["wheel_speed"].astype(np.float32))
    pd.testing.assert_frame_equal(s.trials.astype(trials.dtypes), trials[list(TRIAL_COLUMNS)], check_dtype=False)
    assert s.units["uuid"].tolist() == units["uuid"].tolist() and s.eid == "e1" and s.usable
    assert load_session(tmp_path / "b.parquet", true_rate=False).true_rate is None
    assert read_parquet_metadata(tmp_path / "b.parquet")["provenance"]["eid"] == "e1"


def test_wide_counts_keep_their_dtype(tmp_path):
    trials, units, counts, behaviour, meta = fake()
    counts = counts.astype(np.uint16)
    counts[0, 0, 0] = 300
    write_session(tmp_path / "b.parquet", trials=trials, counts=counts, behaviour=behaviour, units=units, meta=meta)
    assert load_session(tmp_path / "b.parquet").counts[0, 0, 0] == 300


def test_unusable_session_has_no_rows(tmp_path):
    trials, units, counts, behaviour, meta = fake(n_trials=0)
    write_session(tmp_path / "b.parquet", trials=trials, counts=counts, behaviour=behaviour, units=units, meta=meta)
    s = load_session(tmp_path / "b.parquet")
    assert s.counts.shape == (0, 5, 3) and not s.usable
    assert pq.read_metadata(tmp_path / "b.parquet").num_rows == 0


def test_no_temporary_files_left(tmp_path):
    trials, units, counts, behaviour, meta = fake()
    write_session(tmp_path / "b.parquet", trials=trials, counts=counts, behaviour=behaviour, units=units, meta=meta)
    assert [p.name for p in tmp_path.iterdir()] == ["b.parquet"]


def write_legacy(path, *, trials, counts, behaviour, units, meta):
    """A session in the layout write_session wrote before the array columns became
    fixed_size_binary: fixed_size_list columns, write_parquet's defaults, one row group."""
    columns = {name: pa.array(trials[name].to_numpy().astype(str) if kind == pa.string() else trials[name].to_numpy(), type=kind)
               for name, kind in TRIAL_COLUMNS.items()}  # fmt: skip
    for name, array in {"counts": counts, **behaviour}.items():
        flat = pa.array(np.ascontiguousarray(array, dtype=array.dtype if name == "counts" else np.float32).reshape(-1))
        columns[name] = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(array.shape[1:])))
    write_parquet(path, pa.table(columns), {**meta, "units": units.loc[:, list(UNIT_COLUMNS)].to_dict(orient="list")})


def test_files_of_the_earlier_layout_still_load(tmp_path):
    trials, units, counts, behaviour, meta = fake(n_trials=9, n_bins=4, n_units=5)
    write_legacy(tmp_path / "old.parquet", trials=trials, counts=counts, behaviour=behaviour, units=units, meta=meta)
    write_session(tmp_path / "new.parquet", trials=trials, counts=counts, behaviour=behaviour, units=units, meta=meta)
    old, new = load_session(tmp_path / "old.parquet"), load_session(tmp_path / "new.parquet")
    assert pa.types.is_fixed_size_list(pq.read_schema(tmp_path / "old.parquet").field("counts").type)
    for name in ("counts", "wheel_speed", "whisker_motion_energy"):
        assert np.array_equal(getattr(old, name), getattr(new, name), equal_nan=True), name
    assert old.counts.dtype == new.counts.dtype == np.uint8
    pd.testing.assert_frame_equal(old.trials, new.trials)
    assert np.array_equal(read_counts(tmp_path / "old.parquet"), counts)


def test_arrays_span_row_groups(tmp_path, monkeypatch):
    """Row groups of 2 trials (ROW_GROUP_BYTES below one trial's counts x 2): the arrays are
    filled across them, in order, for every dtype."""
    trials, units, counts, behaviour, meta = fake(n_trials=7, n_bins=5, n_units=3)
    counts = counts.astype(np.uint16) * 200
    rate = np.random.default_rng(2).uniform(0, 50, counts.shape).astype(np.float32)
    behaviour["wheel_speed"][2, 1] = np.nan
    monkeypatch.setattr(session_module, "ROW_GROUP_BYTES", 2 * counts[0].nbytes)
    write_session(tmp_path / "b.parquet", trials=trials, counts=counts, behaviour=behaviour, units=units, meta=meta, true_rate=rate)
    file = pq.ParquetFile(tmp_path / "b.parquet")
    assert file.num_row_groups == 4 and file.schema_arrow.field("counts").type == pa.binary(counts[0].nbytes)
    s = load_session(tmp_path / "b.parquet")
    assert s.counts.dtype == np.uint16 and np.array_equal(s.counts, counts) and np.array_equal(s.true_rate, rate)
    np.testing.assert_array_equal(s.wheel_speed, behaviour["wheel_speed"].astype(np.float32))
    assert s.counts.flags.writeable and s.counts.flags.c_contiguous  # torch shares it as it is
    assert np.array_equal(read_counts(tmp_path / "b.parquet"), counts)


def test_a_session_without_units(tmp_path):
    trials, units, counts, behaviour, meta = fake(n_units=0)
    write_session(tmp_path / "b.parquet", trials=trials, counts=counts, behaviour=behaviour, units=units, meta=meta)
    s = load_session(tmp_path / "b.parquet")
    assert s.counts.shape == (7, 5, 0) and s.counts.dtype == np.uint8
    np.testing.assert_array_equal(s.wheel_speed, behaviour["wheel_speed"].astype(np.float32))


def test_counts_that_disagree_with_the_metadata_are_a_corrupt_file(tmp_path):
    trials, units, counts, behaviour, meta = fake()
    write_session(tmp_path / "b.parquet", trials=trials, counts=counts, behaviour=behaviour, units=units, meta=meta)
    table = pq.read_table(tmp_path / "b.parquet")
    field = table.schema.field("counts")
    for name, metadata in [("other-shape", {b"mtm.array": b'{"dtype": "|u1", "shape": [3, 5]}'}),
                           ("other-dtype", {b"mtm.array": b'{"dtype": "<u2", "shape": [5, 3]}'}),
                           ("no-metadata", None)]:  # fmt: skip
        changed = field.with_metadata(metadata) if metadata else field.remove_metadata()
        pq.write_table(table.set_column(table.schema.get_field_index("counts"), changed, table.column("counts")), tmp_path / f"{name}.parquet")
        with pytest.raises(CorruptFileError, match=f"{name}.parquet: .*binned session"):
            load_session(tmp_path / f"{name}.parquet")


def test_a_damaged_row_group_is_a_corrupt_file(tmp_path, monkeypatch):
    """Row groups are read in threads: what one raises (here a page checksum) still names the file."""
    trials, units, counts, behaviour, meta = fake(n_trials=40, n_bins=50, n_units=40)
    monkeypatch.setattr(session_module, "ROW_GROUP_BYTES", 5 * counts[0].nbytes)
    write_session(tmp_path / "b.parquet", trials=trials, counts=counts, behaviour=behaviour, units=units, meta=meta)
    data = (tmp_path / "b.parquet").read_bytes()
    at = pq.ParquetFile(tmp_path / "b.parquet").metadata.row_group(5).column(8).data_page_offset + 40
    (tmp_path / "b.parquet").write_bytes(data[:at] + bytes(b ^ 0x5A for b in data[at : at + 64]) + data[at + 64 :])
    with pytest.raises(CorruptFileError, match="b.parquet: unreadable as a binned session"):
        read_counts(tmp_path / "b.parquet")
