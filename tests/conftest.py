from pathlib import Path

import pytest

from mtm.demo import demo_sessions, write_demo_session
from mtm.ibl.bin_session import bin_session
from mtm.ibl.fetch import fetch_session
from mtm.ibl.one_cache import write_one_tables
from mtm.ibl.qc import run_qc


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """ONE writes ~/.one and ~/Downloads/ONE: keep every test away from the real home."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var in ("ALYX_LOGIN", "ALYX_PWD", "ALYX_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    from one.api import ONE

    ONE.cache_clear()
    yield home


@pytest.fixture(scope="session")
def binned(tmp_path_factory) -> dict[str, Path]:
    """One demo session (96 units, 300 trials, with its true rates) through fetch -> qc -> bin:
    usable, and unusable (a min_units it cannot reach)."""
    root = tmp_path_factory.mktemp("sessions")
    session = demo_sessions(1)[0]
    write_demo_session(root / "cache", root / "truth", session, n_units=96, n_trials=300, seed=3)
    write_one_tables(root / "cache", {session.rel_path: session.eid}, hash_files=True)
    paths = {}
    with pytest.MonkeyPatch.context() as mp:  # ONE writes into HOME
        mp.setenv("HOME", str(root / "home"))
        for name, min_units in (("usable", 5), ("unusable", 1000)):
            out = root / name
            config = {
                "units": {"min_units": min_units},
                "trials": {"min_trials": 20},
                "one": {"mode": "local", "cache_dir": str(root / "cache")},
            }
            fetch_session(session.eid, config, out / "manifest.json")
            files = {
                k: out / f"{k}.{'json' if k == 'qc' else 'parquet'}" for k in ("units", "trials", "behaviour", "qc")
            }
            run_qc(out / "manifest.json", config, files)
            truth = root / "truth" / f"{session.eid}.npz"
            bin_session(manifest=out / "manifest.json", **files, config=config, output=out / "binned.parquet", truth=truth)
            paths[name] = out / "binned.parquet"
    return paths
