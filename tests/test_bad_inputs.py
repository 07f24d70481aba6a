"""Every bad input gets a clear error before anything good is lost: a matrix of bad configs,
caches, files and command-line arguments.

Each case asserts how it fails (the exception, or the exit status), that the message names the
session, file or config key and what is wrong, and that no finished output was deleted or
changed (checksums of every file of a finished session before and after). Most cases call the
package (CASES); the Snakemake cases (WORKFLOW_CASES) run the workflow where one tiny session is
finished, to show that a bad config stops it before any job starts and that fetch is not
retried.
"""

from __future__ import annotations

import copy
import dataclasses
import fcntl
import hashlib
import json
import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import safetensors.torch
import torch
import yaml
from test_workflow import TINY, copy_workflow, spikes_files

from mtm.checkpoint import load_pretrained, load_state, read_config, save_state
from mtm.cli import main as mtm_command
from mtm.config.checks import ConfigError, check_config
from mtm.config.validate import validate_config
from mtm.config.sessions import BinningConfig, OneConfig, QcConfig
from mtm.config.stages import binning_config, qc_config
from mtm.demo import demo_sessions, write_demo_session
from mtm.evaluate import evaluate_checkpoint
from mtm.config.evaluation import EvalConfig
from mtm.ibl.bin_session import bin_session
from mtm.ibl.errors import FetchError, SessionDataError
from mtm.ibl.fetch import fetch_session
from mtm.ibl.one_cache import write_one_tables
from mtm.ibl.qc import QC_OUTPUTS, run_qc
from mtm.io import CorruptFileError, write_json
from mtm.jobs import pretrain_sessions, train_session
from mtm.config.training import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SESSION = demo_sessions(1)[0]
EID = SESSION.eid
SPIKE_TIMES = "alf/probe00/pykilosort/spikes.times.npy"
TRAINING = TrainConfig(scheme="mtm-prompt", epochs=1)
OTHER_EID = "824cf03d-4012-4ab1-b499-c83a92c5589e"


def schema_config() -> dict[str, Any]:
    """config.yaml as the workflow reads it: validated, defaults filled in."""
    return validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))


def checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass
class Finished:
    """One demo session's cache, and its finished outputs: fetch's manifest, qc's and bin's
    files, and a model trained on it for one epoch."""

    cache: Path
    out: Path  # every finished output, and nothing else
    config: dict[str, Any]  # qc's and bin's config sections, with the cache for fetch

    @property
    def manifest(self) -> Path:
        return self.out / "manifest.json"

    @property
    def qc_outputs(self) -> dict[str, Path]:
        return {k: self.out / f"{k}.{'json' if k == 'qc' else 'parquet'}" for k in QC_OUTPUTS}

    @property
    def binned(self) -> Path:
        return self.out / "binned.parquet"

    @property
    def model(self) -> Path:
        return self.out / "model"

    def qc_config(self) -> QcConfig:
        return qc_config(validate_config(copy.deepcopy(self.config)))

    def with_cache(self, cache: Path) -> OneConfig:
        return OneConfig(mode="local", cache_dir=str(cache))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Finished:
    root = tmp_path_factory.mktemp("finished")
    write_demo_session(root / "cache", root / "truth", SESSION, n_units=12, n_trials=100, seed=3)
    write_one_tables(root / "cache", {SESSION.rel_path: EID}, hash_files=True)
    config = {"units": {"min_units": 5}, "trials": {"min_trials": 20}}
    f = Finished(root / "cache", root / "out", config)
    fetch_session(EID, f.with_cache(f.cache), f.manifest)
    run_qc(f.manifest, f.qc_config(), f.qc_outputs)
    bin_session(manifest=f.manifest, **f.qc_outputs, config=binning_config(validate_config(copy.deepcopy(config))), output=f.binned)
    train_session(f.binned, f.model, TRAINING)
    return f


def damaged_cache(f: Finished, tmp: Path, rel_path: str, damage: Callable[[np.ndarray], np.ndarray]) -> Path:
    """A copy of the cache with one array changed, and records that describe the changed file
    (a consistent cache whose content is bad, which only reading it can tell)."""
    cache = shutil.copytree(f.cache, tmp / "cache")
    path = cache / SESSION.rel_path / rel_path
    np.save(path, damage(np.load(path)))
    write_one_tables(cache, {SESSION.rel_path: EID}, hash_files=True)
    return cache


def truncated_in_copy(f: Finished, tmp: Path, rel_path: str) -> Path:
    """A copy of the cache with one file cut short, its record left as it was (a killed copy)."""
    cache = shutil.copytree(f.cache, tmp / "cache")
    path = cache / SESSION.rel_path / rel_path
    path.write_bytes(path.read_bytes()[:-800])
    return cache


def qc_of(f: Finished, cache: Path, tmp: Path) -> Callable[[], Any]:
    """qc of the session fetched from `cache`, writing over the finished qc outputs."""
    fetch_session(EID, f.with_cache(cache), tmp / "manifest.json")
    return lambda: run_qc(tmp / "manifest.json", f.qc_config(), f.qc_outputs)


def with_nan(times: np.ndarray) -> np.ndarray:
    times = times.copy()
    times[len(times) // 2] = np.nan
    return times


def unsorted(times: np.ndarray) -> np.ndarray:
    times = times.copy()
    times[11] = times[10] - 1e-3  # spike 11 now 1 ms before spike 10
    return times


def damaged_copy(path: Path, tmp: Path, damage: Callable[[bytes], bytes]) -> Path:
    """A copy of a finished file with `damage` done to it."""
    path = Path(shutil.copy(path, tmp / path.name))
    path.write_bytes(damage(path.read_bytes()))
    return path


def damaged_model(f: Finished, tmp: Path, damage: Callable[[bytes], bytes], name: str = "model.safetensors") -> Path:
    """A copy of the finished model's folder with `damage` done to its file `name`."""
    model = shutil.copytree(f.model, tmp / "model")
    (model / name).write_bytes(damage((model / name).read_bytes()))
    return model


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def overwritten(data: bytes) -> bytes:
    """The same size, with 64 bytes at 60% of the file (weights, or a compressed page) changed:
    there, Parquet without page checksums read the damaged counts without a complaint."""
    at = len(data) * 3 // 5
    return data[:at] + bytes(b ^ 0x5A for b in data[at : at + 64]) + data[at + 64 :]


def finetuned_by_command(f: Finished, tmp: Path, *, session: Path, checkpoint: Path | None = None) -> Callable[[], Any]:
    args = ["finetune", "--checkpoint", str(checkpoint or f.model), "--session", str(session), "--out", str(tmp / "out")]
    return lambda: mtm_command(args)


# ----------------------------------------------------------------------------------------------
# the cases: (id, exception, case(finished, tmp) -> (the failing call, what its message says))


def configured(**changes: Any) -> Callable[[], None]:
    """check_config of config.yaml with `changes` = {"section.key": value}."""
    config = schema_config()
    for dotted, value in changes.items():
        *sections, key = dotted.split(".")
        node = config
        for section in sections:
            node = node[section]
        node[key] = value
    return lambda: check_config(config)


def sessions_file(tmp: Path, text: str) -> Path:
    path = tmp / "sessions.txt"
    path.write_text(text)
    return path


def schema_checked(**changes: Any) -> Callable[[], None]:
    """The validation of config.yaml with `changes` (top-level keys): the schema, then the checks."""
    config = {**yaml.safe_load((REPO / "config.yaml").read_text()), **copy.deepcopy(changes)}
    return lambda: validate_config(config)


CASES = [
    # configs, checked when read (mtm.config_checks.check_config, called by common.smk)
    ("reversed window", ConfigError,
     lambda f, tmp: (configured(**{"binning.window": [1.5, -0.5]}), ["binning.window", "start < stop"])),
    ("bin_size not dividing the window", ConfigError,
     lambda f, tmp: (configured(**{"binning.bin_size": 0.03}), ["binning.bin_size = 0.03", "not an integer multiple"])),
    ("window with NaN", ConfigError,
     lambda f, tmp: (configured(**{"binning.window": [-0.5, float("nan")]}), ["binning.window", "finite"])),
    ("split fractions summing to 0.9", ConfigError,
     lambda f, tmp: (configured(**{"splits.fractions": [0.7, 0.1, 0.1]}), ["splits.fractions", "sum to 1"])),
    ("align_event misspelt", ConfigError,
     lambda f, tmp: (configured(**{"binning.align_event": "stimOnset_times"}),
                     ["binning.align_event", "'stimOnset_times' is not an event time", "did you mean 'stimOn_times'"])),
    ("align_event not a time", ConfigError,
     lambda f, tmp: (configured(**{"binning.align_event": "choice"}), ["binning.align_event", "'choice'", "stimOn_times"])),
    ("duplicate eids in a session file", ConfigError,
     lambda f, tmp: (configured(sessions=str(sessions_file(tmp, f"{EID}\n# a comment\n{OTHER_EID}\n{EID}  # again\n"))),
                     ["sessions", "sessions.txt, line 4", f"{EID} is listed twice", "line 1"])),
    ("an eid that is not a UUID v4 in a session file", ConfigError,
     lambda f, tmp: (configured(sessions=str(sessions_file(tmp, f"{EID}\n{EID[:14]}1{EID[15:]}\n"))),
                     ["sessions.txt, line 2", "not an IBL session id (a lowercase UUID version 4)"])),
    ("two eids on one line of a session file", ConfigError,
     lambda f, tmp: (configured(sessions=str(sessions_file(tmp, f"{EID} {OTHER_EID}\n"))), ["sessions.txt, line 1", "not an IBL session id"])),
    ("a session file that does not exist", ConfigError,
     lambda f, tmp: (configured(sessions=str(tmp / "nowhere.txt")), ["sessions", "nowhere.txt does not exist"])),
    ("duplicate eids in a held-out file", ConfigError,
     lambda f, tmp: (configured(**{"multisession.heldout": str(sessions_file(tmp, f"{EID}\n{EID}\n"))}),
                     ["multisession.heldout", "line 2", "listed twice"])),
    ("duplicate eids in a config list, through the Python API", ConfigError,
     lambda f, tmp: (configured(sessions=[EID, OTHER_EID, EID]), ["sessions[2]", "is listed twice (first at sessions[0])"])),
    # configs, checked by the schema (mtm.config.validate.validate_config, before check_config)
    ("duplicate eids in the config", ConfigError,
     lambda f, tmp: (schema_checked(sessions=[EID, EID]), ["config: sessions:", "non-unique"])),
    ("an eid that is not a UUID v4 in the config", ConfigError,
     lambda f, tmp: (schema_checked(sessions=[EID.upper()]), ["config: sessions.0:", "does not match"])),
    ("a key the schema does not know", ConfigError,
     lambda f, tmp: (schema_checked(training={"epoch": 3}), ["config: training:", "'epoch' was unexpected"])),
    # the same values given to the package's functions
    ("align_event misspelt, given to qc", ValueError,
     lambda f, tmp: (lambda: run_qc(f.manifest, QcConfig(align_event="stimon_times"), f.qc_outputs),
                     ["'stimon_times' is not an event time", "did you mean 'stimOn_times'"])),
    ("reversed window, given to bin", ValueError,
     lambda f, tmp: (lambda: bin_session(manifest=f.manifest, **f.qc_outputs, output=f.binned,
                                         config=BinningConfig(window=[1.5, -0.5])), ["window", "start < stop"])),
    ("split fractions summing to 1.1, given to bin", ValueError,
     lambda f, tmp: (lambda: bin_session(manifest=f.manifest, **f.qc_outputs, output=f.binned,
                                         config=BinningConfig(split_fractions=[0.8, 0.1, 0.2])), ["fractions", "sum to 1"])),
    # caches and connections that fetch cannot use: each fails at its first attempt
    ("a cache file truncated after its record was written", SessionDataError,
     lambda f, tmp: (lambda: fetch_session(EID, f.with_cache(truncated_in_copy(f, tmp, SPIKE_TIMES)), f.manifest),
                     [EID, SPIKE_TIMES, "the dataset record says", "truncated or corrupt"])),
    ("an eid that the cache does not hold", FetchError,
     lambda f, tmp: (lambda: fetch_session(OTHER_EID, f.with_cache(f.cache), f.manifest), [OTHER_EID, "no datasets found"])),
    ("one.cache_dir without a ONE cache", FetchError,
     lambda f, tmp: (lambda: fetch_session(EID, f.with_cache(tmp), f.manifest), ["no ONE cache tables", "one.cache_dir", str(tmp)])),
    ("remote mode without credentials", FetchError,
     lambda f, tmp: (lambda: fetch_session(EID, OneConfig(mode="remote", cache_dir=str(tmp)), f.manifest),
                     ["no credentials", "one.username", "ALYX_LOGIN"])),
    # sessions whose files are bad, found at run time
    ("align_event that this session's trials lack", SessionDataError,
     lambda f, tmp: (lambda: run_qc(f.manifest, dataclasses.replace(f.qc_config(), align_event="stimOnTrigger_times"), f.qc_outputs),
                     [EID, "alf/_ibl_trials.table.pqt", "no column 'stimOnTrigger_times'", "binning.align_event"])),
    ("NaN spike times", SessionDataError,
     lambda f, tmp: (qc_of(f, damaged_cache(f, tmp, SPIKE_TIMES, with_nan), tmp), [EID, SPIKE_TIMES, "1 spike times are NaN"])),
    ("unsorted spike times", SessionDataError,
     lambda f, tmp: (qc_of(f, damaged_cache(f, tmp, SPIKE_TIMES, unsorted), tmp),
                     [EID, SPIKE_TIMES, "not sorted ascending", "index 11"])),
    # files the workflow wrote, damaged, given to the next stage
    ("damaged binned.parquet given to training", CorruptFileError,
     lambda f, tmp: (lambda: train_session(damaged_copy(f.binned, tmp, overwritten), f.model, TRAINING),
                     ["binned.parquet: unreadable as a binned session", "snakemake -f"])),
    ("truncated binned.parquet given to pretraining", CorruptFileError,
     lambda f, tmp: (lambda: pretrain_sessions([damaged_copy(f.binned, tmp, truncated)], f.model, TRAINING),
                     ["binned.parquet: unreadable as a binned session", "snakemake -f"])),
    ("qc's trials.parquet given as a binned session to evaluation", CorruptFileError,
     lambda f, tmp: (lambda: evaluate_checkpoint(f.model, f.qc_outputs["trials"], f.out / "eval", EvalConfig(), setting="single"),
                     ["trials.parquet: not a binned session", "binning"])),
    ("truncated model.safetensors given to evaluation", CorruptFileError,
     lambda f, tmp: (lambda: evaluate_checkpoint(damaged_model(f, tmp, truncated), f.binned, f.out / "eval", EvalConfig(),
                                                 setting="single"),
                     ["model/model.safetensors: unreadable weights, truncated or damaged", "snakemake -f"])),
    ("empty model.safetensors", CorruptFileError,
     lambda f, tmp: (lambda: load_pretrained(damaged_model(f, tmp, lambda data: b"")),
                     ["model.safetensors: unreadable weights", "snakemake -f"])),
    ("weights overwritten inside model.safetensors", CorruptFileError,
     lambda f, tmp: (lambda: load_pretrained(damaged_model(f, tmp, overwritten)),
                     ["model.safetensors: the weights are not those written", "sha256", "snakemake -f"])),
    ("a model's config.json that is not JSON", CorruptFileError,
     lambda f, tmp: (lambda: read_config(damaged_model(f, tmp, truncated, "config.json")),
                     ["config.json: not a model's config", "snakemake -f"])),
    # command-line arguments
    ("mtm finetune --session given a file that is not Parquet", SystemExit,
     lambda f, tmp: (finetuned_by_command(f, tmp, session=f.manifest),
                     ["mtm finetune:", "manifest.json: unreadable as a binned session", "snakemake -f"])),
    ("mtm finetune --session given a damaged binned.parquet", SystemExit,
     lambda f, tmp: (finetuned_by_command(f, tmp, session=damaged_copy(f.binned, tmp, overwritten)),
                     ["mtm finetune:", "binned.parquet: unreadable as a binned session"])),
    ("mtm finetune --session given a file that does not exist", SystemExit,
     lambda f, tmp: (finetuned_by_command(f, tmp, session=tmp / "binned.parquet"), ["--session", "binned.parquet: no such file"])),
    ("mtm finetune --checkpoint with truncated weights", SystemExit,
     lambda f, tmp: (finetuned_by_command(f, tmp, session=f.binned, checkpoint=damaged_model(f, tmp, truncated)),
                     ["mtm finetune:", "model.safetensors: unreadable weights"])),
]  # fmt: skip


@pytest.mark.parametrize("name, error, case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_clearly_and_keeps_finished_outputs(finished, tmp_path, name, error, case):
    before = checksums(finished.out)
    call, says = case(finished, tmp_path)
    with pytest.raises(error) as raised:
        call()
    for words in says:
        assert words in str(raised.value), f"{name}: {words!r} not in: {raised.value}"
    assert checksums(finished.out) == before, f"{name}: finished outputs changed"


def test_weights_written_before_checksums_load_with_a_warning(finished, tmp_path, caplog):
    model = shutil.copytree(finished.model, tmp_path / "model")
    weights = model / "model.safetensors"
    safetensors.torch.save_file(safetensors.torch.load_file(weights), weights)  # no metadata, as they were
    with caplog.at_level(logging.WARNING, logger="mtm.checkpoint"):
        load_pretrained(model)
    assert f"{weights}: no checksum recorded" in caplog.text


def test_a_damaged_training_state_is_dropped_and_training_starts_afresh(tmp_path, caplog):
    save_state(tmp_path, {"epoch": 3, "weights": torch.arange(1000.0)})
    tensors = next(tmp_path.glob("tensors-*.safetensors"))
    tensors.write_bytes(overwritten(tensors.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="mtm.checkpoint"):
        assert load_state(tmp_path) is None
    assert "cannot be read" in caplog.text and "the weights are not those written" in caplog.text


def test_a_killed_writes_temporary_file_goes_at_the_next_write_a_live_ones_stays(tmp_path):
    output = tmp_path / "qc.json"
    killed = tmp_path / ".qc.json.k1ll3d_x.tmp"  # what a write killed before its rename leaves
    killed.write_text("{")
    live = tmp_path / ".qc.json.l1ve_xyz.tmp"  # a writer still at work holds its lock
    other = tmp_path / ".qc.json.bak.abcd1234.tmp"  # another output's (qc.json.bak)
    for path in (live, other):
        path.write_text("")
    with open(live) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        write_json(output, {"usable": True})
        assert not killed.exists() and live.exists() and other.exists()
    assert json.loads(output.read_text()) == {"usable": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([output.name, live.name, other.name])


# ----------------------------------------------------------------------------------------------
# through Snakemake: (id, config overlay or None, the target, what the output says)

BROKEN_EID = demo_sessions(3)[2].eid  # a session of the tiny config that is not finished
WORKFLOW_CASES = [
    ("reversed window", {"binning": {"window": [1.5, -0.5]}}, None, ["config: binning.window", "start < stop"]),
    ("bin_size not dividing the window", {"binning": {"bin_size": 0.03}}, None,
     ["binning.bin_size = 0.03", "not an integer multiple"]),
    ("split fractions summing to 0.9", {"splits": {"fractions": [0.7, 0.1, 0.1]}}, None, ["config: splits.fractions", "sum to 1"]),
    ("align_event misspelt", {"binning": {"align_event": "stimOnset_times"}}, None,
     ["config: binning.align_event", "did you mean 'stimOn_times'"]),
    ("duplicate eids in the session file", {"sessions": "sessions.txt"}, None, ["sessions.txt, line 2", "listed twice"]),
    ("an eid that is not a UUID v4", {"sessions": [EID.replace("-4", "-1", 1)]}, None,
     ["config: sessions.0:", "does not match"]),
    ("a cache file truncated after its record was written, fetched", None, f"results/sessions/{BROKEN_EID}/manifest.json",
     [f"session {BROKEN_EID}", "spikes.times.npy", "truncated or corrupt"]),
]  # fmt: skip


def run_workflow(wd: Path, target: str, overlay: dict[str, Any] | None = None, *extra: str) -> subprocess.CompletedProcess:
    configfiles = [TINY]
    if overlay is not None:
        (wd / "overlay.yaml").write_text(yaml.safe_dump(overlay))
        configfiles.append("overlay.yaml")
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *extra, target, "--configfile", *configfiles]
    return subprocess.run(cmd, cwd=wd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def workflow_done(tmp_path_factory) -> Path:
    """A workflow folder where the tiny config's first session is fetched, QC'd and binned."""
    wd = copy_workflow(tmp_path_factory.mktemp("workflow"))
    result = run_workflow(wd, f"results/sessions/{EID}/binned.parquet")
    assert result.returncode == 0, result.stderr[-3000:]
    (wd / "sessions.txt").write_text(f"{EID}\n{EID}\n")
    for path in spikes_files(wd, BROKEN_EID):
        path.write_bytes(path.read_bytes()[:-800])  # the dataset record keeps the full size
    return wd


@pytest.mark.slow
@pytest.mark.parametrize("name, overlay, target, says", WORKFLOW_CASES, ids=[c[0] for c in WORKFLOW_CASES])
def test_bad_input_stops_the_workflow_and_keeps_finished_outputs(workflow_done, name, overlay, target, says):
    finished = workflow_done / "results/sessions" / EID
    before = checksums(finished)
    # --retries 3: the user's retries do not make fetch retry what a retry cannot fix
    result = run_workflow(workflow_done, target or f"results/sessions/{EID}/binned.parquet", overlay, "--retries", "3")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    for words in says:
        assert words in output, f"{name}: {words!r} not in:\n{output[-3000:]}"
    if target is None:  # stopped when the config was read
        assert "Building DAG of jobs" not in output, output[-3000:]
    else:
        assert output.count("Error in rule fetch") == 1 and "Trying to restart" not in output, output[-3000:]
    assert checksums(finished) == before, f"{name}: finished outputs changed"
