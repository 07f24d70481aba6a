"""Fixtures: demo sessions through the real fetch -> qc -> bin path.

The IBL packages (ONE, ibllib) are imported where a fixture needs them, so that the model tests
also run where only torch and the scientific stack are installed (e.g. a GPU machine, for
tests/test_cuda.py).
"""

import copy
import importlib.util
import json
import subprocess
import time
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """ONE writes ~/.one and ~/Downloads/ONE: keep every test away from the real home."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var in ("ALYX_LOGIN", "ALYX_PWD", "ALYX_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    if importlib.util.find_spec("one") is not None:
        from one.api import ONE

        ONE.cache_clear()
    yield home


def bin_demo_sessions(root: Path, sessions, *, n_units: int, n_trials: int, seed: int, min_units: int = 5) -> list[Path]:
    """Demo `sessions` (with their true rates) through fetch -> qc -> bin: their binned.parquet.
    The demo cache under `root` is written once, then reused."""
    from mtm.demo import write_demo_session
    from mtm.ibl.bin_session import bin_session
    from mtm.ibl.fetch import fetch_session
    from mtm.ibl.one_cache import write_one_tables
    from mtm.ibl.qc import run_qc
    from mtm.config.validate import validate_config
    from mtm.config.stages import binning_config, one_config, qc_config

    if not (root / "cache").exists():
        for session in sessions:
            write_demo_session(root / "cache", root / "truth", session, n_units=n_units, n_trials=n_trials, seed=seed)
        write_one_tables(root / "cache", {s.rel_path: s.eid for s in sessions}, hash_files=True)
    config = {
        "units": {"min_units": min_units},
        "trials": {"min_trials": 20},
        "one": {"mode": "local", "cache_dir": str(root / "cache")},
    }
    validated = validate_config(copy.deepcopy(config))
    paths = []
    with pytest.MonkeyPatch.context() as mp:  # ONE writes into HOME
        mp.setenv("HOME", str(root / "home"))
        for session in sessions:
            out = root / f"{session.eid}-{min_units}"
            fetch_session(session.eid, one_config(validated), out / "manifest.json")
            files = {k: out / f"{k}.{'json' if k == 'qc' else 'parquet'}" for k in ("units", "trials", "behaviour", "qc")}
            run_qc(out / "manifest.json", qc_config(validated), files)
            truth = root / "truth" / f"{session.eid}.npz"
            bin_session(manifest=out / "manifest.json", **files, config=binning_config(validated), output=out / "binned.parquet", truth=truth)
            paths.append(out / "binned.parquet")
    return paths


@pytest.fixture(scope="session")
def binned(tmp_path_factory) -> dict[str, Path]:
    """One demo session (96 units, 300 trials, with its true rates) through fetch -> qc -> bin:
    usable, and unusable (a min_units it cannot reach)."""
    from mtm.demo import demo_sessions

    root = tmp_path_factory.mktemp("sessions")
    session = demo_sessions(1)
    usable = bin_demo_sessions(root, session, n_units=96, n_trials=300, seed=3)[0]
    unusable = bin_demo_sessions(root, session, n_units=96, n_trials=300, seed=3, min_units=1000)[0]
    return {"usable": usable, "unusable": unusable}


@pytest.fixture(scope="session")
def four_sessions(tmp_path_factory) -> list[Path]:
    """Four demo sessions (64 units, 300 trials each): binned.parquet paths."""
    from mtm.demo import demo_sessions

    return bin_demo_sessions(tmp_path_factory.mktemp("four"), demo_sessions(4), n_units=64, n_trials=300, seed=5)


def wait_for_saved_epoch(proc: subprocess.Popen, state_dir: Path, epoch: int, stderr: Path) -> None:
    """Poll until a training (or head) run in `proc` has saved its state after `epoch`."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = state_dir / "latest.json"
        if state.exists() and json.loads(state.read_text())["state"]["epoch"] >= epoch:
            return
        assert proc.poll() is None, f"the run ended early ({proc.returncode}):\n{stderr.read_text()}"
        time.sleep(0.02)
    raise TimeoutError(f"no state for epoch {epoch} in {state_dir}")


def pytest_collection_modifyitems(config, items):
    """The workflow scenario's file first: it is the longest and mostly waits on SLURM's polling,
    so under `make test` (a test file per worker) the other files run beside it, not after it."""
    items.sort(key=lambda item: item.path.name != "test_workflow.py")  # stable: the rest keep their order
