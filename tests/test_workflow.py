"""The Snakemake workflow end to end on a tiny demo: outputs, sanity of the numbers, reruns, failures."""

import base64
import json
import os
import re
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


FIGURES = ("ablation", "mtm_vs_baseline", "rasters", "scaling", "finetuned", "prompt_ablation", "data_overview")


def headless_chromium() -> tuple[str | None, str]:
    """Chromium's executable, installing Debian's package when it is missing and we may; else
    (None, why not)."""
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name), ""
    if not shutil.which("apt-get"):
        return None, "no chromium, and no apt-get to install Debian's chromium package"
    if os.geteuid() != 0:
        return None, "no chromium, and installing Debian's chromium package needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    try:  # bounded: a slow mirror must not eat the test run's time budget
        if subprocess.run(install, capture_output=True, env=env, timeout=240).returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=240)
            result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=240)
            if result.returncode != 0:
                return None, f"apt-get install chromium failed: {result.stderr[-500:]}"
    except subprocess.TimeoutExpired as timeout:
        return None, f"installing Debian's chromium package took too long ({timeout.cmd[:2]})"
    return shutil.which("chromium"), ""


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
    # NDT2's 2; NDT1 pretrained on 1 and 4 of the 4 sessions not held out, for 2 schemes,
    # finetuned on the 2 held out; and an evaluation of every model
    expected = {
        "demo_cache": 1, "fetch": 6, "qc": 6, "bin": 6, "sessions_table": 1, "data_overview": 1,
        "train_single": 6 * (7 + 2), "pretrain": 2 * 2, "finetune": 2 * 2 * 2,
        "evaluate": 6 * (7 + 2) + 2 * 2 * 2, "metrics_table": 1,
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


def test_every_figure_and_the_report(workdir):
    """all.done implies every figure (PNG, PDF, caption); the Snakemake report is one
    self-contained HTML file with every figure, which headless Chromium loads and runs without a
    script error, showing every category."""
    for name in FIGURES:
        for suffix in ("png", "pdf", "txt"):
            assert (workdir / f"results/figures/{name}.{suffix}").stat().st_size > 0, (name, suffix)
        assert (workdir / f"results/figures/{name}.txt").read_text().startswith("Synthetic demo data")
    snakemake(workdir, "--report", "results/report.html")
    report = workdir / "results/report.html"
    html = report.read_text()
    assert not re.search(r"""(src|href)=["'](?!data:|#|https?:)[^"']+\.(png|js|css)""", html), "self-contained"
    embedded = {
        base64.b64decode(m.group(1))
        for m in re.finditer(r"data:image/png;[^,\"']*base64,([A-Za-z0-9+/=]+)", html)
    }
    for name in FIGURES:
        assert (workdir / f"results/figures/{name}.png").read_bytes() in embedded, f"{name}.png is not in the report"
    exe, why = headless_chromium()
    if exe is None:
        pytest.skip(f"the report was built, but cannot be rendered: {why}")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--enable-logging=stderr",
           "--virtual-time-budget=20000", "--dump-dom", report.as_uri()]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "Uncaught" in line or "CONSOLE" in line and "rror" in line]
    assert not errors, errors
    # what the page shows once its scripts ran: the app fills an empty <div id="app">
    assert re.search(r'<div id="app">\s*</div>', html)
    shown = re.sub(r"<(script|style)\b.*?</\1>", "", result.stdout, flags=re.S)
    shown = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", shown))
    assert "Synthetic demo data" in shown or "synthetic demo sessions" in shown
    for category in ("1. Single-session ablation", "2. MtM against the baseline", "3. Region rasters",
                     "4. Multi-session", "5. Prompt ablation", "6. Data", "7. Metrics"):  # fmt: skip
        assert category in shown, f"category {category!r} is not shown"
