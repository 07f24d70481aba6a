"""mtm.cost: jobs from Snakemake's dry run, per-job estimates that scale as they must, SLURM
resources from the same numbers, and `mtm cost`."""

import copy
import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mtm import cost
from mtm.cli import main
from mtm.config.schema import schema
from mtm.session import write_session

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests/config/tiny.yaml"
PAPER_EID = "d57df551-6dcb-4242-9c72-b806cff5613a"  # a held-out session: 772 trials in the authors' splits


@pytest.fixture(scope="module")
def tiny_auto(tmp_path_factory) -> Path:
    """The tiny config with evaluation's and the heads' runtime and mem_mb `auto` (training's
    stay numbers)."""
    config = yaml.safe_load(TINY.read_text())
    for section in ("evaluation", "supervised"):
        config.setdefault(section, {}).update(runtime="auto", mem_mb="auto")
    path = tmp_path_factory.mktemp("cost") / "tiny_auto.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def dry_run(tiny_auto):
    """Every job of the tiny config, from one dry run (seconds), and its raw output."""
    output = cost.run_dry_run(tiny_auto, workdir=REPO)
    return cost.parse_dry_run(output), output


def paper_config(**training) -> dict:
    config = cost.merged_config(REPO / "config/paper.yaml", REPO)
    config["training"].update(training)
    return config


def paper_sessions(n: int = 1) -> list[cost.SessionSize]:
    eids = [line for line in (REPO / "src/mtm/data/mtm_target_eids.txt").read_text().split() if line][5 : 5 + n]
    return [cost.paper_session(eid) for eid in (eids if n > 1 else [PAPER_EID])]


def test_the_job_counts_of_the_tiny_config_are_the_dry_runs(dry_run):
    jobs, output = dry_run
    counts = cost.job_counts(jobs)
    assert counts == cost._job_stats(output)  # the job list and Snakemake's own table agree
    # and they are what the tiny config asks for: 3 sessions; NDT1 with 2 schemes and NDT2 with 1,
    # each on every session; MtM pretrained on 2 sessions and finetuned on 1 per backbone
    assert (counts["fetch"], counts["qc"], counts["bin"], counts["glm_baseline"]) == (3, 3, 3, 3)
    assert counts["train_single"] == (2 + 1) * 3
    assert (counts["pretrain"], counts["finetune"]) == (2, 2)
    assert counts["evaluate"] == 9 + 2
    assert counts["supervised_head"] == 2 * 3  # NDT1's two schemes, each session, one target
    pretrain = [job for job in jobs if job.rule == "pretrain"]
    assert all(len(job.binned) == 2 and job.wildcards["n"] == "2" for job in pretrain)


def test_auto_resources_are_the_estimates_and_numbers_stay_numbers(dry_run, tiny_auto):
    """The dry run's resources: training's explicit numbers as given, and for `auto` what
    job_resources computes for that job (the same function SLURM's request comes from)."""
    jobs, _ = dry_run
    config = cost.merged_config(tiny_auto, REPO)
    seen = set()
    for job in jobs:
        if job.rule in ("train_single", "pretrain", "finetune"):
            assert (job.resources["runtime"], job.resources["mem_mb"]) == ("120", "8000")
        elif job.rule in ("evaluate", "supervised_head", "glm_baseline"):
            expected = cost.job_resources(job.rule, config, binned=job.binned, wildcards=job.wildcards)
            assert (int(job.resources["runtime"]), int(job.resources["mem_mb"])) == (expected["runtime"], expected["mem_mb"])
            seen.add(job.rule)
    assert seen == {"evaluate", "supervised_head", "glm_baseline"}


def test_double_the_epochs_double_the_gpu_hours():
    sessions = paper_sessions()
    for rule, key in (("train_single", "epochs"), ("pretrain", "epochs")):
        one, two = [paper_config(), paper_config()]
        if rule == "pretrain":
            one["multisession"]["epochs"], two["multisession"]["epochs"] = 500, 1000
            data = paper_sessions(10)
        else:
            one["training"][key], two["training"][key] = 500, 1000
            data = sessions
        for backbone in ("ndt1", "ndt2"):
            wildcards = {"backbone": backbone, "scheme": "mtm-prompt", "seed": "0"}
            a = cost.estimate_job(rule, one, sessions=data, wildcards=wildcards, gpu="h100")
            b = cost.estimate_job(rule, two, sessions=data, wildcards=wildcards, gpu="h100")
            assert a.device == b.device == "h100" and a.fixed_s == b.fixed_s > 0
            assert b.seconds - b.fixed_s == pytest.approx(2 * (a.seconds - a.fixed_s))
            assert b.device_hours - b.fixed_s / 3600 == pytest.approx(2 * (a.device_hours - a.fixed_s / 3600))
    # more trials, more time; a session without usable trials costs its start-up alone
    small, large = (dataclasses.replace(sessions[0], n_train=n) for n in (100, 200))
    args = dict(wildcards={"backbone": "ndt1", "scheme": "temporal"}, gpu="h100")
    assert cost.estimate_job("train_single", paper_config(), sessions=[large], **args).breakdown["train"] == pytest.approx(
        2 * cost.estimate_job("train_single", paper_config(), sessions=[small], **args).breakdown["train"])
    unusable = dataclasses.replace(sessions[0], usable=False)
    skipped = cost.estimate_job("train_single", paper_config(), sessions=[unusable], **args)
    assert skipped.seconds == skipped.fixed_s


def test_a_stacked_job_costs_less_per_model_when_the_table_says_so():
    config = paper_config()
    sessions = paper_sessions()
    schemes = ["temporal", "neuron", "causal", "intra-region", "inter-region", "mtm"]  # one stack: no prompt
    table = cost.throughput_table()
    alone = [cost.estimate_job("train_single", config, sessions=sessions, wildcards={"backbone": "ndt1", "scheme": s},
                               gpu="h100") for s in schemes]  # fmt: skip
    stacked = cost.estimate_job("train_stack_ndt1", config, sessions=sessions, wildcards={"eid": PAPER_EID, "seed": "0"},
                                schemes=schemes, gpu="h100")  # fmt: skip
    assert stacked.models == len(schemes)
    # the table's stacked NDT1 row (an estimate) is faster per model than 6 models alone
    row = next(r for r in table if r.device == "h100" and r.backbone == "ndt1" and r.phase == "train" and r.stack == 6)
    single = next(r for r in table if r.device == "h100" and r.backbone == "ndt1" and r.phase == "train" and r.stack == 1)
    assert row.samples_per_s / row.stack < single.samples_per_s and row.samples_per_s > single.samples_per_s
    assert stacked.breakdown["train"] == pytest.approx(sum(a.breakdown["train"] for a in alone) * single.samples_per_s / row.samples_per_s)
    assert stacked.device_hours < sum(a.device_hours for a in alone)
    assert not stacked.measured and any(r.stack == 6 and not r.is_measured for r in stacked.lookup.rows)
    # without a stacked row, K stacked models take K models' training time: no gain but the start-ups
    plain = tuple(r for r in table if r.stack == 1)
    flat = cost.estimate_job("train_stack", config, sessions=sessions, wildcards={"backbone": "ndt1"}, schemes=schemes,
                             gpu="h100", table=plain)  # fmt: skip
    assert flat.breakdown["train"] == pytest.approx(sum(a.breakdown["train"] for a in alone))
    assert flat.seconds == pytest.approx(sum(a.seconds for a in alone) - 5 * alone[0].fixed_s)
    # a prompted model has other weights' shapes: it trains beside the stack, as its own group
    mixed = cost.estimate_job("train_stack", config, sessions=sessions, wildcards={"backbone": "ndt1"},
                              schemes=[*schemes, "mtm-prompt"], gpu="h100")  # fmt: skip
    prompted = cost.estimate_job("train_single", config, sessions=sessions, wildcards={"backbone": "ndt1", "scheme": "mtm-prompt"}, gpu="h100")
    assert mixed.breakdown["train"] == pytest.approx(stacked.breakdown["train"] + prompted.breakdown["train"])


def test_an_unknown_device_class_names_the_known_ones(capsys):
    with pytest.raises(cost.CostError, match=r"unknown device class 'a100'.*knows cpu, h100"):
        cost.estimate_job("train_single", paper_config(), sessions=paper_sessions(), wildcards={"backbone": "ndt1"}, gpu="a100")
    with pytest.raises(SystemExit, match=r"mtm cost: unknown device class 'a100'.*cpu, h100"):
        main(["cost", "--configfile", str(TINY), "--gpu", "a100", "--directory", str(REPO)])
    # the config's cost.gpu offers the table's classes
    assert sorted(schema()["properties"]["cost"]["properties"]["gpu"]["enum"]) == cost.device_classes()


def test_the_cli_prints_the_table_and_what_is_measured(dry_run, monkeypatch, capsys):
    jobs, _ = dry_run
    monkeypatch.setattr(cost, "dry_run_jobs", lambda *args, **kwargs: jobs)
    main(["cost", "--configfile", str(TINY), "--gpu", "h100", "--directory", str(REPO)])
    out = capsys.readouterr().out
    lines = out.splitlines()
    row = next(line for line in lines if line.startswith("train_single "))
    assert row.split()[1:3] == ["9", "cpu"]  # training.gpus: 0, so on the CPU whatever --gpu says
    assert "total:" in out and "assumptions:" in out and "measured (throughput.csv)" in out and "estimated, not measured" in out
    assert "patience 5: epochs is a cap" in out


def test_session_sizes_from_the_binned_file_or_the_paper(tmp_path):
    config = paper_config()
    known = cost.paper_session(PAPER_EID)
    assert (known.n_trials, known.n_units) == (772, cost.PAPER_UNITS) and known.n_train + known.n_val + known.n_test == 772
    other = cost.paper_session("00000000-0000-4000-8000-000000000000")
    assert other.n_trials == 558 and other.source == "the MtM sessions' median"
    # a binned file of real data is read; one of the demo's (true rates) is not this config's
    path = tmp_path / "sessions" / PAPER_EID / "binned.parquet"
    path.parent.mkdir(parents=True)
    write_fake_session(path, n_trials=40, n_units=6, demo=False)
    size = cost.session_size(config, path)
    assert (size.n_trials, size.n_units, size.n_train, size.source) == (40, 6, (40 + 2) // 3, "binned file")
    write_fake_session(path, n_trials=40, n_units=6, demo=True)
    assert cost.session_size(config, path).n_trials == 772
    assert cost.session_size(copy.deepcopy(config) | {"source": "demo", "demo": {"n_units": 6, "n_trials": 400}}, path).n_trials == 40


def test_job_resources_are_torch_free_and_apply_the_safety_factor():
    config = paper_config()
    wildcards = {"backbone": "ndt1", "scheme": "mtm-prompt", "setting": "single"}
    estimate = cost.estimate_job("evaluate", config, sessions=paper_sessions(), wildcards=wildcards)
    resources = cost.job_resources("evaluate", config, sessions=paper_sessions(), wildcards=wildcards)
    # on the GPU, evaluation's forward rate is an estimate: it counts ESTIMATE_MARGIN times
    assert estimate.device == "h100" and 0 < estimate.estimated_s <= estimate.seconds
    seconds = estimate.seconds + (cost.ESTIMATE_MARGIN - 1) * estimate.estimated_s
    assert resources["runtime"] == max(cost.MIN_RUNTIME_MIN, math.ceil(seconds * 1.5 / 60))
    assert resources["mem_mb"] >= estimate.host_mem_mb * 1.5 * (1 if estimate.memory_measured else cost.ESTIMATE_MARGIN)
    retry = cost.job_resources("evaluate", config, sessions=paper_sessions(), wildcards=wildcards, attempt=2)
    assert retry["mem_mb"] >= 2 * resources["mem_mb"] - 100
    code = (
        "import sys; from mtm import cost; c = cost.merged_config('config/paper.yaml'); "
        f"cost.job_resources('finetune', c, binned=['results/sessions/{PAPER_EID}/binned.parquet'], "
        "wildcards={'backbone': 'ndt2', 'scheme': 'mtm-prompt', 'n': '10'}); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def write_fake_session(path: Path, *, n_trials: int, n_units: int, demo: bool) -> None:
    rng = np.random.default_rng(0)
    trials = pd.DataFrame({
        "trial_index": np.arange(n_trials), "split": np.array(["train", "val", "test"] * n_trials)[:n_trials],
        "align_time": np.arange(n_trials, dtype=float), "choice": np.ones(n_trials, int), "block": np.full(n_trials, 0.5),
        "reward": np.ones(n_trials, int), "signed_contrast": np.zeros(n_trials), "reaction_time": np.full(n_trials, 0.3),
    })  # fmt: skip
    units = pd.DataFrame({
        "uuid": [f"u{i}" for i in range(n_units)], "probe": ["probe00"] * n_units, "cluster_id": np.arange(n_units),
        "allen": ["CA1"] * n_units, "beryl": ["CA1"] * n_units, "cosmos": ["HPF"] * n_units,
        "depth_um": np.zeros(n_units), "firing_rate": np.ones(n_units), "label": np.ones(n_units),
    })  # fmt: skip
    counts = rng.poisson(1.0, (n_trials, 5, n_units)).astype(np.uint8)
    behaviour = {name: np.zeros((n_trials, 5)) for name in ("wheel_speed", "whisker_motion_energy")}
    meta = {"provenance": {"eid": path.parent.name}, "binning": {"n_bins": 5, "bin_size": 0.02}, "session": {"usable": True}}
    write_session(path, trials=trials, counts=counts, behaviour=behaviour, units=units, meta=meta,
                  true_rate=np.ones((n_trials, 5, n_units), np.float32) if demo else None)  # fmt: skip
