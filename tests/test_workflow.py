"""The Snakemake workflow end to end on a tiny demo: outputs, sanity of the numbers, reruns, failures."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from slurm_cluster import ClusterUnavailable, local_slurm

from mtm.demo import demo_sessions
from mtm.session import load_session

REPO = Path(__file__).resolve().parents[1]
TINY = "tests/config/tiny.yaml"
pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, check: bool = True, executor: tuple[str, ...] = ("--cores", "2"),
              env: dict | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    # --configfile takes several values, so it goes last, after the targets
    cmd = [sys.executable, "-m", "snakemake", *executor, *args, "--configfile", TINY]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env)
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


def set_up_slurm_profile(wd: Path) -> None:
    """Fill in profiles/slurm as a user of the test cluster would: its partition, no account
    (it has no accounting), no GPUs, and squeue for job status (no sacct)."""
    path = wd / "profiles/slurm/config.yaml"
    profile = yaml.safe_load(path.read_text())
    defaults = profile["default-resources"]
    assert (defaults.pop("slurm_account"), defaults["slurm_partition"]) == ("YOUR_ACCOUNT", "YOUR_CPU_PARTITION")
    defaults["slurm_partition"] = "debug"
    for rule in ("pretrain", "finetune"):
        assert profile["set-resources"][rule].pop("gpu") == 1
        profile["set-resources"][rule]["slurm_partition"] = "debug"
    profile["slurm-status-command"] = "squeue"
    profile["slurm-init-seconds-before-status-checks"] = 1  # the first poll after 1 s, then the plugin backs off by 10 s
    profile["slurm-keep-successful-logs"] = True  # the test reads which sessions each job ran
    profile["local-cores"] = 2  # the figures side by side: this machine is the login node and the node
    path.write_text(yaml.safe_dump(profile))


@dataclass
class Scenario:
    """The tiny config run as a user would meet a failure: build the demo cache, break one
    session's spikes file (a killed download), run everything with --keep-going, repair it,
    rerun that session alone by its target, then complete the aggregate."""

    workdir: Path
    executor: str  # "slurm" (through profiles/slurm) or "local"
    why_not_slurm: str
    bad: str  # the broken session
    broken_run: subprocess.CompletedProcess
    broken_fetch_log: str  # the broken session's fetch log after that run
    binned_after_broken_run: dict[str, bool]  # eid -> binned.parquet exists
    sessions_table_after_broken_run: bool
    binned_mtimes: dict[str, dict[str, int]]  # before and after the rerun: eid -> mtime_ns
    jobs: dict[str, pd.DataFrame]  # SLURM jobs submitted in each step (SLURM only)
    seconds: dict[str, float]  # wall time of each step
    daemons_left: list[str] = field(default_factory=list)  # SLURM daemons still running after the scenario


def spikes_files(wd: Path, eid: str) -> list[Path]:
    """The session's spikes.times.npy in the demo cache, of every collection and revision."""
    session = next(s for s in demo_sessions(3) if s.eid == eid)
    return sorted((wd / "results/demo/one_cache" / session.rel_path).rglob("spikes.times.npy"))


def run_scenario(wd: Path, executor: tuple[str, ...], env: dict | None, jobs_seen) -> Scenario:
    eids = [s.eid for s in demo_sessions(3)]
    heldout = yaml.safe_load((wd / TINY).read_text())["multisession"]["heldout"]
    bad = next(eid for eid in eids if eid not in heldout)  # pretraining waits for it too
    jobs, seconds = {}, {}

    def step(name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        first, start = len(jobs_seen()), time.monotonic()
        result = snakemake(wd, *args, executor=executor, env=env, check=check)
        seconds[name] = time.monotonic() - start
        jobs[name] = jobs_seen().iloc[first:].reset_index(drop=True)
        return result

    binned = {eid: wd / f"results/sessions/{eid}/binned.parquet" for eid in eids}
    step("cache", "results/demo/one_cache/sessions.pqt")
    spikes = {path: path.read_bytes() for path in spikes_files(wd, bad)}
    for path, data in spikes.items():
        path.write_bytes(data[: len(data) // 2])
    broken_run = step("broken", "--keep-going", "results/figures/all.done", check=False)
    exists = {eid: path.exists() for eid, path in binned.items()}
    fetch_log = (wd / f"results/logs/fetch/{bad}.log").read_text()
    table_exists = (wd / "results/sessions/sessions.tsv").exists()
    for path, data in spikes.items():
        path.write_bytes(data)
    before = {eid: path.stat().st_mtime_ns for eid, path in binned.items() if path.exists()}
    step("rerun", f"results/sessions/{bad}/binned.parquet")
    after = {eid: path.stat().st_mtime_ns for eid, path in binned.items()}
    step("complete", "results/figures/all.done")
    return Scenario(wd, "", "", bad, broken_run, fetch_log, exists, table_exists, {"before": before, "after": after}, jobs, seconds)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Scenario:
    """The scenario through profiles/slurm on a one-node SLURM started for it, where one can be
    started (root, or SLURM installed); else with local execution, and the reason kept.
    MTM_TEST_EXECUTOR=local forces local execution."""
    wd = copy_workflow(tmp_path_factory.mktemp("wf"))
    why = "MTM_TEST_EXECUTOR=local" if os.environ.get("MTM_TEST_EXECUTOR") == "local" else ""
    if not why:
        set_up_slurm_profile(wd)
        try:
            with local_slurm(tmp_path_factory.mktemp("slurm")) as cluster:
                found = run_scenario(wd, ("--profile", "profiles/slurm"), cluster.env, cluster.jobs)
            found.executor, found.daemons_left = "slurm", cluster.daemons_running()
            return found
        except ClusterUnavailable as error:
            why = str(error)
    found = run_scenario(wd, ("--cores", "2"), None, lambda: pd.DataFrame())
    found.executor, found.why_not_slurm = "local", why
    return found


@pytest.fixture(scope="module")
def workdir(scenario) -> Path:
    """A copy of the workflow that has run the tiny config to the end."""
    return scenario.workdir


FIGURES = ("comparisons", "convergence", "ablation", "mtm_vs_baseline", "rasters", "scaling", "finetuned",
           "prompt_ablation", "heads", "data_overview")  # fmt: skip


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


def test_default_config_dry_run_through_the_slurm_profile(tmp_path):
    """The shipped SLURM profile, as is, on the default config: it parses, its resources evaluate
    and its groups are consistent (no SLURM needed for a dry run)."""
    wd = copy_workflow(tmp_path)
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "-n", "results/figures/all.done"]
    result = subprocess.run(cmd, cwd=wd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stats = result.stdout[result.stdout.index("Job stats:") : result.stdout.index("Reasons:")]
    jobs = dict(line.split()[:2] for line in stats.splitlines() if line.split()[:1] and line.split()[-1].isdigit())
    # 4 demo sessions, 2 of them held out: one job per session for each per-session rule, one
    # for each join; NDT1 temporal and MtM models on each held-out session alone, and
    # pretrained on the 2 others, then finetuned on each held-out one; the GLM on the held-out
    # sessions; an evaluation of every model
    expected = {
        "demo_cache": 1, "fetch": 4, "qc": 4, "bin": 4, "sessions_table": 1, "data_overview": 1,
        "train_single": 2 * 2, "pretrain": 2, "finetune": 2 * 2, "glm_baseline": 2,
        "evaluate": 2 * 2 + 2 * 2, "metrics_table": 1, "supervised_head": 0,
    }  # fmt: skip
    assert {rule: int(jobs.get(rule, 0)) for rule in expected} == expected
    # a SLURM job per session's data steps, per single-session model (training + evaluation),
    # and per finetuned model's evaluation
    assert result.stdout.count("Group job session") == 4
    assert result.stdout.count("Group job model") == 2 * 2 + 2 * 2
    resources = dict(re.findall(r"rule (\w+):\n(?:\s+\w+:.*\n)*?\s+resources: (.*)", result.stdout))
    assert "slurm_partition=YOUR_GPU_PARTITION" in resources["pretrain"] and "gpu=1" in resources["pretrain"]
    assert "slurm_partition=YOUR_CPU_PARTITION" in resources["qc"] and "slurm_account=YOUR_ACCOUNT" in resources["qc"]
    assert "ibl_api=1" in resources["fetch"]


def test_the_ablation_config_plans_every_scheme_and_pretrains_on_one_session_once(tmp_path):
    """config/ablation.yaml on top of the default: every scheme on every session, NDT2, heads, and
    pretraining on 1 session, which is the first pool session's single-session model: finetuning
    from 1 session reads it, and no pretrain job trains it a second time."""
    wd = copy_workflow(tmp_path)
    shutil.copytree(REPO / "config", wd / "config")
    cmd = [sys.executable, "-m", "snakemake", "-n", "-p", "results/figures/all.done", "--configfile", "config/ablation.yaml"]
    result = subprocess.run(cmd, cwd=wd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stats = result.stdout[result.stdout.index("Job stats:") : result.stdout.index("Reasons:")]
    jobs = dict(line.split()[:2] for line in stats.splitlines() if line.split()[:1] and line.split()[-1].isdigit())
    assert int(jobs["train_single"]) == 4 * (7 + 2) and int(jobs["pretrain"]) == 2 * 2  # pretrain-2 only
    assert int(jobs["finetune"]) == 2 * 2 * 2 * 2 and int(jobs["supervised_head"]) > 0
    pool = [s.eid for s in demo_sessions(4) if s.eid not in ("824cf03d-4012-4ab1-b499-c83a92c5589e",
                                                              "d57df551-6dcb-4242-9c72-b806cff5613a")]  # fmt: skip
    blocks = [b for b in result.stdout.split("rule finetune:")[1:] if "pretrain-1/" in b.split("output:")[1].split("\n")[0]]
    assert len(blocks) == 2 * 2 * 2, "a finetuning from one session per backbone, scheme and held-out session"
    inputs = [b.split("input:")[1].split("\n")[0] for b in blocks]
    assert all(f"/single/{pool[0]}/seed-0/config.json" in line for line in inputs), inputs[0]


def test_the_paper_config_keeps_the_authors_protocol_over_the_demo_defaults(tmp_path):
    """config/paper.yaml sits on top of config.yaml, whose demo trains 2 held-out sessions to
    convergence with NDT1 only: the paper config must restore every session, both backbones and
    the authors' fixed-length one-cycle training (dry run; fetching needs the IBL server)."""
    wd = copy_workflow(tmp_path)
    shutil.copytree(REPO / "config", wd / "config")
    shutil.copytree(REPO / "src/mtm/data", wd / "src/mtm/data")  # the paper's session lists
    cmd = [sys.executable, "-m", "snakemake", "-n", "results/figures/all.done", "--configfile", "config/paper.yaml"]
    result = subprocess.run(cmd, cwd=wd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stats = result.stdout[result.stdout.index("Job stats:") : result.stdout.index("Reasons:")]
    jobs = dict(line.split()[:2] for line in stats.splitlines() if line.split()[:1] and line.split()[-1].isdigit())
    # training.stack: scheme, one job per session and backbone
    assert int(jobs["fetch"]) == 40 and int(jobs["train_stack_ndt1"]) == int(jobs["train_stack_ndt2"]) == 40
    assert "train_single" not in jobs
    demo, paper = (yaml.safe_load((REPO / name).read_text())["training"] for name in ("config.yaml", "config/paper.yaml"))
    training = {**demo, **paper}  # how Snakemake layers the two
    assert training["patience"] is None and training["lr_schedule"] == "one-cycle"
    assert (training["batch_size"], training["warmup_fraction"], training["epochs"]) == (16, 0.15, 1000)
    # every row of the README's "Differences from the authors' code" set to theirs, but their leak
    authors = {"loss": "sum", "selection": "psth-r2", "region_level": "allen", "single_session_token": False,
               "causal_context_sees_bins": False}  # fmt: skip
    assert {k: training[k] for k in authors} == authors
    demo, paper = (yaml.safe_load((REPO / name).read_text())["evaluation"] for name in ("config.yaml", "config/paper.yaml"))
    evaluation = {**demo, **paper}
    authors = {"forward_attention": "as-trained", "decoding_attention": "as-prompted", "decoders": "authors"}
    assert {k: evaluation[k] for k in authors} == authors
    assert "block" in evaluation["decoding"] and "block-whole-trial" in evaluation["decoding"]


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
    assert set(ablation[ablation["backbone"] == "ndt2"]["row"]) == {"mtm-prompt", "glm", "oracle", "chance"}
    for model in ("ndt1/temporal", "ndt1/mtm-prompt", "ndt2/mtm-prompt"):
        for eid in table["eid"]:
            log = pd.read_csv(workdir / f"results/models/{model}/single/{eid}/seed-0/log.csv")
            assert len(log) == 2 and np.isfinite(log["val_loss"]).all()
    config = json.loads((workdir / f"results/models/ndt2/mtm-prompt/single/{eid}/seed-0/config.json").read_text())
    assert config["model_class"] == "NDT2" and config["model_config"]["patch_size"] == 8
    assert config["metadata"]["stop_reason"] == "epoch cap (2)" and not config["metadata"]["converged"]
    metrics = pd.read_csv(workdir / "results/eval/metrics.csv")
    # (3 models x 3 sessions + 2 finetuned models) x (4 activity tasks x 7 metrics + 2 behaviour targets x 2),
    # a supervised head's row for each of 2 models x 3 sessions, and the GLM's 3 tasks x 9 values
    # (7 metrics, its smoothing width and penalty) on each of 3 sessions
    assert len(metrics) == (3 * 3 + 2) * (4 * 7 + 2 * 2) + 2 * 3 + 3 * 3 * 9
    assert set(metrics["seed"]) == {0}
    glm = metrics[(metrics["model"] == "glm/smoothing/single") & (metrics["metric"] == "bps")]
    # the GLM from 23 other units beats each unit's mean rate; a region's few units may not
    assert len(glm) == 3 * 3 and (glm[glm["task"] == "co-smoothing"]["value"] > 0).all()
    heads = metrics[metrics["metric"] == "head_r2"]
    assert set(heads["model"]) == {"ndt1/temporal/single", "ndt1/mtm-prompt/single"} and len(heads) == 6
    # R² of 2-epoch encoders and 5-epoch heads: finite; test_supervised holds heads to chance
    assert set(heads["task"]) == {"whisker-motion-energy"} and (heads["value"] < 1).all()
    assert np.isfinite(heads["value"]).all()
    assert set(metrics["backbone"]) == {"ndt1", "ndt2", "glm"}
    assert set(metrics[metrics["setting"] == "pretrain-2"]["eid"]) == {"824cf03d-4012-4ab1-b499-c83a92c5589e"}
    assert np.isfinite(metrics["value"]).all()
    bps = metrics[metrics["metric"] == "bps"].set_index(["model", "eid", "task"])["value"]
    oracle = metrics[metrics["metric"] == "oracle_bps"].set_index(["model", "eid", "task"])["value"]
    assert (oracle > 0.05).all() and (bps < oracle).all()
    summary = pd.read_csv(workdir / "results/eval/summary.csv")
    counted = summary.groupby("setting")["n_sessions"]
    assert counted.unique().to_dict() == {"pretrain-2": [1], "single": [3]}


def test_a_broken_session_fails_alone_with_a_clear_error(scenario):
    bad = scenario.bad
    assert scenario.broken_run.returncode != 0
    log = scenario.broken_fetch_log
    assert bad in log and "spikes.times.npy" in log and "truncated" in log
    assert scenario.binned_after_broken_run == {eid: eid != bad for eid in scenario.binned_after_broken_run}
    assert not scenario.sessions_table_after_broken_run  # the aggregate waits for every session


def test_rerun_of_one_session_touches_no_other(scenario):
    before, after = scenario.binned_mtimes["before"], scenario.binned_mtimes["after"]
    assert scenario.bad not in before and scenario.bad in after
    assert before == {eid: mtime for eid, mtime in after.items() if eid != scenario.bad}
    assert len(pd.read_csv(scenario.workdir / "results/sessions/sessions.tsv", sep="\t")) == 3


def test_a_code_change_reruns_what_it_affects(workdir, tmp_path):
    """The rules' code hash: a change to the model code reruns training and what follows, not the
    data steps; a comment does not rerun anything. Dry runs against a copy of src/ (first on
    PYTHONPATH), on the finished run."""
    src = shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(src)}

    def planned() -> dict[str, int]:
        result = snakemake(workdir, "-n", "results/figures/all.done", "--quiet", "rules", env=env)
        stats = result.stdout[result.stdout.find("Job stats:") :]
        return {l.split()[0]: int(l.split()[1]) for l in stats.splitlines()[3:] if len(l.split()) == 2 and l.split()[1].isdigit()}

    assert planned() == {}
    layers = src / "mtm" / "models" / "layers.py"
    layers.write_text(layers.read_text() + "\n# a comment\n")
    assert planned() == {}
    layers.write_text(layers.read_text() + "\n\ndef unused():\n    return 1\n")
    jobs = planned()
    assert jobs["train_single"] == 9 and jobs["pretrain"] == 2 and jobs["finetune"] == 2 and jobs["evaluate"] == 11
    assert jobs["glm_baseline"] == 3  # it shares mtm.evaluate's scoring
    assert jobs["supervised_head"] == 6  # heads read the encoder's latents
    assert not {"demo_cache", "fetch", "qc", "bin", "sessions_table", "data_overview"} & set(jobs)


def sessions_run_by(wd: Path, job_id: int) -> set[str]:
    """The eids in the wildcards of the steps a SLURM job ran, from its SLURM log."""
    log = next((wd / ".snakemake/slurm_logs").rglob(f"{job_id}.log")).read_text()
    return set(re.findall(r"^\s*wildcards:.*\beid=([0-9a-f-]{36})", log, flags=re.M))


def test_slurm_profile_on_a_real_cluster(scenario):
    """profiles/slurm on a real one-node SLURM: per-session and per-model jobs, joins on the
    submitting host, a failed session retried with more memory while the others finish, and a
    rerun of that session by its target that submits its job alone."""
    if scenario.executor != "slurm":
        pytest.skip(f"SLURM could not be started here, so the scenario ran locally: {scenario.why_not_slurm}")
    wd, bad, jobs = scenario.workdir, scenario.bad, scenario.jobs
    assert scenario.daemons_left == [], "the test stops the daemons it started"
    good = [eid for eid in scenario.binned_after_broken_run if eid != bad]
    for step in jobs.values():
        step["sessions"] = [sessions_run_by(wd, job_id) for job_id in step["job_id"]]
    submitted = pd.concat(jobs.values())
    assert not submitted["comment"].str.contains("demo|table|figure|overview|all").any(), "local rules stay local"
    assert jobs["cache"].empty

    broken = jobs["broken"]
    failed = broken[broken["state"] == "FAILED"]
    # the bad session's data group on each attempt, with more memory each time: fetch itself is
    # never retried (retries: 0), but the group takes the most retries of its rules, the
    # profile's one retry of qc and bin (for memory)
    assert set(failed["comment"]) == {"rule_session_bin_fetch_qc"} and all(s == {bad} for s in failed["sessions"])
    first = failed["min_memory_mb"].iloc[0]
    assert failed["min_memory_mb"].tolist() == [first * attempt for attempt in range(1, len(failed) + 1)]
    assert len(failed) == 2
    done = broken[broken["state"] != "FAILED"]
    assert (done["state"] == "COMPLETED").all()
    # the other sessions went through: one data job each, one job per single-session model
    data_jobs = done[done["comment"] == "rule_session_bin_fetch_qc"]
    assert sorted(s for (s,) in data_jobs["sessions"]) == sorted(good)
    models = done[done["comment"] == "rule_model_evaluate_train_single"]
    assert len(models) == 3 * len(good) and all(s <= set(good) and len(s) == 1 for s in models["sessions"])
    assert not any(bad in s for s in broken["sessions"] if s != {bad})
    heads = done[done["comment"].str.startswith("rule_supervised_head")]  # one job per head, not grouped
    assert sorted(s for (s,) in heads["sessions"]) == sorted(good * 2)  # temporal and MtM, one target

    rerun = jobs["rerun"]
    assert len(rerun) == 1 and rerun["sessions"].iloc[0] == {bad} and rerun["state"].iloc[0] == "COMPLETED"

    complete = jobs["complete"]
    assert (complete["state"] == "COMPLETED").all()
    assert not complete["comment"].str.contains("session_").any(), "no session's data steps ran again"
    assert (complete["comment"] == "rule_model_evaluate_train_single").sum() == 3
    assert complete["comment"].str.startswith("rule_pretrain").sum() == 2  # ndt1, ndt2
    assert complete["comment"].str.startswith("rule_finetune").sum() == 2
    heads = complete[complete["comment"].str.startswith("rule_supervised_head")]
    assert len(heads) == 2 and all(s == {bad} for s in heads["sessions"])


def test_snakefiles_are_formatted_and_pass_lint():
    result = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow/rules"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and "Congratulations" in result.stdout + result.stderr, result.stdout + result.stderr


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
    for category in ("0. The paper's comparisons", "9. Training", "1. Single-session ablation", "2. MtM against the baseline", "3. Region rasters",
                     "4. Multi-session", "5. Prompt ablation", "6. Data", "7. Metrics", "8. Supervised heads"):  # fmt: skip
        assert category in shown, f"category {category!r} is not shown"
