"""Dataset choice, revisions and connection failures of the fetch stage (no cache needed)."""

import time
from pathlib import Path

import pandas as pd
import pytest

from mtm.ibl.errors import FetchError
from mtm.config.sessions import OneConfig
from mtm.ibl.fetch import connect, fetch_session, select_datasets, with_retries


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
    settings = OneConfig(mode="remote", base_url="http://127.0.0.1:9", username="someone", password="s3cret-Pw")
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
        connect(OneConfig(mode="remote").with_credentials())
    monkeypatch.setenv("ALYX_LOGIN", "me")
    assert OneConfig(mode="remote").with_credentials().username == "me"
    assert "s3cret" not in repr(OneConfig(password="s3cret"))  # credentials never print


def test_local_without_tables(tmp_path):
    with pytest.raises(FetchError, match="no ONE cache tables"):
        connect(OneConfig(mode="local", cache_dir=str(tmp_path)))


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


class FakeRemoteOne:
    """ONE in remote mode, as fetch uses it: records, then downloads that can fail or truncate."""

    def __init__(self, cache_dir, files, *, truncate_first=(), fail_first=()):
        self.cache_dir, self.files = cache_dir, files
        self.truncate_first, self.fail_first = set(truncate_first), set(fail_first)
        self.downloads = []

    def eid2path(self, eid):
        return self.cache_dir / "lab/Subjects/subject/2021-01-01/001"

    def list_datasets(self, eid, details=True):
        import hashlib

        rows = [
            {"rel_path": rel, "file_size": len(data), "hash": hashlib.md5(data).hexdigest(), "default_revision": True}
            for rel, data in self.files.items()
        ]
        return pd.DataFrame(rows)

    def load_datasets(self, eid, rel_paths, download_only, check_hash):
        (rel,) = rel_paths
        self.downloads.append(rel)
        if rel in self.fail_first:
            self.fail_first.discard(rel)
            raise ConnectionError("connection reset")
        data = self.files[rel]
        if rel in self.truncate_first:  # a download killed half way
            self.truncate_first.discard(rel)
            data = data[: len(data) // 2]
        path = self.eid2path(eid) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_remote_fetch_retries_and_redownloads_corrupt_files(tmp_path, monkeypatch):
    import io
    import json

    import numpy as np

    def npy(array):
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()

    files = {f"alf/probe00/pykilosort/{name}": npy(np.arange(100.0)) for name in SORT if name.endswith(".npy")}
    files["alf/_ibl_wheel.position.npy"] = npy(np.linspace(0, 1, 50))
    spikes = "alf/probe00/pykilosort/spikes.times.npy"
    one = FakeRemoteOne(tmp_path, files, truncate_first=[spikes], fail_first=["alf/_ibl_wheel.position.npy"])
    config = OneConfig(mode="remote", username="u", password="s3cret-Pw", retries=2)
    monkeypatch.setattr("mtm.ibl.fetch.time.sleep", lambda seconds: None)  # no real backoff here
    manifest = fetch_session("e", config, tmp_path / "manifest.json", one=one)
    assert one.downloads.count(spikes) == 2  # truncated once, fetched again
    assert one.downloads.count("alf/_ibl_wheel.position.npy") == 2  # a connection reset, retried
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert {d["rel_path"] for d in manifest["datasets"]} == set(files)
    assert "s3cret-Pw" not in (tmp_path / "manifest.json").read_text()


def test_network_errors_of_requests_are_transient():
    """ONE downloads through requests, whose ConnectionError and Timeout are not Python's."""
    import requests

    for error in (requests.exceptions.ConnectionError("reset"), requests.exceptions.ReadTimeout("slow")):
        calls = []

        def flaky():
            calls.append(1)
            if len(calls) == 1:
                raise error
            return "ok"

        assert with_retries(flaky, what="x", retries=2, backoff_s=0) == "ok" and len(calls) == 2


def test_remote_mode_with_a_cache_dir_writes_nothing_in_the_home_folder(isolated_home, tmp_path):
    """ONE would write ~/.one and make ~/Downloads/ONE/<host>: with one.cache_dir set, neither."""
    config = OneConfig(mode="remote", base_url="http://127.0.0.1:9", username="u", password="s3cret-Pw",
                       cache_dir=str(tmp_path / "cache"))  # fmt: skip
    with pytest.raises(FetchError, match="cannot reach the IBL server"):
        fetch_session("d57df551-6dcb-4242-9c72-b806cff5613a", config, tmp_path / "manifest.json")
    assert list(isolated_home.iterdir()) == []
    assert Path.home() == isolated_home  # HOME is given back
