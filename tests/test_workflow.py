"""The Snakemake workflow end to end on a tiny demo: outputs, sanity of the numbers, reruns, failures."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtm.session import load_session

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # --configfile takes several values, so it goes last, after the targets
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args, "--configfile", "tests/config/tiny.yaml"]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}")
    return result


def copy_workflow(wd: Path) -> Path:
    """The workflow files in a fresh folder: its own results/ and .snakemake/ state."""
    for name in ("Snakefile", "config.yaml", "workflow", "profiles", "envs", "tests/config"):
        src, dst = REPO / name, wd / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)
    return wd


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A copy of the workflow that has run the tiny config once."""
    wd = copy_workflow(tmp_path_factory.mktemp("wf"))
    snakemake(wd, "results/figures/all.done")
    return wd


def eids_of(wd: Path) -> list[str]:
    return pd.read_csv(wd / "results/sessions/sessions.tsv", sep="\t")["eid"].tolist()


def test_default_config_dry_run(tmp_path):
    wd = copy_workflow(tmp_path)
    cmd = [sys.executable, "-m", "snakemake", "-n", "results/figures/all.done", "--quiet", "rules"]
    result = subprocess.run(cmd, cwd=wd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    jobs = dict(line.split()[:2] for line in result.stdout.splitlines() if line.split()[:1] and line.split()[-1].isdigit())
    # 6 demo sessions: one job per session for each per-session rule, one for each join; a
    # model per session for each of NDT1's 7 rows of the paper's single-session ablation and
    # NDT2's 2; pretraining on 1 and 4 of the 4 sessions not held out, for 2 schemes of each
    # backbone, finetuned on the 2 held out; and an evaluation of every model
    expected = {
        "demo_cache": 1, "fetch": 6, "qc": 6, "bin": 6, "sessions_table": 1, "data_overview": 1,
        "train_single": 6 * (7 + 2), "pretrain": 2 * 2 * 2, "finetune": 2 * 2 * 2 * 2,
        "evaluate": 6 * (7 + 2) + 2 * 2 * 2 * 2, "metrics_table": 1,
    }  # fmt: skip
    assert {rule: int(jobs.get(rule, 0)) for rule in expected} == expected


def test_outputs_and_sane_numbers(workdir):
    table = pd.read_csv(workdir / "results/sessions/sessions.tsv", sep="\t")
    assert len(table) == 3 and set(table["usable"]) == {"yes"}
    for eid in table["eid"]:
        s = load_session(workdir / f"results/sessions/{eid}/binned.parquet")
        qc = json.loads((workdir / f"results/sessions/{eid}/qc.json").read_text())
        assert s.counts.shape == (qc["n_trials_kept"], 100, qc["n_units_selected"])
        assert set(s.split) == {"train", "val", "test"}
        # the counts come from the true rates: their per-unit means agree, and they co-vary
        expected = s.true_rate.mean(axis=(0, 1)) * s.bin_size
        observed = s.counts.mean(axis=(0, 1))
        assert np.corrcoef(expected, observed)[0, 1] > 0.95
        assert abs(observed.sum() / expected.sum() - 1) < 0.1
        assert np.isfinite(s.wheel_speed).mean() > 0.99 and np.isfinite(s.whisker_motion_energy).mean() > 0.99
        assert set(np.unique(s.trials["choice"])) <= {-1, 1}
    assert (workdir / "results/figures/data_overview.png").stat().st_size > 10_000
    ablation = pd.read_csv(workdir / "results/figures/ablation.csv")
    assert set(ablation["backbone"]) == {"ndt1", "ndt2"} and (ablation["n_sessions"] <= 3).all()
    assert set(ablation[ablation["backbone"] == "ndt2"]["row"]) == {"mtm-prompt", "oracle", "chance"}
    for model in ("ndt1/temporal", "ndt1/mtm-prompt", "ndt2/mtm-prompt"):
        for eid in table["eid"]:
            log = pd.read_csv(workdir / f"results/models/{model}/single/{eid}/log.csv")
            assert len(log) == 2 and np.isfinite(log["val_loss"]).all()
    config = json.loads((workdir / f"results/models/ndt2/mtm-prompt/single/{eid}/config.json").read_text())
    assert config["model_class"] == "NDT2" and config["model_config"]["patch_size"] == 8
    metrics = pd.read_csv(workdir / "results/eval/metrics.csv")
    # (3 models x 3 sessions + 2 finetuned models) x (4 activity tasks x 7 metrics + 4 behaviour targets x 2)
    assert len(metrics) == (3 * 3 + 2) * (4 * 7 + 4 * 2)
    assert set(metrics["backbone"]) == {"ndt1", "ndt2"}
    assert set(metrics[metrics["setting"] == "pretrain-2"]["eid"]) == {"824cf03d-4012-4ab1-b499-c83a92c5589e"}
    # block may not be decodable in 150 trials (too few 0.2/0.8 trials); it is NaN, not an error
    assert np.isfinite(metrics[metrics["task"] != "block"]["value"]).all()
    bps = metrics[metrics["metric"] == "bps"].set_index(["model", "eid", "task"])["value"]
    oracle = metrics[metrics["metric"] == "oracle_bps"].set_index(["model", "eid", "task"])["value"]
    assert (oracle > 0.05).all() and (bps < oracle).all()
    summary = pd.read_csv(workdir / "results/eval/summary.csv")
    counted = summary[summary["task"] != "block"].groupby("setting")["n_sessions"]  # sessions with a value
    assert counted.unique().to_dict() == {"pretrain-2": [1], "single": [3]}


def test_rerun_one_session_alone(workdir):
    eid = eids_of(workdir)[0]
    target = workdir / f"results/sessions/{eid}/binned.parquet"
    before = {e: (workdir / f"results/sessions/{e}/binned.parquet").stat().st_mtime_ns for e in eids_of(workdir)}
    target.unlink()
    snakemake(workdir, f"results/sessions/{eid}/binned.parquet")
    after = {e: (workdir / f"results/sessions/{e}/binned.parquet").stat().st_mtime_ns for e in before}
    assert after[eid] != before[eid]
    assert all(after[e] == before[e] for e in before if e != eid)


def test_corrupt_session_fails_alone_with_a_clear_error(workdir):
    eids = eids_of(workdir)
    bad = eids[1]
    manifest = json.loads((workdir / f"results/sessions/{bad}/manifest.json").read_text())
    spikes = next(d["rel_path"] for d in manifest["datasets"] if d["rel_path"].endswith("spikes.times.npy"))
    path = Path(manifest["cache_dir"]) / manifest["session_path"] / spikes
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a killed download
    try:
        for eid in eids:
            shutil.rmtree(workdir / f"results/sessions/{eid}")
        (workdir / "results/sessions/sessions.tsv").unlink()
        shutil.rmtree(workdir / "results/figures")
        result = snakemake(workdir, "--keep-going", "results/figures/all.done", check=False)
        assert result.returncode != 0
        log = (workdir / f"results/logs/fetch/{bad}.log").read_text()
        assert bad in log and spikes in log and "truncated" in log
        for eid in eids:
            assert (workdir / f"results/sessions/{eid}/binned.parquet").exists() == (eid != bad)
        assert not (workdir / "results/sessions/sessions.tsv").exists()
    finally:
        path.write_bytes(data)
    snakemake(workdir, "results/figures/all.done")
    assert len(pd.read_csv(workdir / "results/sessions/sessions.tsv", sep="\t")) == 3


def test_snakefiles_are_formatted():
    result = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow/rules"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
