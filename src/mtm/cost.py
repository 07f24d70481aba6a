"""What a run of the workflow costs, before it is submitted, and the SLURM resources of its jobs.

    mtm cost --configfile config/paper.yaml --gpu h100

prints, per rule, the number of jobs (Snakemake's own dry run: `dry_run_jobs`), the device-hours
of a job and of all of them, and a job's peak memory, on a device class of the throughput table
`mtm/data/throughput.csv` (`h100`, `cpu`, ...), then the totals and every assumption, and which
figures were measured and which are estimates.

The same numbers size the jobs: a rule whose config section says `runtime: auto` or
`mem_mb: auto` asks SLURM for `job_resources(rule, config, ...)`: the estimate times a safety
factor (`cost.safety`), for the GPU class `cost.gpu` of the config (jobs with `gpus: 0` on the
CPU).

A job's estimate (`estimate_job`):

    training        start-up + epochs x (train samples / training rate
                                         + validation samples / forward rate
                                         + writing the run's state, after an epoch when due:
                                           at most STATE_SAVE_SHARE of the run's time, as mtm.resumable)
                    train samples of an epoch: the train trials of its sessions (train_stack: of
                    each of its models); epochs: the cap (`epochs`; with `patience` runs stop
                    earlier, so this is an upper bound)
    evaluate        start-up + forward samples / forward rate + decoders; the forward samples
                    of every hold-out task (SPIKE_SHARE: the (unit, trial) pairs that run alone)
    supervised_head start-up + the encoder's forward pass over the trials + epochs x the
                    head's steps (frozen encoder) or training steps (full, gradual)
    glm_baseline    CPU: (scored units x units x trials x grid points) / the GLM's rate
    fetch, qc, bin  fixed estimates (network and disk bound)

Sessions' sizes come from their binned files (`results/sessions/<eid>/binned.parquet`, the
header only) when they exist and hold the configured kind of data; otherwise from the MtM
authors' per-session split sizes (`mtm/data/mtm_session_sizes.csv`, real data) or the demo's
config (demo). The table's rows say where and how each figure was measured (`source`:
measured | estimate, and for memory `mem_source`).

Torch-free, and light to import: the rules call `job_resources` at parse time.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
import re
import statistics
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mtm.config import stages
from mtm.config.checks import read_eids
from mtm.config.training import STATE_SAVE_SHARE
from mtm.config.validate import validate_config
from mtm.vocabulary import MTM_SCHEMES

DATA = Path(__file__).with_name("data")
THROUGHPUT_CSV = DATA / "throughput.csv"
SESSION_SIZES_CSV = DATA / "mtm_session_sizes.csv"
DEFAULT_TARGET = "results/figures/all.done"

# The paper's sessions when their files are not here (real data). Trials: the authors' split
# sizes per session (SESSION_SIZES_CSV; median 558 trials, 390 for training); units: MtM's
# 26,376 neurons over 39 sessions [lecture notes on MtM; the pilot session has 668]; regions:
# the median count of Allen acronyms per repeated-site insertion (mtm/data/re_clusters.pqt: 18.5),
# an upper bound for Beryl's.
PAPER_UNITS = 676
PAPER_REGIONS = 19
DEMO_REGIONS = 8  # the demo's units come from real insertions; about this many Beryl regions
N_BINS = 100  # 2 s windows of 20 ms (the only binning measured)
# The share of (unit, test trial) pairs with a spike: each runs its own hold-out pass (mtm.heldout;
# a unit silent in a trial shares the trial's unmasked pass). Real data: 41.6% of 668 real units
# of the median repeated-site insertion (bench/bench_cosmooth.py); the demo: all, an upper bound.
SPIKE_SHARE = {"one": 0.42, "demo": 1.0}

# Parameters (millions) of a model with one session, and per further session, counted from
# mtm.models at 676 units (paper size) and 256 units (demo size, config.yaml's sessions).
PARAMS_M = {("ndt1", "paper"): 12.52, ("ndt2", "paper"): 10.80, ("ndt1", "demo"): 0.28, ("ndt2", "demo"): 0.31}
SESSION_PARAMS_M = {("ndt1", "paper"): 1.26, ("ndt2", "paper"): 0.001, ("ndt1", "demo"): 0.10, ("ndt2", "demo"): 0.001}
# A run's state, written after an epoch when due (mtm.resumable): weights, the selected epoch's
# weights and AdamW's two moments, fp32: 16 bytes a parameter. Written at WRITE_MB_PER_S
# (estimate: a cluster's shared filesystem).
STATE_BYTES_PER_PARAM = 16
WRITE_MB_PER_S = 500.0
# Fixed seconds of a job: start-up (imports, CUDA, reading the session) and, for evaluate, the
# decoders' cross-validated fits and the tables (estimates; the CPU start-up was measured by
# bench/bench_demo.py, see throughput.csv's `startup` rows).
EVAL_FIXED_S = {"demo": 20.0, "paper": 300.0}
# Rules that are neither trained nor scored: seconds and host MB per job, estimates. The demo's
# (its qc and bin logs span a few seconds, plus a job's start-up); real data's, where fetching
# from the IBL server is bound by the network (a local ONE cache: a minute), and bin takes about
# a second of binning (bench/bench_binning.py) besides reading the spikes.
FIXED_RULES = {
    "demo": {"demo_cache": (60.0, 2000.0), "fetch": (10.0, 1000.0), "qc": (15.0, 2000.0), "bin": (10.0, 2000.0)},
    "one": {"fetch": (600.0, 2000.0), "qc": (120.0, 4000.0), "bin": (60.0, 4000.0)},
}
OTHER_RULE = (30.0, 2000.0)  # joins, tables, figures: local rules, seconds each


def fixed_cost(rule: str, config: Mapping[str, Any]) -> tuple[float, float] | None:
    """(seconds, host MB) of a job of a rule with a fixed estimate, or None."""
    fixed = FIXED_RULES["demo" if config["source"] == "demo" else "one"]
    if rule == "fetch" and config["source"] != "demo" and config["one"]["mode"] == "local":
        return (60.0, 2000.0)
    return fixed.get(rule)


COUNTS_CACHE_SESSIONS = 32  # pretraining holds the counts of this many sessions (mtm.data)

SAFETY = 1.5  # SLURM asks for the estimate times this (config: cost.safety)
ESTIMATE_MARGIN = 2.0  # and for what rests on estimates, not measurements, this much more
MIN_RUNTIME_MIN = 10
MIN_MEM_MB = 1000

# The section of the config that holds a rule's threads, GPUs, runtime and mem_mb.
SECTIONS = {
    "train_single": "training", "train_stack": "training", "pretrain": "training", "finetune": "training",
    "evaluate": "evaluation", "glm_baseline": "evaluation", "supervised_head": "supervised",
}  # fmt: skip
TRAINING_STAGES = {"train_single": "single", "train_stack": "single", "pretrain": "pretrain", "finetune": "finetune"}


def rule_kind(rule: str) -> str:
    """The rule a job's estimate follows: train_stack for the stacked training rules of each
    backbone (train_stack_ndt1, ...), else the rule itself."""
    return "train_stack" if rule.startswith("train_stack") else rule


class CostError(ValueError):
    """A question the table or the dry run cannot answer; the message says what is known."""


# ---------------------------------------------------------------- the throughput table


@dataclasses.dataclass(frozen=True)
class Throughput:
    """A row of throughput.csv: `samples_per_s` of one process on `device` (train: training
    samples, summed over the `stack` models of a stacked step; forward: samples through the
    model without gradients; head: head-training samples of a frozen encoder; glm: unit x
    trial pairs of the GLM baseline; startup: seconds of a job's start-up, in `samples_per_s`)."""

    device: str
    backbone: str
    model: str
    phase: str
    precision: str
    batch_size: int
    stack: int
    cuda_graphs: bool
    units: int
    threads: int
    samples_per_s: float
    peak_mem_mb: float
    host_mem_mb: float
    source: str
    mem_source: str
    measured: str
    comment: str

    @property
    def is_measured(self) -> bool:
        return self.source == "measured"

    def describe(self) -> str:
        what = f"{self.device} {self.backbone} {self.model} {self.phase} {self.precision}"
        if self.batch_size:
            what += f" batch {self.batch_size}"
        if self.stack > 1:
            what += f" stack {self.stack}"
        unit = "s" if self.phase == "startup" else "samples/s"
        mem = f", {self.peak_mem_mb:.0f} MB ({self.mem_source})" if self.peak_mem_mb else ""
        where = f"; {self.measured}" if self.measured else ""
        return f"{what}: {self.samples_per_s:g} {unit} ({self.source}){mem}{where}"


@functools.cache
def throughput_table(path: str | Path = THROUGHPUT_CSV) -> tuple[Throughput, ...]:
    """The rows of the throughput table (lines starting with # are comments)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(line for line in handle if line.strip() and not line.startswith("#")))
    table = []
    for row in rows:
        table.append(Throughput(
            device=row["device"], backbone=row["backbone"], model=row["model"], phase=row["phase"],
            precision=row["precision"], batch_size=int(row["batch_size"] or 0), stack=int(row["stack"] or 1),
            cuda_graphs=row["cuda_graphs"] == "yes", units=int(row["units"] or 0), threads=int(row["threads"] or 0),
            samples_per_s=float(row["samples_per_s"]), peak_mem_mb=float(row["peak_mem_mb"] or 0),
            host_mem_mb=float(row["host_mem_mb"] or 0), source=row["source"], mem_source=row["mem_source"] or row["source"],
            measured=row["measured"], comment=row["comment"],
        ))  # fmt: skip
    bad = sorted({r.source for r in table} - {"measured", "estimate"} | {r.mem_source for r in table} - {"measured", "estimate"})
    if bad:
        raise CostError(f"{path}: source and mem_source are measured | estimate, not {bad}")
    return tuple(table)


def device_classes(table: Sequence[Throughput] | None = None) -> list[str]:
    """The device classes of the table: `--gpu` and `cost.gpu` take one of these."""
    return sorted({row.device for row in table or throughput_table()})


def check_device(device: str, table: Sequence[Throughput] | None = None) -> str:
    known = device_classes(table)
    if device not in known:
        raise CostError(f"unknown device class {device!r}: the throughput table knows {', '.join(known)} ({THROUGHPUT_CSV.name})")
    return device


@dataclasses.dataclass
class Lookup:
    """The rows an estimate rests on, and what was assumed on the way."""

    rows: list[Throughput] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def measured(self) -> bool:
        return all(row.is_measured for row in self.rows) and not self.notes


def _row(table, lookup: Lookup, *, device, backbone, model, phase, precision, stack=1, threads=0) -> Throughput:
    """The row for these keys; else the nearest one (another precision), noted in `lookup`. On
    the CPU, the fastest row of at most `threads` threads (more threads are never slower; on a
    shared machine a 2-thread run can measure slower than a 1-thread one)."""
    candidates = [r for r in table if (r.device, r.backbone, r.model, r.phase) == (device, backbone, model, phase)]
    if not candidates:
        known = sorted({f"{r.backbone}/{r.model}" for r in table if r.device == device and r.phase == phase})
        raise CostError(f"the throughput table has no {phase} row for {backbone} at {model} size on {device} (it has {known})")
    exact = [r for r in candidates if r.precision == precision and r.stack == stack]
    if exact:
        fitting = [r for r in exact if r.threads <= threads] or [min(exact, key=lambda r: r.threads)]
        row = max(fitting, key=lambda r: r.samples_per_s)
    else:
        same_stack = [r for r in candidates if r.stack == stack] or candidates
        row = sorted(same_stack, key=lambda r: (r.precision != precision, r.stack))[0]
        if row.precision != precision:
            lookup.notes.append(f"{device} {backbone} {model} {phase}: no {precision} row, its {row.precision} row used")
    lookup.rows.append(row)
    return row


def _rate(row: Throughput, lookup: Lookup, *, threads: int, units: int, patch_size: int | None) -> float:
    """The row's rate for a job with `threads` CPU threads and `units` units."""
    rate = row.samples_per_s
    if row.device == "cpu" and row.threads and threads != row.threads:
        if threads < row.threads:
            rate *= threads / row.threads
            lookup.notes.append(f"cpu {row.phase}: {threads} thread(s), the rate of {row.threads} scaled down in proportion")
        else:
            lookup.notes.append(f"cpu {row.phase}: {threads} threads, no faster than the {row.threads} measured")
    if row.backbone == "ndt2" and row.units and units and patch_size and row.phase in ("train", "forward"):
        # NDT2's tokens grow with the units (a token per patch and bin); its cost roughly with them
        row_patch = 128 if row.model == "paper" else 64  # the model size's patches, as measured
        tokens, row_tokens = math.ceil(units / patch_size), math.ceil(row.units / row_patch)
        if tokens != row_tokens:
            rate *= row_tokens / tokens
            lookup.notes.append(f"ndt2: {tokens} patches a bin against the row's {row_tokens}: rate scaled")
    return rate


# ---------------------------------------------------------------- sessions' sizes


@dataclasses.dataclass(frozen=True)
class SessionSize:
    eid: str
    n_trials: int
    n_train: int
    n_val: int
    n_test: int
    n_units: int
    n_regions: int
    usable: bool = True
    source: str = "binned file"


def split_sizes(n_trials: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """(train, val, test) trial counts as mtm.splits cuts them: at int(f0 n) and int((f0+f1) n)."""
    first = int(fractions[0] * n_trials)
    second = int((fractions[0] + fractions[1]) * n_trials)
    return first, second - first, n_trials - second


@functools.cache
def _paper_sizes() -> dict[str, tuple[int, int, int, int]]:
    with open(SESSION_SIZES_CSV, newline="") as handle:
        return {r["eid"]: (int(r["n_trials"]), int(r["n_train"]), int(r["n_val"]), int(r["n_test"])) for r in csv.DictReader(handle)}


def paper_session(eid: str, fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> SessionSize:
    """A real session's size before its data are fetched: its trials as the MtM authors split
    them (every session of their list; another session: their median), PAPER_UNITS units."""
    sizes = _paper_sizes()
    if eid in sizes:
        n_trials, source = sizes[eid][0], "the MtM authors' split sizes"
    else:
        n_trials, source = int(statistics.median(s[0] for s in sizes.values())), "the MtM sessions' median"
    return SessionSize(eid, n_trials, *split_sizes(n_trials, fractions), PAPER_UNITS, PAPER_REGIONS, source=source)


@functools.lru_cache(maxsize=4096)
def _binned_header(path: str, mtime: float, region_level: str) -> tuple[int, int, int, int, int, int, bool, bool]:
    """(trials, train, val, test, units, regions, usable, demo) of a binned session's header."""
    import pyarrow.parquet as pq

    from mtm.session import read_session_header

    header = read_session_header(path)
    splits = header.trials["split"].value_counts()
    units = header.units
    regions = units[region_level].nunique() if region_level in units else 0
    usable = bool(header.meta.get("session", {}).get("usable", True))
    demo = "true_rate" in pq.read_schema(path).names
    return (len(header.trials), int(splits.get("train", 0)), int(splits.get("val", 0)), int(splits.get("test", 0)),
            len(units), int(regions), usable, demo)  # fmt: skip


def session_size(config: Mapping[str, Any], binned: str | Path) -> SessionSize:
    """The size of the session of `binned` (results/sessions/<eid>/binned.parquet): its header
    when the file exists and holds this config's kind of data (the demo's, with the demo's
    units; or real data), else what the config or the paper says it will hold."""
    path = Path(binned)
    eid = path.parent.name
    fractions = config["splits"]["fractions"]
    demo = config["source"] == "demo"
    if path.is_file():
        header = _binned_header(str(path), path.stat().st_mtime, config["training"]["region_level"])
        n, train, val, test, units, regions, usable, is_demo = header
        if is_demo == demo and (not demo or units == config["demo"]["n_units"] or not usable):
            return SessionSize(eid, n, train, val, test, units, regions or DEMO_REGIONS, usable, source="binned file")
    if demo:
        n = config["demo"]["n_trials"]
        return SessionSize(eid, n, *split_sizes(n, fractions), config["demo"]["n_units"], DEMO_REGIONS, source="demo config")
    return paper_session(eid, fractions)


def config_sessions(config: Mapping[str, Any], results: str | Path = "results") -> list[SessionSize]:
    """Every configured session's size (`session_size` of its binned file under `results`)."""
    if config["sessions"] is None:
        from mtm.demo import demo_sessions

        eids = [s.eid for s in demo_sessions(config["demo"]["n_sessions"])]
    else:
        eids = read_eids(config["sessions"], "sessions")
    return [session_size(config, Path(results) / "sessions" / eid / "binned.parquet") for eid in eids]


# ---------------------------------------------------------------- one job


@dataclasses.dataclass
class JobEstimate:
    """One job: `seconds` of wall time on `device` (`gpus` of them), `fixed_s` of it start-up
    and other costs that do not grow with the work, the device's peak memory (GPU memory on a
    GPU, resident memory on the CPU) and the host's; `models` trained in it."""

    rule: str
    device: str
    gpus: int
    seconds: float
    fixed_s: float
    device_mem_mb: float
    host_mem_mb: float
    models: int = 1
    lookup: Lookup = dataclasses.field(default_factory=Lookup)
    notes: list[str] = dataclasses.field(default_factory=list)
    breakdown: dict[str, float] = dataclasses.field(default_factory=dict)  # seconds by part
    estimated_s: float = 0.0  # of `seconds`, what rests on estimates, not measurements

    @property
    def memory_measured(self) -> bool:
        return bool(self.lookup.rows) and all(r.mem_source == "measured" for r in self.lookup.rows if r.peak_mem_mb)

    @property
    def device_hours(self) -> float:
        """Hours of the device class: GPU-hours on a GPU (every GPU of the job), else CPU-job hours."""
        return self.seconds * max(self.gpus, 1) / 3600

    @property
    def measured(self) -> bool:
        return bool(self.lookup.rows) and self.lookup.measured and not self.notes


def job_device(rule: str, config: Mapping[str, Any], gpu: str) -> tuple[str, int]:
    """(device class, GPUs) of a job of `rule`: `gpu` when its config section asks for GPUs."""
    kind = rule_kind(rule)
    section = SECTIONS.get(kind)
    gpus = int(config[section].get("gpus", 0)) if section and kind != "glm_baseline" else 0
    if kind == "train_stack":  # a stack trains in one process, on one GPU
        gpus = min(gpus, 1)
    if gpus and gpu != "cpu":
        return gpu, gpus
    return "cpu", 0


def _precision(wanted: str, device: str) -> str:
    """`auto` as mtm.device resolves it: bf16 on a GPU; fp32 on the cpu class, whose rows were
    measured on a CPU without hardware bf16 (no AVX512-BF16, no AMX: bf16 there is emulated)."""
    if wanted != "auto":
        return wanted
    return "fp32" if device == "cpu" else "bf16"


def _startup(table, lookup: Lookup, device: str) -> tuple[float, bool]:
    """(seconds, measured) of a job's start-up on `device`."""
    rows = [r for r in table if r.device == device and r.phase == "startup"]
    if not rows:
        raise CostError(f"the throughput table has no startup row for {device}")
    lookup.rows.append(rows[0])
    return rows[0].samples_per_s, rows[0].is_measured


def _sessions(config, binned, sessions) -> list[SessionSize]:
    if sessions is not None:
        return list(sessions)
    paths = [binned] if isinstance(binned, (str, Path)) else list(binned or [])
    if not paths:
        raise CostError("a job's sessions: give `binned` (its binned.parquet inputs) or `sessions`")
    return [session_size(config, p) for p in paths]


def estimate_job(
    rule: str,
    config: Mapping[str, Any],
    *,
    binned: str | Path | Iterable[str | Path] = (),
    sessions: Sequence[SessionSize] | None = None,
    wildcards: Mapping[str, str] | None = None,
    gpu: str | None = None,
    schemes: Sequence[str] | None = None,
    table: Sequence[Throughput] | None = None,
) -> JobEstimate:
    """The cost of one job of `rule` (see the module docstring): train_single, train_stack_<backbone>
    (or train_stack with a backbone wildcard), pretrain, finetune, evaluate, supervised_head,
    glm_baseline; other rules get fixed estimates (FIXED_RULES, OTHER_RULE).

    binned: the job's binned.parquet inputs (their sessions' sizes: `session_size`), or
    sessions: their sizes; wildcards: the job's (backbone, scheme, setting or n, seed, target);
    gpu: the device class of jobs that ask for GPUs (default: the config's `cost.gpu`);
    schemes: a stack's models (default: every scheme of the backbone in training.schemes).
    """
    table = table or throughput_table()
    wildcards = dict(wildcards or {})
    gpu = check_device(gpu or config.get("cost", {}).get("gpu", "h100"), table)
    kind = rule_kind(rule)
    if kind not in SECTIONS:
        seconds, host = fixed_cost(kind, config) or OTHER_RULE
        return JobEstimate(rule, "cpu", 0, seconds, seconds, host, host, models=0, estimated_s=seconds)
    if kind != rule:  # train_stack_<backbone>
        wildcards.setdefault("backbone", rule.removeprefix("train_stack_"))
    device, gpus = job_device(rule, config, gpu)
    section = config[SECTIONS[kind]]
    threads = int(section.get("threads", 1))
    data = _sessions(config, binned, sessions)
    if kind in TRAINING_STAGES:
        estimate = _training(kind, config, data, wildcards, device, gpus, threads, schemes, table)
    elif kind == "evaluate":
        estimate = _evaluation(config, data, wildcards, device, gpus, threads, table)
    elif kind == "supervised_head":
        estimate = _head(config, data, wildcards, device, gpus, threads, table)
    else:
        estimate = _glm(config, data, threads, table)
    estimate.rule = rule
    return estimate


def _model_size(config) -> str:
    return config["training"]["model"]


def _patch(config, backbone: str) -> int | None:
    if backbone != "ndt2":
        return None
    return config["training"]["patch_size"] or (128 if _model_size(config) == "paper" else 64)


def _state_mb(backbone: str, model: str, n_sessions: int) -> float:
    params = PARAMS_M[(backbone, model)] + SESSION_PARAMS_M[(backbone, model)] * (n_sessions - 1)
    return params * STATE_BYTES_PER_PARAM  # MB, params in millions


def _data_mb(sessions: Sequence[SessionSize]) -> float:
    """The counts a run holds: uint8 trials x bins x units, of at most COUNTS_CACHE_SESSIONS."""
    held = sorted(sessions, key=lambda s: -s.n_trials * s.n_units)[:COUNTS_CACHE_SESSIONS]
    return sum(s.n_trials * N_BINS * s.n_units for s in held) / 1e6


def _val_schemes(scheme: str) -> int:
    """Validation scores an MtM model under each of its schemes (mtm.validation)."""
    return len(MTM_SCHEMES) if scheme in ("mtm", "mtm-prompt") else 1


def _training(rule, config, data, wildcards, device, gpus, threads, schemes, table) -> JobEstimate:
    backbone = wildcards.get("backbone", "ndt1")
    model = _model_size(config)
    stage = TRAINING_STAGES[rule]
    if rule == "train_stack":
        schemes = list(schemes or config["training"]["schemes"][backbone])
    else:
        schemes = [wildcards.get("scheme", "mtm-prompt")]
    train = stages.train_config(config, stage=stage, backbone=backbone, scheme=schemes[0], seed=0)
    lookup = Lookup()
    precision = fwd_precision = _precision(train.precision, device)
    usable = [s for s in data if s.usable]
    units = max((s.n_units for s in usable), default=0)
    patch = _patch(config, backbone)
    single = _row(table, lookup, device=device, backbone=backbone, model=model, phase="train", precision=precision,
                  threads=threads)
    single_rate = _rate(single, lookup, threads=threads, units=units, patch_size=patch)
    forward = _row(table, lookup, device=device, backbone=backbone, model=model, phase="forward", precision=fwd_precision,
                   threads=threads)
    forward_rate = _rate(forward, lookup, threads=threads, units=units, patch_size=patch)
    startup, startup_measured = _startup(table, lookup, device)
    train_samples = sum(s.n_train for s in usable)
    # the models of a stack train side by side in groups of equal shapes: prompted models apart (mtm.stack)
    groups = [g for g in ([s for s in schemes if s != "mtm-prompt"], [s for s in schemes if s == "mtm-prompt"]) if g]
    train_s = val_s = device_mem = 0.0  # seconds an epoch; MB
    train_measured = single.is_measured
    notes: list[str] = []
    row_batch = single.batch_size or train.batch_size
    if row_batch != train.batch_size:
        notes.append(f"batch {train.batch_size}: the {device} rate measured at batch {row_batch}, per sample")
    for group in groups:
        k = len(group)
        step_s = row_batch / single_rate  # one model's step
        group_step, group_mem = step_s, single.peak_mem_mb
        if k > 1:
            stacked = [r for r in table if (r.device, r.backbone, r.model, r.phase) == (device, backbone, model, "train")
                       and r.stack > 1 and r.precision == single.precision]  # fmt: skip
            if stacked:
                row = min(stacked, key=lambda r: abs(r.stack - k))
                lookup.rows.append(row)
                train_measured = train_measured and row.is_measured
                row_step = row.stack * row.batch_size / _rate(row, lookup, threads=threads, units=units, patch_size=patch)
                # a stacked step of k models: between one model's and the row's stack, in proportion
                group_step = step_s + (row_step - step_s) * (k - 1) / (row.stack - 1)
                group_mem = single.peak_mem_mb + (row.peak_mem_mb - single.peak_mem_mb) * (k - 1) / (row.stack - 1)
            else:
                group_step, group_mem = k * step_s, k * single.peak_mem_mb
                notes.append(f"{backbone} on {device}: no stacked row, so {k} stacked models take {k} models' time")
        train_s += train_samples / row_batch * group_step  # a step: a batch through each model of the group
        val_s += sum(s.n_val for s in usable) * sum(_val_schemes(x) for x in group) / forward_rate
        device_mem = max(device_mem, group_mem)
    state_mb = _state_mb(backbone, model, len(data)) * len(schemes)
    state_s = state_mb / WRITE_MB_PER_S
    epochs = train.epochs if usable else 0
    if gpus > 1:  # data-parallel under torchrun: each GPU trains its share of every batch
        train_s, val_s = train_s / (gpus * 0.9), val_s / (gpus * 0.9)
        notes.append(f"{gpus} GPUs a job, data-parallel: 90% scaling assumed")
    session_mb = SESSION_PARAMS_M[(backbone, model)] * 16 * (len(data) - 1) * len(schemes)
    data_mb = _data_mb(data)
    host = (single.host_mem_mb if device != "cpu" else device_mem) + data_mb + session_mb + state_mb
    device_mem += session_mb + (data_mb + state_mb if device == "cpu" else 0)
    parts = {
        "start-up": (startup, startup_measured),
        "train": (epochs * train_s, train_measured),
        "validation": (epochs * val_s, forward.is_measured),
        # after every epoch, unless that is more than STATE_SAVE_SHARE of the run (mtm.resumable); WRITE_MB_PER_S is assumed
        "state": (epochs * min(state_s, STATE_SAVE_SHARE / (1 - STATE_SAVE_SHARE) * (train_s + val_s)), False),
    }
    return _estimate(rule, device, gpus, parts, startup, device_mem, host, len(schemes), lookup, notes)


def _estimate(rule, device, gpus, parts: dict[str, tuple[float, bool]], fixed, device_mem, host, models, lookup, notes=()):
    """A JobEstimate from its parts: name -> (seconds, measured)."""
    breakdown = {name: seconds for name, (seconds, _) in parts.items()}
    estimated = sum(seconds for seconds, measured in parts.values() if not measured)
    return JobEstimate(rule, device, gpus, sum(breakdown.values()), fixed, device_mem, host, models, lookup, list(notes),
                       breakdown, estimated)  # fmt: skip


def _evaluation(config, data, wildcards, device, gpus, threads, table) -> JobEstimate:
    backbone, scheme = wildcards.get("backbone", "ndt1"), wildcards.get("scheme", "mtm-prompt")
    model = _model_size(config)
    evaluation = stages.eval_config(config, setting=wildcards.get("setting", "single"))
    lookup = Lookup()
    precision = _precision(evaluation.precision, device)
    session = data[0]
    row = _row(table, lookup, device=device, backbone=backbone, model=model, phase="forward", precision=precision, threads=threads)
    rate = _rate(row, lookup, threads=threads, units=session.n_units, patch_size=_patch(config, backbone))
    startup, startup_measured = _startup(table, lookup, device)
    started = {"start-up": (startup, startup_measured)}
    if not session.usable:
        return _estimate("evaluate", device, gpus, started, startup, row.peak_mem_mb, row.host_mem_mb, 0, lookup)
    units = min(session.n_units, evaluation.max_units or session.n_units)
    regions = session.n_regions
    # hold-out passes over the test trials: co-smoothing (1 + the units that spike in a trial),
    # intra-region (regions + the same), inter-region (regions), forward prediction (1)
    share = SPIKE_SHARE["demo" if config["source"] == "demo" else "one"]
    tasks = session.n_test * (2 * share * units + 2 * regions + 2)
    if evaluation.prompt_ablation and scheme == "mtm-prompt":
        tasks *= len(MTM_SCHEMES)
    decoding = 3 * session.n_trials  # the decoders' features: whole trials, pre-event bins, a causal pass
    fixed = startup + EVAL_FIXED_S[model]
    data_mb = _data_mb(data)
    host = (row.host_mem_mb if device != "cpu" else row.peak_mem_mb) + 2 * data_mb
    notes = ["hold-out passes: every (unit, test trial) pair runs alone (an upper bound)" if share == 1 else
             f"hold-out passes: a (unit, test trial) pair with a spike runs alone, {100 * share:.0f}% of them (real units)"]
    parts = {**started, "decoders": (EVAL_FIXED_S[model], False), "forward": ((tasks + decoding) / rate, row.is_measured)}
    return _estimate("evaluate", device, gpus, parts, fixed, row.peak_mem_mb, host, 0, lookup, notes)


def _head(config, data, wildcards, device, gpus, threads, table) -> JobEstimate:
    backbone = wildcards.get("backbone", "ndt1")
    model = _model_size(config)
    head = stages.head_config(config, seed=0)
    lookup = Lookup()
    session = data[0]
    forward = _row(table, lookup, device=device, backbone=backbone, model=model, phase="forward",
                   precision="fp32", threads=threads)  # fmt: skip  (mtm.supervised runs in fp32)
    forward_rate = _rate(forward, lookup, threads=threads, units=session.n_units, patch_size=_patch(config, backbone))
    startup, startup_measured = _startup(table, lookup, device)
    if head.encoder == "frozen":  # the latents once, then a linear head on them
        step = _row(table, lookup, device=device, backbone=backbone, model=model, phase="head", precision="fp32", threads=threads)
        step_rate = step.samples_per_s
        mem, host = max(forward.peak_mem_mb, step.peak_mem_mb), max(forward.host_mem_mb, step.host_mem_mb)
    else:  # the encoder trains with the head
        step = _row(table, lookup, device=device, backbone=backbone, model=model, phase="train",
                    precision="fp32", threads=threads)  # fmt: skip  (mtm.supervised runs in fp32)
        step_rate = _rate(step, lookup, threads=threads, units=session.n_units, patch_size=_patch(config, backbone))
        mem, host = step.peak_mem_mb, step.host_mem_mb
    if device == "cpu":
        host = mem
    parts = {
        "start-up": (startup, startup_measured),
        "latents and validation": ((session.n_trials + head.epochs * session.n_val) / forward_rate, forward.is_measured),
        "train": (head.epochs * session.n_train / step_rate, step.is_measured),
    }
    return _estimate("supervised_head", device, gpus, parts, startup, mem, host, 1, lookup)


def _glm(config, data, threads, table) -> JobEstimate:
    lookup = Lookup()
    session = data[0]
    row = _row(table, lookup, device="cpu", backbone="glm", model="any", phase="glm", precision="fp64", threads=threads)
    max_units = config["evaluation"]["max_units"]
    units = min(session.n_units, max_units or session.n_units)
    grid = len(config["glm"]["kernel_sds"]) * len(config["glm"]["alphas"])
    # one L-BFGS fit of the scored units' GLMs, each on every unit's smoothed counts, per grid point
    pairs = units * session.n_units * session.n_trials * grid
    startup, startup_measured = _startup(table, lookup, "cpu")
    rate = _rate(row, lookup, threads=threads, units=0, patch_size=None)
    parts = {"start-up": (startup, startup_measured), "fits": (pairs / rate, row.is_measured)}
    return _estimate("glm_baseline", "cpu", 0, parts, startup, row.peak_mem_mb, row.peak_mem_mb, 0, lookup)


# ---------------------------------------------------------------- SLURM resources


def job_resources(
    rule: str,
    config: Mapping[str, Any],
    *,
    binned: str | Path | Iterable[str | Path] = (),
    sessions: Sequence[SessionSize] | None = None,
    wildcards: Mapping[str, str] | None = None,
    schemes: Sequence[str] | None = None,
    attempt: int = 1,
) -> dict[str, int]:
    """{"runtime": minutes, "mem_mb": MB} of a job of `rule`: `estimate_job` on the config's
    `cost.gpu` (jobs with gpus: 0 on the CPU) times the config's `cost.safety`, and times
    `attempt` (a retried job asks for more); what rests on estimates rather than measurements
    counts ESTIMATE_MARGIN times (its seconds; the memory when a row's memory is an estimate).
    At least MIN_RUNTIME_MIN and MIN_MEM_MB. Torch-free."""
    estimate = estimate_job(rule, config, binned=binned, sessions=sessions, wildcards=wildcards, schemes=schemes)
    safety = float(config.get("cost", {}).get("safety", SAFETY)) * attempt
    seconds = estimate.seconds + (ESTIMATE_MARGIN - 1) * estimate.estimated_s
    memory = estimate.host_mem_mb * (1 if estimate.memory_measured else ESTIMATE_MARGIN)
    return {
        "runtime": max(MIN_RUNTIME_MIN, math.ceil(seconds * safety / 60)),
        "mem_mb": max(MIN_MEM_MB, 100 * math.ceil(memory * safety / 100)),
    }


# ---------------------------------------------------------------- the workflow's jobs


@dataclasses.dataclass(frozen=True)
class DryRunJob:
    """A job of a dry run: its rule, wildcards, binned.parquet inputs, and the resources it asks
    for (as Snakemake printed them)."""

    rule: str
    wildcards: dict[str, str]
    binned: tuple[str, ...]
    resources: dict[str, str] = dataclasses.field(default_factory=dict)


def merged_config(configfile: str | Path, workdir: str | Path = ".", snakefile: str = "Snakefile") -> dict[str, Any]:
    """The config a Snakemake run with `--configfile configfile` sees: the Snakefile's own
    `configfile:` (config.yaml), updated key by key with `configfile`; validated."""
    workdir = Path(workdir)
    base: dict[str, Any] = {}
    text = (workdir / snakefile).read_text() if (workdir / snakefile).is_file() else ""
    match = re.search(r'^configfile:\s*["\'](.+?)["\']', text, re.MULTILINE)
    if match and (workdir / match.group(1)).is_file():
        base = yaml.safe_load((workdir / match.group(1)).read_text()) or {}
    _update(base, yaml.safe_load(Path(configfile).read_text()) or {})
    return validate_config(base)


def _update(config: dict, overwrite: Mapping) -> None:
    """Snakemake's update_config: dicts merged key by key, anything else replaced."""
    for key, value in overwrite.items():
        if isinstance(value, Mapping) and isinstance(config.get(key), dict):
            _update(config[key], value)
        else:
            config[key] = value


_JOB = re.compile(r"^(?:local)?rule (\S+):$")
_FIELD = re.compile(r"^\s+(input|wildcards|resources): (.*)$")


def run_dry_run(
    configfile: str | Path,
    *,
    workdir: str | Path = ".",
    target: str = DEFAULT_TARGET,
    every_job: bool = True,
    snakemake: Sequence[str] | None = None,
) -> str:
    """The output of Snakemake's dry run of `target` with `--configfile configfile`, in
    `workdir`: every job of the config (`every_job`: --forceall), or those a run would start now."""
    command = [*(snakemake or [sys.executable, "-m", "snakemake"]), target, "--dry-run", "--nolock",
               "--configfile", str(Path(configfile).resolve())]  # fmt: skip
    if every_job:
        command.append("--forceall")
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    output = result.stdout + result.stderr
    if result.returncode:
        raise CostError(f"snakemake's dry run failed ({' '.join(command[2:])}):\n{output[-3000:]}")
    return output


def parse_dry_run(output: str) -> list[DryRunJob]:
    """The jobs a dry run lists (rule, wildcards, binned inputs, resources), checked against its
    own job counts (`Job stats`)."""
    jobs, rule, fields = [], None, {}

    def close():
        if rule is not None:
            wildcards = dict(p.split("=", 1) for p in fields.get("wildcards", "").split(", ") if "=" in p)
            binned = tuple(f for f in fields.get("input", "").split(", ") if f.endswith("binned.parquet"))
            resources = dict(p.split("=", 1) for p in fields.get("resources", "").split(", ") if "=" in p)
            jobs.append(DryRunJob(rule, wildcards, binned, resources))

    for line in output.splitlines():
        match = _JOB.match(line)
        if match:
            close()
            rule, fields = match.group(1), {}
        elif rule is not None and (field := _FIELD.match(line)):
            fields[field.group(1)] = field.group(2)
        elif rule is not None and not line.startswith(" "):
            close()
            rule = None
    close()
    counted = _job_stats(output)
    if counted != job_counts(jobs):
        raise CostError(f"the dry run's job list {job_counts(jobs)} does not match its job stats {counted}")
    return jobs


def dry_run_jobs(configfile: str | Path, **options: Any) -> list[DryRunJob]:
    """The jobs of Snakemake's own dry run (`run_dry_run`'s options), parsed (`parse_dry_run`)."""
    return parse_dry_run(run_dry_run(configfile, **options))


def _job_stats(output: str) -> dict[str, int]:
    """The `Job stats` table of a dry run: jobs per rule (empty when nothing is to be done)."""
    lines = output.splitlines()
    if "Job stats:" not in lines:
        return {}
    counts = {}
    for line in lines[lines.index("Job stats:") + 3 :]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def job_counts(jobs: Iterable[DryRunJob]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.rule] = counts.get(job.rule, 0) + 1
    return counts


# ---------------------------------------------------------------- the report

LOCAL = "other (local rules)"  # joins, tables and figures, summed in one row


@dataclasses.dataclass
class RuleCost:
    """The jobs of a rule: their device class, hours each, the largest memory, and which of
    the figures behind them were measured (`parts`: name -> measured)."""

    rule: str
    jobs: int = 0
    device: str = "cpu"
    hours: list[float] = dataclasses.field(default_factory=list)
    device_mem_mb: float = 0.0
    host_mem_mb: float = 0.0
    parts: dict[str, bool] = dataclasses.field(default_factory=dict)
    fixed: bool = False

    @property
    def total_hours(self) -> float:
        return sum(self.hours)

    def add(self, estimate: JobEstimate) -> None:
        self.jobs += 1
        self.device = estimate.device
        self.hours.append(estimate.device_hours)
        self.device_mem_mb = max(self.device_mem_mb, estimate.device_mem_mb)
        self.host_mem_mb = max(self.host_mem_mb, estimate.host_mem_mb)
        self.fixed = not estimate.lookup.rows
        for row in estimate.lookup.rows:
            name = "start-up" if row.phase == "startup" else f"{row.phase} rate" + (" (stacked)" if row.stack > 1 else "")
            self.parts[name] = self.parts.get(name, True) and row.is_measured
            if row.peak_mem_mb:
                self.parts["memory"] = self.parts.get("memory", True) and row.mem_source == "measured"

    def figures(self) -> str:
        if self.fixed:
            return "fixed estimate"
        measured = [k for k, v in self.parts.items() if v]
        estimated = [k for k, v in self.parts.items() if not v]
        out = []
        if measured:
            out.append("measured: " + ", ".join(measured))
        if estimated:
            out.append("estimated: " + ", ".join(estimated))
        return "; ".join(out)


def estimate_run(
    jobs: Sequence[DryRunJob], config: Mapping[str, Any], gpu: str, table: Sequence[Throughput] | None = None
) -> tuple[list[RuleCost], list[JobEstimate]]:
    """Every job's estimate, and per rule (in the dry run's order; the local rules of joins,
    tables and figures in one row, LOCAL) their sums."""
    table = table or throughput_table()
    check_device(gpu, table)
    per_rule: dict[str, RuleCost] = {}
    estimates = []
    for job in jobs:
        estimate = estimate_job(job.rule, config, binned=job.binned, wildcards=job.wildcards, gpu=gpu, table=table)
        estimates.append(estimate)
        name = job.rule if rule_kind(job.rule) in SECTIONS or fixed_cost(job.rule, config) else LOCAL
        per_rule.setdefault(name, RuleCost(name)).add(estimate)
    ordered = sorted(per_rule.values(), key=lambda cost: cost.rule == LOCAL)
    return ordered, estimates


def _hours(values: Sequence[float]) -> str:
    low, high = min(values), max(values)

    def fmt(hours: float) -> str:
        return f"{hours:.3f}" if hours < 0.1 else f"{hours:.2f}" if hours < 10 else f"{hours:.1f}"

    return fmt(low) if math.isclose(low, high, rel_tol=0.05) else f"{fmt(low)}-{fmt(high)}"


def _gb(mb: float) -> str:
    return f"{mb / 1000:.1f} GB"


def report(
    configfile: str | Path,
    gpu: str,
    *,
    workdir: str | Path = ".",
    target: str = DEFAULT_TARGET,
    every_job: bool = True,
    jobs: Sequence[DryRunJob] | None = None,
    label: str | None = None,
) -> str:
    """`mtm cost`'s text: the jobs of the dry run, their cost per rule on `gpu`, the totals,
    the assumptions, and what was measured and what is estimated. label: the config's name."""
    table = throughput_table()
    check_device(gpu, table)
    config = merged_config(configfile, workdir)
    jobs = list(jobs) if jobs is not None else dry_run_jobs(configfile, workdir=workdir, target=target, every_job=every_job)
    rules, estimates = estimate_run(jobs, config, gpu, table)
    sizes = config_sessions(config, Path(workdir) / "results")
    sources: dict[str, int] = {}
    for size in sizes:
        sources[size.source] = sources.get(size.source, 0) + 1
    scope = "--forceall: every job of the config" if every_job else "the jobs a run would start now"
    lines = [
        f"mtm cost: {label or configfile} (on top of the Snakefile's config.yaml, as Snakemake reads it); GPU jobs on: {gpu}",
        f"jobs: Snakemake's dry run of {target} ({scope}): {len(jobs)}",
        f"sessions: {len(sizes)}, sizes from " + ", ".join(f"{k} ({v})" for k, v in sources.items())
        + (f"; per session {sum(s.n_train for s in sizes) / len(sizes):.0f} training trials, "
           f"{sum(s.n_units for s in sizes) / len(sizes):.0f} units on average" if sizes else ""),
        "",
    ]  # fmt: skip
    header = f"{'rule':<20} {'jobs':>5}  {'on':<5} {'h per job':>12} {'total h':>8}  {'mem per job':<17}  figures"
    lines += [header, "-" * 110]
    totals: dict[str, float] = {}
    for cost in rules:
        totals[cost.device] = totals.get(cost.device, 0.0) + cost.total_hours
        mem = _gb(cost.host_mem_mb) if cost.device == "cpu" else f"{_gb(cost.device_mem_mb)} GPU"
        lines.append(f"{cost.rule:<20} {cost.jobs:>5}  {cost.device:<5} {_hours(cost.hours):>12} {cost.total_hours:>8.1f}  {mem:<17}  {cost.figures()}")
    lines.append("-" * 110)
    gpu_total = sum(h for device, h in totals.items() if device != "cpu")
    if gpu != "cpu":
        lines.append(f"total: {gpu_total:.1f} GPU-hours on {gpu}, and {totals.get('cpu', 0.0):.1f} CPU job-hours")
    else:
        lines.append(f"total: {totals.get('cpu', 0.0):.1f} CPU job-hours (every job on the CPU class)")
    on_gpu = [c for c in rules if c.device != "cpu"]
    if on_gpu:
        lines.append("host memory per GPU job (SLURM's mem_mb before the safety factor): "
                     + ", ".join(f"{c.rule} {_gb(c.host_mem_mb)}" for c in on_gpu))  # fmt: skip
    lines += ["", "assumptions:"]
    lines += [f"  - {a}" for a in _assumptions(config, gpu, estimates)]
    used = {id(row): row for e in estimates for row in e.lookup.rows}
    lines += ["", f"measured ({THROUGHPUT_CSV.name}):"]
    lines += [f"  - {r.describe()}" for r in used.values() if r.is_measured] or ["  - none"]
    lines += ["estimated, not measured (each row's comment in the table says how):"]
    lines += [f"  - {r.describe()}" for r in used.values() if not r.is_measured]
    memory = [r for r in used.values() if r.is_measured and r.mem_source != "measured" and r.peak_mem_mb]
    if memory:
        lines.append("  - the memory of " + ", ".join(f"{r.device} {r.backbone} {r.phase} {r.precision}" for r in memory)
                     + ": their rates were measured, their memory was not")  # fmt: skip
    fixed = {job.rule: fixed_cost(job.rule, config) for job in jobs if fixed_cost(job.rule, config)}
    lines.append("  - " + "".join(f"{rule} {seconds:.0f} s, " for rule, (seconds, _) in fixed.items())
                 + f"{LOCAL} {OTHER_RULE[0]:.0f} s a job")  # fmt: skip
    return "\n".join(lines)


def _assumptions(config, gpu, estimates: Sequence[JobEstimate]) -> list[str]:
    training, multi = config["training"], config["multisession"]
    state = [e for e in estimates if rule_kind(e.rule) in TRAINING_STAGES]
    out = [
        f"training: epochs {training['epochs']} (pretraining {multi['epochs']}, finetuning {multi['finetune_epochs']}) over the "
        f"train trials, batch {training['batch_size']}; "
        + ("no early stopping (patience: null): every epoch runs" if training["patience"] is None
           else f"patience {training['patience']}: epochs is a cap, so these are upper bounds"),
        "each epoch adds validation (val trials x the model's schemes, forward only) and writing the run's state when due "
        f"(mtm.resumable: {STATE_BYTES_PER_PARAM} bytes a parameter, at an assumed {WRITE_MB_PER_S:.0f} MB/s, "
        f"at most {100 * STATE_SAVE_SHARE:.0f}% of the run)",
        "evaluation: every hold-out task's forward passes over the test trials, with every scored unit "
        f"(evaluation.max_units: {config['evaluation']['max_units'] or 'every unit'}), "
        f"plus {EVAL_FIXED_S[config['training']['model']]:.0f} s for the decoders (an estimate)",
        f"a rule runs on the GPU class when its section asks for GPUs (training.gpus {training['gpus']}, evaluation.gpus "
        f"{config['evaluation']['gpus']}, supervised.gpus {config['supervised']['gpus']}); otherwise, and glm_baseline always, on the CPU",
        "memory: GPU memory (torch's peak) for GPU jobs, resident memory for CPU jobs; `runtime: auto` and `mem_mb: auto` "
        f"ask for {config['cost']['safety']}x the estimate (mem_mb: the host's)",
    ]  # fmt: skip
    share = sum(e.breakdown.get("state", 0) for e in state) / max(sum(e.seconds for e in state), 1e-9)
    if share >= 0.01:
        out.append(f"writing the state is {100 * share:.0f}% of the training jobs' time in this estimate")
    notes = sorted({note for e in estimates for note in (*e.lookup.notes, *e.notes)})
    return out + notes
