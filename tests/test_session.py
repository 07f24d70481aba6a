"""The binned Parquet format: round trip, metadata, empty (unusable) sessions."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from mtm.io import read_parquet_metadata
from mtm.session import TRIAL_COLUMNS, load_session, write_session


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
