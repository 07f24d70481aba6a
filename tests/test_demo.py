"""The synthetic IBL demo: ONE cache and ALF layout, dtypes, task structure, determinism,
consistency of spikes with the true rates, and that the MtM targets are learnable."""

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from one.api import One
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import cross_val_predict, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mtm.demo import build_demo_cache, demo_sessions, write_demo_session
from mtm.demo.behaviour import WHEEL_TICK
from mtm.demo.neural import binned_truth
from mtm.demo.signals import GRID_DT
from mtm.demo.task import N_UNBIASED, TRIAL_COLUMNS, simulate_task

N_SESSIONS, N_UNITS, N_TRIALS = 4, 20, 120
SORT = "pykilosort"
REVISION = "2024-05-06"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """4 tiny sessions: the 2nd and 4th revised, the 4th with two probes and number 002."""
    root = tmp_path_factory.mktemp("demo")
    eids = build_demo_cache(root / "cache", root / "truth", n_sessions=N_SESSIONS, n_units=N_UNITS, n_trials=N_TRIALS)
    return root, eids, demo_sessions(N_SESSIONS)


def sort_dir(root, session, probe, revised):
    folder = root / "cache" / session.rel_path / "alf" / probe / SORT
    return folder / f"#{REVISION}#" if revised else folder


def test_sessions_are_real_mtm_sessions():
    sessions = demo_sessions(6)
    assert sessions[0].eid == "d57df551-6dcb-4242-9c72-b806cff5613a"
    assert sessions[3].rel_path == "mainenlab/Subjects/ZFM-02372/2021-06-01/002"
    assert [p for p, _ in sessions[3].probes] == ["probe00", "probe01"]
    assert len({pid for _, pid in sessions[3].probes}) == 2  # the substitute is another insertion
    assert sessions[5].probes[0][0] == "probe01"
    assert demo_sessions(6) == sessions


def test_one_loads_cache(demo):
    root, eids, sessions = demo
    one = One(cache_dir=root / "cache", mode="local")
    assert sorted(map(str, one.search())) == sorted(eids)
    assert not one.list_datasets(eids[0], details=True)["hash"].isna().any()

    plain, revised, two_probes = eids[0], eids[1], eids[3]
    assert one.list_revisions(plain, collection=f"alf/probe00/{SORT}") == [""]
    assert sorted(one.list_revisions(revised, collection=f"alf/probe00/{SORT}")) == ["", REVISION]
    spikes = one.load_object(revised, "spikes", collection=f"alf/probe00/{SORT}")
    expected = np.load(sort_dir(root, sessions[1], "probe00", True) / "spikes.times.npy")
    np.testing.assert_array_equal(spikes.times, expected)  # the newest revision is the default

    assert {f"alf/probe00/{SORT}", f"alf/probe01/{SORT}"} <= set(one.list_collections(two_probes))
    assert one.eid2path(two_probes).as_posix().endswith("mainenlab/Subjects/ZFM-02372/2021-06-01/002")
    trials = one.load_object(plain, "trials", collection="alf")
    assert len(trials.stimOn_times) == N_TRIALS and "goCueTrigger_times" in trials


def test_alf_dtypes_and_shapes(demo):
    root, _, sessions = demo
    for i, session in enumerate(sessions):
        alf = root / "cache" / session.rel_path / "alf"
        trials = pd.read_parquet(alf / "_ibl_trials.table.pqt")
        assert list(trials.columns) == TRIAL_COLUMNS and (trials.dtypes == np.float64).all()
        for name in ("goCueTrigger_times", "stimOff_times"):
            assert np.load(alf / f"_ibl_trials.{name}.npy").shape == (N_TRIALS,)

        ts, pos = np.load(alf / "_ibl_wheel.timestamps.npy"), np.load(alf / "_ibl_wheel.position.npy")
        assert ts.dtype == pos.dtype == np.float64 and ts.shape == pos.shape
        assert np.all(np.diff(ts) > 0) and np.all(np.diff(pos) != 0)  # a sample per encoder change
        np.testing.assert_allclose(pos / WHEEL_TICK, np.round(pos / WHEEL_TICK), atol=1e-6)
        for side, fs in (("left", 60), ("right", 150)):
            times = np.load(alf / f"_ibl_{side}Camera.times.npy")
            energy = np.load(alf / f"{side}Camera.ROIMotionEnergy.npy")
            assert times.dtype == energy.dtype == np.float64 and times.shape == energy.shape
            assert abs(1 / np.median(np.diff(times)) - fs) < 1 and times[-1] > trials.intervals_1.iloc[-1]

        n_units = 0
        for probe, _ in session.probes:
            for revised in {False, i % 2 == 1}:
                d = sort_dir(root, session, probe, revised)
                times, clusters = np.load(d / "spikes.times.npy"), np.load(d / "spikes.clusters.npy")
                assert times.dtype == np.float64 and np.all(np.diff(times) >= 0)
                assert clusters.dtype == np.uint32 and clusters.shape == times.shape
                assert np.load(d / "spikes.amps.npy").dtype == np.float32
                assert np.load(d / "spikes.depths.npy").dtype == np.float32
                n_clusters = len(np.load(d / "clusters.channels.npy"))
                assert np.load(d / "clusters.channels.npy").dtype == np.int64
                assert np.load(d / "clusters.depths.npy").dtype == np.float64
                assert clusters.max() < n_clusters
                uuids = pd.read_csv(d / "clusters.uuids.csv")
                assert list(uuids.columns) == ["uuids"] and len(uuids) == n_clusters
                assert all(uuid.UUID(u).version == 4 for u in uuids.uuids)
                metrics = pd.read_parquet(d / "clusters.metrics.pqt")
                assert list(metrics.cluster_id) == list(range(n_clusters))
                np.testing.assert_array_equal(metrics.spike_count, np.bincount(clusters, minlength=n_clusters))
                np.testing.assert_allclose(metrics.firing_rate, metrics.spike_count / (times[-1] - times[0]))
                for name, dtype, shape in (
                    ("brainLocationIds_ccf_2017", np.int64, (384,)),
                    ("mlapdv", np.float64, (384, 3)),
                    ("localCoordinates", np.float64, (384, 2)),
                    ("rawInd", np.int64, (384,)),
                ):
                    array = np.load(d / f"channels.{name}.npy")
                    assert array.dtype == dtype and array.shape == shape
            n_units += len(np.load(sort_dir(root, session, probe, i % 2 == 1) / "clusters.depths.npy"))
        assert n_units == N_UNITS


def test_older_revision_differs(demo):
    root, _, sessions = demo
    new, old = (sort_dir(root, sessions[1], "probe00", r) for r in (True, False))
    assert len(np.load(old / "clusters.depths.npy")) < len(np.load(new / "clusters.depths.npy"))
    assert len(np.load(old / "spikes.times.npy")) < len(np.load(new / "spikes.times.npy"))


def test_task_structure():
    task = simulate_task(np.random.default_rng(1), 2000)
    t = task.table
    p = t.probabilityLeft.to_numpy()
    assert np.all(p[:N_UNBIASED] == 0.5) and set(p[N_UNBIASED:]) == {0.2, 0.8}
    switches = np.flatnonzero(np.diff(p[N_UNBIASED:])) + 1
    lengths = np.diff(np.r_[0, switches])
    assert lengths.min() >= 20 and lengths.max() <= 100 and 40 < lengths.mean() < 60

    assert np.all(t.contrastLeft.isna() ^ t.contrastRight.isna())
    left = t.contrastLeft.notna()
    assert abs(left[p == 0.8].mean() - 0.8) < 0.05 and abs(left[p == 0.2].mean() - 0.2) < 0.05
    correct = t.choice == np.where(left, 1, -1)
    assert np.all((t.feedbackType == 1) == correct) and np.all((t.rewardVolume > 0) == correct)
    nogo = t.choice == 0
    assert 0.005 < nogo.mean() < 0.04 and t.firstMovement_times[nogo].isna().all()
    assert 0 < (t.firstMovement_times[~nogo].isna()).sum() < 0.03 * len(t)

    # psychometric: choices follow the signed contrast and lean toward the likely side
    signed = np.where(left, t.contrastLeft, -t.contrastRight)
    go = ~nogo
    assert np.corrcoef(signed[go], t.choice[go])[0, 1] > 0.5
    zero = go & (signed == 0)
    assert (t.choice[zero & (p == 0.8)] == 1).mean() > (t.choice[zero & (p == 0.2)] == 1).mean() + 0.2

    rt = (t.firstMovement_times - t.stimOn_times).to_numpy()
    assert np.nanmedian(rt[signed == 0]) > np.nanmedian(rt[np.abs(signed) == 1])
    assert 0 < np.sum(rt < 0.08) < 0.15 * len(t) and 0 < np.sum(rt > 2) < 0.05 * len(t)
    order = ["intervals_0", "stimOn_times", "response_times", "feedback_times", "intervals_1"]
    assert np.all(np.diff(t[order].to_numpy(), axis=1) > 0)
    assert np.all(t.intervals_0.to_numpy()[1:] > t.intervals_1.to_numpy()[:-1])
    assert 3 < np.median(np.diff(t.intervals_0)) < 8


def test_wheel_turns_with_choice(demo):
    root, _, sessions = demo
    alf = root / "cache" / sessions[0].rel_path / "alf"
    t = pd.read_parquet(alf / "_ibl_trials.table.pqt")
    ts, pos = np.load(alf / "_ibl_wheel.timestamps.npy"), np.load(alf / "_ibl_wheel.position.npy")
    go = t.firstMovement_times.notna()
    moved = np.interp(t.response_times[go], ts, pos) - np.interp(t.firstMovement_times[go], ts, pos)
    assert np.all(np.sign(moved) == -t.choice[go])  # choice +1 turns the wheel clockwise


def test_determinism(tmp_path):
    session = demo_sessions(4)[3]  # two probes, revised: every kind of file

    def build(name, seed):
        write_demo_session(tmp_path / name, tmp_path / f"{name}_truth", session, n_units=10, n_trials=100,
                           seed=seed, revised=True)  # fmt: skip
        files = sorted((tmp_path / name).rglob("*.*"))
        return {f.relative_to(tmp_path / name): f.read_bytes() for f in files}

    a, b, c = build("a", 0), build("b", 0), build("c", 1)
    assert a == b
    spikes = Path(session.rel_path) / "alf/probe00" / SORT / f"#{REVISION}#" / "spikes.times.npy"
    assert a[spikes] != c[spikes]
    truth = [np.load(tmp_path / f"{n}_truth" / f"{session.eid}.npz")["rates"] for n in "ab"]
    np.testing.assert_array_equal(*truth)


def test_binned_truth_is_exact():
    rate = np.r_[np.full(100, 2.0), np.full(100, 10.0)]  # Hz, a step at 0.5 s
    cum = np.r_[0.0, np.cumsum(rate * GRID_DT)][None, :]
    truth = binned_truth(cum, np.array([0.5, np.nan]), (-0.1, 0.1), 0.04)
    assert truth.shape == (2, 5, 1)
    np.testing.assert_allclose(truth[0, :, 0], [2, 2, 6, 10, 10], rtol=1e-5)  # middle bin straddles
    assert np.isnan(truth[1]).all()


def _window_counts(spike_times, clusters, n_clusters, edges):
    """Spike counts [n_trials, n_bins, n_clusters] in the bins `edges` [n_trials, n_bins + 1]."""
    counts = np.zeros((edges.shape[0], edges.shape[1] - 1, n_clusters))
    for u in range(n_clusters):
        t = spike_times[clusters == u]
        for j, e in enumerate(edges):
            counts[j, :, u] = np.histogram(t, e)[0]
    return counts


def test_spikes_match_truth(demo):
    root, eids, sessions = demo
    truth = np.load(root / "truth" / f"{eids[3]}.npz")
    rates = truth["rates"]
    assert rates.shape == (N_TRIALS, 100, N_UNITS) and rates.dtype == np.float32
    assert str(truth["align_event"]) == "stimOn_times" and float(truth["bin_size"]) == 0.02
    assert list(truth["trial_index"]) == list(range(N_TRIALS)) and not np.isnan(rates).any()
    trials = pd.read_parquet(root / "cache" / sessions[3].rel_path / "alf" / "_ibl_trials.table.pqt")
    edges = trials.stimOn_times.to_numpy()[:, None] + np.arange(-0.5, 1.5 + 1e-9, 0.02)
    for probe, _ in sessions[3].probes:
        d = sort_dir(root, sessions[3], probe, True)
        n_clusters = len(np.load(d / "clusters.depths.npy"))
        mine = truth["probe"] == probe
        assert list(truth["cluster_id"][mine]) == list(range(n_clusters))
        counts = _window_counts(np.load(d / "spikes.times.npy"), np.load(d / "spikes.clusters.npy"), n_clusters, edges)
        expected = rates[..., mine].sum(axis=(0, 1)) * 0.02
        observed = counts.sum(axis=(0, 1))
        assert np.all(np.abs(observed - expected) < 5 * np.sqrt(expected) + 5)
        assert abs(observed.sum() / expected.sum() - 1) < 0.03


def test_targets_are_learnable(tmp_path):
    session = demo_sessions(1)[0]
    write_demo_session(tmp_path / "cache", tmp_path / "truth", session, n_units=30, n_trials=250)
    alf = tmp_path / "cache" / session.rel_path / "alf"
    t = pd.read_parquet(alf / "_ibl_trials.table.pqt")
    d = alf / "probe00" / SORT
    edges = t.stimOn_times.to_numpy()[:, None] + np.arange(-0.5, 1.5 + 1e-9, 0.1)
    counts = np.log1p(_window_counts(np.load(d / "spikes.times.npy"), np.load(d / "spikes.clusters.npy"), 30, edges))

    decoder = make_pipeline(StandardScaler(), LogisticRegression())
    go = (t.choice != 0).to_numpy()
    assert cross_val_score(decoder, counts[go].sum(1), t.choice[go], cv=5).mean() > 0.6
    biased = (t.probabilityLeft != 0.5).to_numpy()
    prestim = counts[biased, :5].sum(1)  # the block prior is there before the stimulus
    block_acc = cross_val_score(decoder, prestim, t.probabilityLeft[biased] > 0.5, cv=5).mean()
    assert block_acc > 0.6

    x = counts.reshape(-1, 30)
    ts, pos = np.load(alf / "_ibl_wheel.timestamps.npy"), np.load(alf / "_ibl_wheel.position.npy")
    speed = (np.abs(np.diff(np.interp(edges, ts, pos), axis=1)) / 0.1).ravel()
    assert np.corrcoef(cross_val_predict(RidgeCV(), x, speed, cv=5), speed)[0, 1] > 0.2
    frames = np.load(alf / "_ibl_leftCamera.times.npy")
    energy = np.interp((edges[:, 1:] + edges[:, :-1]) / 2, frames, np.load(alf / "leftCamera.ROIMotionEnergy.npy"))
    assert np.corrcoef(cross_val_predict(RidgeCV(), x, energy.ravel(), cv=5), energy.ravel())[0, 1] > 0.2
