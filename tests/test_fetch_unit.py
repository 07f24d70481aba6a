"""Dataset choice, revisions and connection failures of the fetch stage (no cache needed)."""

import time

import pandas as pd
import pytest

from mtm.ibl.errors import FetchError
from mtm.ibl.fetch import connect, one_settings, select_datasets, with_retries


def records(paths, default=None):
    frame = pd.DataFrame({"rel_path": paths, "file_size": 1, "hash": None})
    if default is not None:
        frame["default_revision"] = default
    return frame


SORT = ["spikes.times.npy", "spikes.clusters.npy", "clusters.channels.npy", "clusters.metrics.pqt"]


def test_picks_needed_files_and_probes():
    paths = (
        ["alf/_ibl_trials.table.pqt", "alf/_ibl_wheel.position.npy", "alf/_ibl_wheel.timestamps.npy",
         "alf/leftCamera.ROIMotionEnergy.npy", "alf/_ibl_leftCamera.times.npy", "alf/_ibl_leftCamera.dlc.pqt",
         "raw_ephys_data/probe00/x.ap.cbin", "alf/probe00/pykilosort/spikes.samples.npy"]
        + [f"alf/probe00/pykilosort/{f}" for f in SORT]
        + [f"alf/probe01/pykilosort/{f}" for f in SORT]
    )
    chosen, probes = select_datasets(records(paths))
    assert [p["name"] for p in probes] == ["probe00", "probe01"]
    assert "alf/_ibl_leftCamera.dlc.pqt" not in set(chosen.rel_path)
    assert "alf/probe00/pykilosort/spikes.samples.npy" not in set(chosen.rel_path)
    assert not chosen.rel_path.str.startswith("raw_ephys_data").any()
    assert len(chosen) == 5 + 2 * len(SORT)


def test_default_revision_and_pin():
    paths = [f"alf/probe00/pykilosort/{f}" for f in SORT] + [f"alf/probe00/pykilosort/#2024-05-06#/{f}" for f in SORT]
    default = [False] * len(SORT) + [True] * len(SORT)
    chosen, probes = select_datasets(records(paths, default))
    assert chosen.rel_path.str.contains("#2024-05-06#").all() and probes[0]["revision"] == "2024-05-06"
    old, probes = select_datasets(records(paths, default), revision="2023-01-01")
    assert not old.rel_path.str.contains("#").any() and probes[0]["revision"] == ""
    new, _ = select_datasets(records(paths, default), revision="2025-01-01")
    assert new.rel_path.str.contains("#2024-05-06#").all()


def test_sorter_preference():
    paths = [f"alf/probe00/pykilosort/{f}" for f in SORT] + [f"alf/probe00/iblsorter/{f}" for f in SORT]
    _, probes = select_datasets(records(paths))
    assert probes[0]["collection"] == "alf/probe00/iblsorter"
    _, probes = select_datasets(records(paths), spike_sorter="pykilosort")
    assert probes[0]["collection"] == "alf/probe00/pykilosort"


def test_remote_without_network_fails_at_once_and_hides_secrets():
    settings = one_settings(
        {"one": {"mode": "remote", "base_url": "http://127.0.0.1:9", "username": "someone", "password": "s3cret-Pw"}}
    )
    start = time.monotonic()
    with pytest.raises(FetchError) as err:
        connect(settings)
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert "cannot reach the IBL server at http://127.0.0.1:9" in message
    assert "mode: local" in message  # names the fix
    assert "s3cret-Pw" not in message


def test_remote_without_credentials_names_the_variables(monkeypatch):
    with pytest.raises(FetchError, match="ALYX_LOGIN"):
        connect(one_settings({"one": {"mode": "remote"}}))
    monkeypatch.setenv("ALYX_LOGIN", "me")
    assert one_settings({"one": {"mode": "remote"}})["username"] == "me"


def test_local_without_tables(tmp_path):
    with pytest.raises(FetchError, match="no ONE cache tables"):
        connect(one_settings({"one": {"mode": "local", "cache_dir": str(tmp_path)}}))


class FakeHTTPError(Exception):
    def __init__(self, status):
        self.response = type("Response", (), {"status_code": status})()


def test_transient_errors_are_retried_then_given_up():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("reset by peer") if len(calls) == 1 else FakeHTTPError(503)
        return "ok"

    assert with_retries(flaky, what="x", retries=4, backoff_s=0) == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(ConnectionError):
        with_retries(lambda: calls.append(1) or (_ for _ in ()).throw(ConnectionError()), what="x", retries=2, backoff_s=0)
    assert len(calls) == 3


def test_permanent_errors_are_not_retried():
    calls = []

    def missing():
        calls.append(1)
        raise FakeHTTPError(404)

    with pytest.raises(FakeHTTPError):
        with_retries(missing, what="x", retries=4, backoff_s=0)
    assert len(calls) == 1
