"""fetch -> qc -> bin on demo sessions with the quirks real IBL sessions have.

Revision folders, two probes, a session numbered 002, wheel length mismatches, camera times
longer than frames, a missing left camera, truncated files, parallel fetches into one cache.
"""

import copy
import json
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtm.demo import demo_sessions, write_demo_session
from mtm.ibl.bin_session import bin_session
from mtm.ibl.errors import SessionDataError
from mtm.ibl.fetch import fetch_session
from mtm.ibl.local_session import open_session
from mtm.ibl.one_cache import write_one_tables
from mtm.ibl.qc import run_qc
from mtm.config.validate import validate_config
from mtm.config.sessions import OneConfig
from mtm.config.stages import binning_config, qc_config
from mtm.session import load_session

SESSIONS = demo_sessions(4)  # plain; revised; plain; revised, 2 probes, numbered 002
PLAIN, REVISED, TWO_PROBES = SESSIONS[0], SESSIONS[1], SESSIONS[3]
CONFIG = {"units": {"min_units": 5}, "trials": {"min_trials": 20}}


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    for i, session in enumerate(SESSIONS):
        write_demo_session(root / "cache", root / "truth", session, n_units=12, n_trials=100, seed=3, revised=i % 2 == 1)
    write_one_tables(root / "cache", {s.rel_path: s.eid for s in SESSIONS}, hash_files=True)
    return root


@pytest.fixture
def cache(demo_cache, tmp_path):
    """A private copy of the demo cache that a test may damage."""
    shutil.copytree(demo_cache / "cache", tmp_path / "cache")
    return tmp_path / "cache"


def retable(cache: Path) -> None:
    """Rebuild the ONE tables after changing files, as a cache that really holds those files."""
    write_one_tables(cache, {s.rel_path: s.eid for s in SESSIONS}, hash_files=True)


def run(cache: Path, eid: str, out: Path, truth: Path | None = None, **one) -> tuple[dict, dict, object]:
    config = {**CONFIG, "one": {"mode": "local", "cache_dir": str(cache), **one}}
    manifest = fetch_session(eid, OneConfig(**config["one"]), out / "manifest.json")
    paths = {k: out / f"{k}.{'json' if k == 'qc' else 'parquet'}" for k in ("units", "trials", "behaviour", "qc")}
    validated = validate_config(copy.deepcopy(config))
    verdict = run_qc(out / "manifest.json", qc_config(validated), paths)
    bin_session(manifest=out / "manifest.json", **paths, config=binning_config(validated), output=out / "binned.parquet", truth=truth)
    return manifest, verdict, load_session(out / "binned.parquet")


def test_revision_folder_is_default_and_pin_selects_the_older_sort(demo_cache, tmp_path):
    cache = demo_cache / "cache"
    manifest, verdict, _ = run(cache, REVISED.eid, tmp_path / "default")
    assert manifest["probes"][0]["revision"] == "2024-05-06"
    assert all("#2024-05-06#" in d["rel_path"] for d in manifest["datasets"] if "/pykilosort/" in d["rel_path"])
    old_manifest, old_verdict, _ = run(cache, REVISED.eid, tmp_path / "pinned", revision="2023-01-01")
    assert old_manifest["probes"][0]["revision"] == ""
    assert not any("#" in d["rel_path"] for d in old_manifest["datasets"])
    # the older sort has different content: other clusters
    assert old_verdict["n_units_total"] != verdict["n_units_total"]


def test_two_probes_and_a_session_numbered_002(demo_cache, tmp_path):
    truth = demo_cache / "truth" / f"{TWO_PROBES.eid}.npz"
    manifest, verdict, session = run(demo_cache / "cache", TWO_PROBES.eid, tmp_path, truth=truth)
    assert manifest["session_path"].endswith("/002") and manifest["session_path"] == TWO_PROBES.rel_path
    assert [p["name"] for p in manifest["probes"]] == ["probe00", "probe01"]
    assert session.units["probe"].tolist() == sorted(session.units["probe"]) and set(session.units["probe"]) == {"probe00", "probe01"}
    assert session.counts.shape[2] == verdict["n_units_selected"] == 12
    # counts of the two probes follow their own true rates
    expected = np.nanmean(session.true_rate, axis=(0, 1)) * session.bin_size
    assert np.corrcoef(expected, session.counts.mean(axis=(0, 1)))[0, 1] > 0.9


def test_wheel_length_mismatch_is_repaired_and_noted(cache, tmp_path):
    path = cache / PLAIN.rel_path / "alf/_ibl_wheel.position.npy"
    np.save(path, np.append(np.load(path), 0.0))
    retable(cache)
    _, verdict, session = run(cache, PLAIN.eid, tmp_path)
    assert verdict["wheel"] and any("truncated" in w for w in verdict["warnings"])
    assert np.isfinite(session.wheel_speed).mean() > 0.99


def test_camera_times_longer_than_frames(cache, tmp_path):
    path = cache / PLAIN.rel_path / "alf/_ibl_leftCamera.times.npy"
    times = np.load(path)
    np.save(path, np.concatenate([times[0] - np.arange(5, 0, -1) / 60.0, times]))
    retable(cache)
    _, verdict, session = run(cache, PLAIN.eid, tmp_path)
    assert verdict["whisker_camera"] == "left"
    n = len(times)  # frames; timestamps: n + 5
    assert f"whisker: left camera has {n + 5} timestamps for {n} frames; frames 0..{n - 1} were given timestamps 5..{n + 4} (the first 5 dropped)" in verdict["warnings"]
    behaviour = pd.read_parquet(tmp_path / "behaviour.parquet")
    whisker = behaviour[behaviour["signal"] == "whisker_motion_energy"]
    np.testing.assert_array_equal(whisker["times"].to_numpy(), times)  # the leading extra stamps dropped
    assert np.isfinite(session.whisker_motion_energy).mean() > 0.99


def test_no_left_camera_falls_back_to_the_right_one(cache, tmp_path):
    for name in ("_ibl_leftCamera.times.npy", "leftCamera.ROIMotionEnergy.npy"):
        (cache / PLAIN.rel_path / "alf" / name).unlink()
    retable(cache)
    _, verdict, session = run(cache, PLAIN.eid, tmp_path)
    assert verdict["whisker_camera"] == "right"
    assert np.isfinite(session.whisker_motion_energy).mean() > 0.99


def test_behaviour_in_a_revision_folder(cache, tmp_path):
    alf = cache / PLAIN.rel_path / "alf"
    (alf / "#2024-05-06#").mkdir()
    for name in ("_ibl_wheel.position.npy", "_ibl_wheel.timestamps.npy"):
        (alf / name).rename(alf / "#2024-05-06#" / name)
    retable(cache)
    manifest, verdict, _ = run(cache, PLAIN.eid, tmp_path)
    assert "alf/#2024-05-06#/_ibl_wheel.position.npy" in {d["rel_path"] for d in manifest["datasets"]}
    assert verdict["wheel"]


def test_truncated_file_is_named_at_fetch(cache, tmp_path):
    rel = "alf/probe00/pykilosort/spikes.times.npy"
    path = cache / PLAIN.rel_path / rel
    path.write_bytes(path.read_bytes()[:-800])  # the dataset record still has the full size
    with pytest.raises(SessionDataError) as err:
        run(cache, PLAIN.eid, tmp_path)
    assert PLAIN.eid in str(err.value) and rel in str(err.value) and "truncated" in str(err.value)
    assert not (tmp_path / "manifest.json").exists()


def test_truncated_file_without_size_record_is_named(cache, tmp_path):
    rel = "alf/probe00/pykilosort/spikes.clusters.npy"
    path = cache / PLAIN.rel_path / rel
    path.write_bytes(path.read_bytes()[:-40])
    retable(cache)  # the records now describe the truncated file: only its header can tell
    with pytest.raises(SessionDataError, match=rf"{PLAIN.eid}: {rel}: unreadable .*truncated"):
        run(cache, PLAIN.eid, tmp_path)


def test_file_damaged_after_fetch_is_named_at_qc(cache, tmp_path):
    manifest = fetch_session(PLAIN.eid, OneConfig(mode="local", cache_dir=str(cache)), tmp_path / "manifest.json")
    rel = "alf/_ibl_trials.table.pqt"
    path = cache / PLAIN.rel_path / rel
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(SessionDataError, match=rf"{PLAIN.eid}: {rel}: size changed since fetch"):
        open_session(manifest)


def test_unusable_session_is_a_successful_output(demo_cache, tmp_path):
    config = {"units": {"min_units": 1000}}
    fetch_session(PLAIN.eid, OneConfig(mode="local", cache_dir=str(demo_cache / "cache")), tmp_path / "manifest.json")
    paths = {k: tmp_path / f"{k}.{'json' if k == 'qc' else 'parquet'}" for k in ("units", "trials", "behaviour", "qc")}
    validated = validate_config(copy.deepcopy(config))
    verdict = run_qc(tmp_path / "manifest.json", qc_config(validated), paths)
    assert not verdict["usable"] and "min_units 1000" in verdict["reason"]
    bin_session(manifest=tmp_path / "manifest.json", **paths, config=binning_config(validated), output=tmp_path / "binned.parquet")
    session = load_session(tmp_path / "binned.parquet")
    assert session.counts.shape[0] == 0 and not session.usable
    assert json.loads((tmp_path / "qc.json").read_text())["reason"] == verdict["reason"]


def _fetch_in_process(args):
    eid, cache, out = args
    fetch_session(eid, OneConfig(mode="local", cache_dir=cache), out)
    return out


def test_parallel_fetches_leave_the_shared_cache_intact(demo_cache, tmp_path):
    cache = demo_cache / "cache"
    tables = {name: (cache / name).read_bytes() for name in ("sessions.pqt", "datasets.pqt")}
    jobs = [(s.eid, str(cache), str(tmp_path / f"{s.eid}-{i}.json")) for i in range(2) for s in SESSIONS]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        outputs = pool.map(_fetch_in_process, jobs)
    for name, content in tables.items():
        assert (cache / name).read_bytes() == content
    manifests = [json.loads(Path(p).read_text()) for p in outputs]
    assert [m["eid"] for m in manifests] == [j[0] for j in jobs]
    assert manifests[0]["datasets"] == manifests[len(SESSIONS)]["datasets"]  # same session, same answer
    for m in manifests:
        open_session(m)  # every listed file exists with the recorded size


def test_corrupt_file_of_the_right_size_fails_its_md5(cache, tmp_path):
    rel = "alf/_ibl_wheel.position.npy"
    path = cache / PLAIN.rel_path / rel
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SessionDataError, match=rf"{PLAIN.eid}: {rel}: md5 differs"):
        run(cache, PLAIN.eid, tmp_path)


def test_session_without_trials_or_sorting_is_unusable_not_broken(cache, tmp_path):
    (cache / PLAIN.rel_path / "alf/_ibl_trials.table.pqt").unlink()
    for loose in (cache / PLAIN.rel_path / "alf").glob("_ibl_trials.*"):
        loose.unlink()
    shutil.rmtree(cache / REVISED.rel_path / "alf/probe00")
    retable(cache)
    _, verdict, session = run(cache, PLAIN.eid, tmp_path / "no-trials")
    assert not verdict["usable"] and verdict["reason"] == "no trials table" and session.counts.shape[0] == 0
    _, verdict, session = run(cache, REVISED.eid, tmp_path / "no-sorting")
    assert not verdict["usable"] and session.counts.shape[2] == 0
    assert verdict["reason"] == "no spike sorting by iblsorter, pykilosort or alf/probeXX (one.spike_sorter: null); the session has: none"


def test_a_spike_sorter_the_session_lacks_is_named(demo_cache, tmp_path):
    _, verdict, _ = run(demo_cache / "cache", PLAIN.eid, tmp_path, spike_sorter="kilosort4")
    assert not verdict["usable"]
    assert verdict["reason"] == "no spike sorting by one.spike_sorter 'kilosort4'; the session has: alf/probe00/pykilosort"


def test_local_fetch_and_qc_write_nothing_into_the_cache(cache, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*")}
    _, verdict, _ = run(cache, PLAIN.eid, tmp_path)
    assert verdict["usable"]
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*")} == before  # a shared cache may be read-only


def test_same_inputs_give_the_same_session(demo_cache, tmp_path):
    _, _, a = run(demo_cache / "cache", PLAIN.eid, tmp_path / "a")
    _, _, b = run(demo_cache / "cache", PLAIN.eid, tmp_path / "b")
    assert np.array_equal(a.counts, b.counts) and np.array_equal(a.wheel_speed, b.wheel_speed, equal_nan=True)
    pd.testing.assert_frame_equal(a.trials, b.trials)
    pd.testing.assert_frame_equal(a.units, b.units)
