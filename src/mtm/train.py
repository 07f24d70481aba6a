"""Train a backbone (NDT1 or NDT2) with a masking scheme, or MtM's schedule of schemes, on one or many sessions.

`train(sessions, config, out_dir)` writes into `out_dir`:
    model.safetensors, config.json   the weights of the selected epoch (`selection`)
    log.csv                          one row per epoch (LOG_COLUMNS, then val_<scheme> per scheme)
    state/                           the resumable training state, after every epoch; removed at the end
A run that finds `state/` (from the same config and session) resumes from it. On the CPU a run
killed at any point and restarted ends with weights bit-identical to an uninterrupted run: the
data order and masks come from generators whose states are checkpointed, and so is torch's
global RNG (dropout).

Several sessions (pretraining): every batch comes from one session, and an epoch visits every
training batch of every session in an order drawn from the data generator, so sessions are
sampled in proportion to their training trials (`session_sampling: proportional`); `balanced`
gives each session as many batches per epoch as the largest has, cycling its own. Finetuning:
`init` is a trained model; sessions it lacks are added (`add_session`), those it
has but the run does not train on are removed, and `trainable: session` trains only the new
sessions' stitchers and tokens.

Losses in the log are the exact Poisson negative log-likelihood per scored entry (nats,
`mtm.models.layers.poisson_nll`), whatever the training loss reduction.
The validation masks are drawn once from a generator seeded by (seed, "val"), so every epoch
(and every run with that seed) is scored on the same entries; an MtM model is scored under
each scheme of its schedule (with the scheme's prompt for "mtm-prompt"), and the losses are
averaged over schemes (and then over sessions).

Model selection (`selection`) keeps the weights of the epoch with
    "val-loss"  the lowest validation loss (a proper score of the held-out entries, the measure
                bits/spike is made of)
    "psth-r2"   the highest trial-averaged R2 of the SELECTION_UNITS most active validation
                units (the authors': per unit, the R2 over bins of the mean over validation
                trials of predicted against observed counts, under the validation masks;
                averaged over units, then over schemes and sessions)
Convergence (`patience`) always follows the validation loss. Both are logged every epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import mtm
from mtm.checkpoint import (
    clear_state,
    load_pretrained,
    load_state,
    read_config,
    save_model,
    save_skipped,
    save_state,
)
from mtm.data import REGION_LEVELS, CountsCache, SessionTensors
from mtm.distributed import World, process_group, world_from_env
from mtm.io import write_text
from mtm.masking import Mask, apply_mask, make_mask, sample_scheme
from mtm.metrics import r2_per_unit
from mtm.models import BACKBONES, Backbone, poisson_nll
from mtm.runtime import exit_on_sigterm, num_threads, progress_bar
from mtm.schedules import PlateauSchedule, one_cycle
from mtm.seeds import derive_seed
from mtm.session import load_session, read_session_header
from mtm.vocabulary import MTM_SCHEMES, TRAIN_SCHEMES, prompt_index

log = logging.getLogger(__name__)

MODEL_SIZES = ("demo", "paper")
PRECISIONS = ("auto", "fp32", "bf16")
SESSION_SAMPLING = ("proportional", "balanced")
TRAINABLE = ("all", "session")
LR_SCHEDULES = ("one-cycle", "plateau")
SELECTIONS = ("val-loss", "psth-r2")
SELECTION_UNITS = 50  # "psth-r2": the authors' number of most active validation units
PLATEAU_FACTOR = 0.2  # "plateau": the learning rate's cut when the validation loss stalls
PLATEAU_CUTS = 2  # "plateau": cuts before a stall ends the run
LOG_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "val_psth_r2", "lr", "seconds")
STATE_DIR = "state"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train one model.

    scheme: one of vocabulary.TRAIN_SCHEMES: a masking scheme, or "mtm" (one scheme of MTM_SCHEMES drawn per
        batch) or "mtm-prompt" (the same, with the drawn scheme's prompt token)
    backbone: "ndt1" or "ndt2" (mtm.models.BACKBONES); model: its size, "demo" or "paper"
    patch_size: NDT2's units per token; None keeps the size preset's (NDT1: must be None)
    region_level: units' regions for region masking
    epochs: the most epochs a run takes (with `patience`, a cap; without, the run's length)
    patience: converged = no lower validation loss in `patience` epochs in a row (with
        "plateau": at the lowest learning rate); None trains for `epochs` (the authors' protocol)
    lr_schedule, per batch:
        "one-cycle"  cosine one-cycle over `epochs` (the authors'): from lr / 10 up to `lr` in
                     the first `warmup_fraction` of the steps, then down towards 0
        "plateau"    linear warm-up from lr / 10 to `lr` over the first `warmup_fraction` x
                     `epochs` epochs, then constant; each stall of `patience` epochs cuts the
                     rate by PLATEAU_FACTOR, PLATEAU_CUTS times, and the next stall ends the run
                     (needs `patience`)
    batch_size in trials; lr: the peak learning rate
    precision: "auto" (bf16 autocast on CUDA, fp32 on the CPU), "fp32" or "bf16"
    device: "auto" (CUDA if available), or a torch device string
    loss: the training loss over scored entries, "mean" or "sum"
    selection: which epoch's weights are kept, "val-loss" or "psth-r2" (module docstring)
    single_session_token: a model of one session has a session token (a learned context
        token, as every multi-session model has); False: none, as the authors' single-session models
    causal_context_sees_bins: NDT1's context tokens attend to every bin under causal attention,
        a leak of the future in the authors' code (mtm.models.ndt1); only to reproduce their models
    session_sampling: with several sessions, "proportional" (to training trials) or "balanced"
    trainable: when finetuning, "all" weights or only the new sessions' layers ("session")
    accumulation: micro-batches per batch and process (gradient accumulation); under torchrun a
        batch is shared by all processes, so each takes batch_size / (processes x accumulation)
    dropout: every dropout probability of the model; None keeps the size preset's
    """

    scheme: str
    backbone: str = "ndt1"
    model: str = "demo"
    patch_size: int | None = None
    region_level: str = "beryl"
    epochs: int = 15
    patience: int | None = None
    lr_schedule: str = "one-cycle"
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.15
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    loss: str = "mean"
    selection: str = "val-loss"
    single_session_token: bool = True
    causal_context_sees_bins: bool = False
    session_sampling: str = "proportional"
    trainable: str = "all"
    accumulation: int = 1
    dropout: float | None = None

    def __post_init__(self) -> None:
        choices = dict(
            scheme=TRAIN_SCHEMES,
            backbone=tuple(BACKBONES),
            model=MODEL_SIZES,
            region_level=REGION_LEVELS,
            precision=PRECISIONS,
            loss=("mean", "sum"),
            session_sampling=SESSION_SAMPLING,
            trainable=TRAINABLE,
            lr_schedule=LR_SCHEDULES,
            selection=SELECTIONS,
        )
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrainConfig.{name} must be one of {allowed}, not {getattr(self, name)!r}")
        if self.patch_size is not None and (self.backbone != "ndt2" or self.patch_size < 1):
            raise ValueError(f"TrainConfig: patch_size is NDT2's, >= 1; got {self.patch_size} for {self.backbone}")
        if self.accumulation < 1 or not (self.dropout is None or 0 <= self.dropout < 1):
            raise ValueError(f"TrainConfig: need accumulation >= 1 and dropout None or in [0, 1): {self}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr < 0 or not 0 < self.warmup_fraction < 1:
            raise ValueError(
                f"TrainConfig: need epochs >= 1, batch_size >= 1, lr >= 0, 0 < warmup_fraction < 1: {self}"
            )
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"TrainConfig: patience must be None or >= 1, got {self.patience}")
        if self.causal_context_sees_bins and self.backbone != "ndt1":
            raise ValueError("TrainConfig: causal_context_sees_bins is NDT1's (the authors' causal attention)")
        if self.lr_schedule == "plateau" and self.patience is None:
            raise ValueError("TrainConfig: lr_schedule 'plateau' cuts the rate after `patience` epochs; set patience")

    @property
    def schemes(self) -> tuple[str, ...]:
        """The masking schemes of the schedule."""
        return MTM_SCHEMES if self.scheme in ("mtm", "mtm-prompt") else (self.scheme,)

    @property
    def use_prompt(self) -> bool:
        return self.scheme == "mtm-prompt"


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """model: the selected weights, in eval mode (best_epoch; best_val_loss is that epoch's
    validation loss); history: the rows of log.csv."""

    model: Backbone
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]]


def build_model(config: TrainConfig, *, sessions: dict[str, int], n_bins: int) -> Backbone:
    """A fresh `config.backbone` of `config.model`'s size for `sessions` (session id -> number of units)."""
    model_cls, config_cls = BACKBONES[config.backbone]
    preset = config_cls.paper if config.model == "paper" else config_cls.demo
    options = {} if config.dropout is None else {"dropout": config.dropout, "embed_dropout": config.dropout}
    if config.patch_size is not None:
        options["patch_size"] = config.patch_size
    if config.causal_context_sees_bins:
        options["causal_context_sees_bins"] = True
    options["use_session"] = config.single_session_token or len(sessions) > 1
    return model_cls(preset(sessions, n_bins=n_bins, use_prompt=config.use_prompt, loss=config.loss, **options))


def prompt_of(scheme: str, *, use_prompt: bool) -> int | None:
    """The prompt token of `scheme` (vocabulary.prompt_index), or None without prompts."""
    return prompt_index(scheme) if use_prompt else None


def fixed_masks(
    data: SessionTensors,
    split: str,
    schemes: tuple[str, ...],
    *,
    seed: int,
    batch_size: int,
    token_units: int | None = None,
) -> dict[str, list[Mask]]:
    """Masks for every batch of `split` (unshuffled) under each scheme, drawn from (seed, split,
    session) alone: the same whichever other sessions are trained alongside. token_units: the
    model's (for random-token masking)."""
    generator = torch.Generator().manual_seed(derive_seed(seed, split, data.eid))
    shape = (data.n_bins, data.n_units)
    return {
        scheme: [
            make_mask(
                scheme, shape=(len(trials), *shape), regions=data.regions, generator=generator, token_units=token_units
            )
            for trials in data.batches(split, batch_size=batch_size)
        ]
        for scheme in schemes
    }


def masked_poisson_nll(log_rates: torch.Tensor, counts: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:
    """(the Poisson NLL summed over the `target` entries, their number); all (B, T, N)."""
    return float(poisson_nll(log_rates, counts, target, reduction="sum")), int(target.sum())


@dataclass(frozen=True)
class Scores:
    """A split's scores under each scheme's masks: loss, the Poisson NLL per scored entry;
    psth_r2, the trial-averaged R2 of the most active units (module docstring)."""

    loss: dict[str, float]
    psth_r2: dict[str, float]


@torch.no_grad()
def evaluate(
    model: Backbone,
    data: SessionTensors,
    masks: dict[str, list[Mask]],
    *,
    split: str,
    batch_size: int,
    use_prompt: bool,
    precision: str = "fp32",
) -> Scores:
    """The scores of `split` under each scheme's masks (from `fixed_masks`)."""
    model.eval()
    device = next(model.parameters()).device
    loss, psth_r2 = {}, {}
    for scheme, scheme_masks in masks.items():
        total, count, observed, predicted = 0.0, 0, 0.0, 0.0
        for trials, mask in zip(data.batches(split, batch_size=batch_size), scheme_masks, strict=True):
            counts = data.counts[trials].to(device)
            mask = _to_device(mask, device)
            with _autocast(precision, device):
                out = model(counts, mask=mask, prompt=prompt_of(scheme, use_prompt=use_prompt), session=data.eid)
            nll, n = masked_poisson_nll(out.log_rates, counts, mask.target)
            total, count = total + nll, count + n
            observed = observed + counts.sum(0).double()  # (T, N): summed over trials
            predicted = predicted + out.log_rates.float().exp().sum(0).double()
        loss[scheme] = total / count if count else math.nan
        psth_r2[scheme] = active_units_psth_r2(predicted, observed)
    return Scores(loss=loss, psth_r2=psth_r2)


def active_units_psth_r2(predicted: torch.Tensor, observed: torch.Tensor) -> float:
    """The mean over the SELECTION_UNITS most active units of each one's R2 over bins of
    predicted against observed counts summed over trials, both (T, N); the trial count, a
    common factor, leaves R2 unchanged."""
    observed, predicted = observed.cpu().numpy(), predicted.cpu().numpy()
    active = np.argsort(-observed.sum(0), kind="stable")[:SELECTION_UNITS]
    return float(r2_per_unit(predicted[:, active], observed[:, active]).mean())


def resolve_device(device: str) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def _autocast(precision: str, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _to_device(mask: Mask, device: torch.device) -> Mask:
    return dataclasses.replace(mask, hidden=mask.hidden.to(device), target=mask.target.to(device))


class _Run:
    """The mutable state of one training run: what a checkpoint holds."""

    def __init__(
        self,
        sessions: list[SessionTensors],
        config: TrainConfig,
        device: torch.device,
        init: Backbone | None,
        world: World = World(),
    ) -> None:
        self.sessions, self.config, self.device, self.world = sessions, config, device, world
        torch.manual_seed(derive_seed(config.seed, "init"))  # weight init, then dropout
        n_bins = max(data.n_bins for data in sessions)
        if init is None:
            self.model = build_model(config, sessions={d.eid: d.n_units for d in sessions}, n_bins=n_bins)
            new = list(sessions)
        else:
            self.model = init
            new = [d for d in sessions if d.eid not in init.config.sessions]
            for data in new:
                self.model.add_session(data.eid, data.n_units)
            # the model keeps the layers of the sessions it trains on: a pretraining session's
            # are of no use to a model finetuned on another one
            for eid in [eid for eid in init.config.sessions if eid not in {d.eid for d in sessions}]:
                self.model.remove_session(eid)
        self.model.to(device)
        # a new session's units start at their mean rate over the train split (the null model
        # every run must beat), set just before its first batch: reading every session's counts
        # here would make startup grow with the number of sessions
        self.pending_bias = [data.eid for data in new]
        self.trainer = world.wrap(self.model, device)  # what batches go through
        if config.trainable == "session":
            params = [p for data in new for p in self.model.session_parameters(data.eid)]
            if not params:
                raise ValueError("trainable: session needs a session the initial model does not have")
        else:
            params = list(self.model.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.steps_per_epoch = len(self.epoch_batches(torch.Generator()))
        if config.lr_schedule == "plateau":
            warmup = round(config.warmup_fraction * config.epochs * self.steps_per_epoch)
            self.scheduler = PlateauSchedule(
                self.optimizer, lr=config.lr, warmup_steps=warmup, factor=PLATEAU_FACTOR, max_cuts=PLATEAU_CUTS
            )
        else:
            self.scheduler = one_cycle(
                self.optimizer, lr=config.lr, total_steps=config.epochs * self.steps_per_epoch,
                warmup_fraction=config.warmup_fraction,
            )  # fmt: skip
        self.generators = {
            name: torch.Generator().manual_seed(derive_seed(config.seed, name)) for name in ("data", "mask")
        }
        self.epoch, self.step = 0, 0
        self.best_val_loss = math.inf  # the lowest so far: convergence
        self.best_score, self.best_epoch, self.best_weights = -math.inf, 0, None  # selection
        self.stale = 0  # epochs since the validation loss last improved, or the rate was cut
        self.stop_reason: str | None = None  # set when the run ends before `epochs`
        self.history: list[dict[str, float]] = []

    def epoch_batches(self, generator: torch.Generator) -> list[tuple[SessionTensors, torch.Tensor]]:
        """One epoch of (session, trial indices) batches, in an order drawn from `generator`."""
        per_session = [
            list(data.batches("train", batch_size=self.config.batch_size, generator=generator, shuffle=True))
            for data in self.sessions
        ]
        if self.config.session_sampling == "balanced":
            most = max(len(batches) for batches in per_session)
            per_session = [[batches[i % len(batches)] for i in range(most)] for batches in per_session]
        batches = [(data, trials) for data, session_batches in zip(self.sessions, per_session) for trials in session_batches]
        if len(self.sessions) == 1:
            return batches
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    def identity(self) -> dict[str, Any]:
        """What a saved state must match to be resumed by this run."""
        return {
            "config": dataclasses.asdict(self.config),
            "sessions": {data.eid: list(data.shape) for data in self.sessions},
            "model_sessions": dict(self.model.config.sessions),
        }

    def state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(), **{k: g.get_state() for k, g in self.generators.items()}}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            **self.identity(),
            "epoch": self.epoch,
            "step": self.step,
            "best_val_loss": self.best_val_loss,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "stale": self.stale,
            "stop_reason": self.stop_reason,
            "history": self.history,
            "model": self.model.state_dict(),
            "best_weights": self.best_weights,
            "pending_bias": self.pending_bias,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        for name, generator in self.generators.items():
            generator.set_state(state["rng"][name])
        self.epoch, self.step = state["epoch"], state["step"]
        self.best_val_loss, self.best_score, self.best_epoch = state["best_val_loss"], state["best_score"], state["best_epoch"]
        self.best_weights = state["best_weights"]
        self.stale, self.stop_reason = state["stale"], state["stop_reason"]
        self.pending_bias = state["pending_bias"]
        self.history = state["history"]


def train(
    sessions: SessionTensors | Sequence[SessionTensors],
    config: TrainConfig,
    out_dir: str | Path,
    *,
    init: Backbone | None = None,
    threads: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> TrainResult:
    """Train on the sessions' train splits, select on their val splits; write `out_dir` (module
    docstring). init: a trained model to finetune (modified in place); None trains a new one.

    threads: torch's CPU threads for the run (None: as set). metadata: extra config.json entries.
    """
    sessions = [sessions] if isinstance(sessions, SessionTensors) else list(sessions)
    if len({data.eid for data in sessions}) != len(sessions) or not sessions:
        raise ValueError(f"training needs distinct sessions, got {[data.eid for data in sessions]}")
    for data in sessions:
        if not (len(data.splits["train"]) and len(data.splits["val"])):
            counts = {k: len(v) for k, v in data.splits.items()}
            raise ValueError(f"{data.eid}: training needs train and val trials, has {counts}")
    out_dir = Path(out_dir)
    world = world_from_env()
    device = world.device(resolve_device(config.device))
    precision = resolve_precision(config.precision, device)
    name = sessions[0].eid if len(sessions) == 1 else f"{len(sessions)} sessions"
    with num_threads(threads), exit_on_sigterm(), process_group(world, device):
        run = _Run(sessions, config, device, init, world)
        _resume(run, out_dir / STATE_DIR, name)
        val_masks = {
            data.eid: fixed_masks(
                data, "val", config.schemes, seed=config.seed, batch_size=config.batch_size,
                token_units=run.model.token_units,
            )  # fmt: skip
            for data in sessions
        }
        bar = progress_bar(total=config.epochs * run.steps_per_epoch, initial=run.step)
        try:
            while run.epoch < config.epochs and run.stop_reason is None:
                started = time.perf_counter()
                train_loss = _train_epoch(run, precision, bar)
                val = _validate(run, val_masks, precision)
                _end_epoch(run, train_loss, val, name, seconds=time.perf_counter() - started)
                if world.is_main:
                    save_state(out_dir / STATE_DIR, run.state())
                bar.set_postfix_str(f"epoch {run.epoch} val {run.history[-1]['val_loss']:.4f}")
        finally:
            bar.close()
        if run.best_weights is None:
            raise RuntimeError(f"{name}: the validation {config.selection} was never finite: {run.history}")
        run.model.load_state_dict(run.best_weights)
        run.model.eval()
        if world.is_main:
            save_model(out_dir, run.model, _metadata(run, precision, {"processes": world.size, **(metadata or {})}))
            _write_log(out_dir / "log.csv", run.history, config.schemes)
            clear_state(out_dir / STATE_DIR)
        world.barrier()
    selected = run.history[run.best_epoch - 1]["val_loss"]
    return TrainResult(model=run.model, best_epoch=run.best_epoch, best_val_loss=selected, history=run.history)


def _validate(run: _Run, masks: dict[str, dict[str, list[Mask]]], precision: str) -> Scores:
    """Validation scores per scheme, averaged over sessions (each session counts the same)."""
    per_session = [
        evaluate(run.model, data, masks[data.eid], split="val", batch_size=run.config.batch_size,
                 use_prompt=run.config.use_prompt, precision=precision)
        for data in run.sessions
    ]  # fmt: skip

    def mean(values) -> dict[str, float]:
        return {scheme: sum(v[scheme] for v in values) / len(values) for scheme in run.config.schemes}

    return Scores(loss=mean([s.loss for s in per_session]), psth_r2=mean([s.psth_r2 for s in per_session]))


def _resume(run: _Run, state_dir: Path, name: str) -> None:
    state = load_state(state_dir)
    if state is None:
        return
    saved = {k: state.get(k) for k in run.identity()}
    if saved != run.identity():
        log.warning("%s: the state in %s is of another run; starting afresh", name, state_dir)
        clear_state(state_dir)
        return
    run.restore(state)
    log.info("%s: resumed after epoch %d (step %d)", name, run.epoch, run.step)


def _train_epoch(run: _Run, precision: str, bar) -> float:
    """One pass over the train split(s); returns the Poisson NLL per scored entry.

    Each batch is one optimizer step. Its rows are cut into `world.size x accumulation`
    micro-batches; this process runs its `accumulation` of them, each loss scaled so that the
    gradients, summed over micro-batches and averaged over processes, are the whole batch's.
    """
    config, world = run.config, run.world
    run.model.train()
    total, count = 0.0, 0
    for data, trials in run.epoch_batches(run.generators["data"]):
        if data.eid in run.pending_bias:
            run.model.init_readout_bias(data.mean_counts("train"), data.eid)
            run.pending_bias.remove(data.eid)
        scheme = sample_scheme(config.schemes, generator=run.generators["mask"])
        mask = make_mask(
            scheme,
            shape=(len(trials), data.n_bins, data.n_units),
            regions=data.regions,
            generator=run.generators["mask"],
            token_units=run.model.token_units,
        )
        n_scored = int(mask.target.sum())  # over the whole batch, on every process
        run.optimizer.zero_grad(set_to_none=True)
        if n_scored:  # a mask can score nothing (e.g. inter-region masking of a one-region session)
            pieces = torch.arange(len(trials)).tensor_split(world.size * config.accumulation)
            mine = pieces[world.rank * config.accumulation : (world.rank + 1) * config.accumulation]
            for i, rows in enumerate(mine):
                sync = i == len(mine) - 1
                nll, n = _micro_step(run, data, trials, mask, rows, scheme, n_scored, precision, sync)
                total, count = total + nll, count + n
            run.optimizer.step()
        run.scheduler.step()
        run.step += 1
        bar.update()
    if world.size > 1:
        total, count = world.sum(total, count)
    return total / count if count else math.nan


def _micro_step(
    run: _Run, data: SessionTensors, trials: torch.Tensor, mask: Mask, rows: torch.Tensor,
    scheme: str, n_scored: int, precision: str, sync: bool,
) -> tuple[float, int]:  # fmt: skip
    """Forward and backward on `rows` of the batch; returns their summed NLL and scored entries.
    An empty piece (a batch smaller than the pieces) still runs, with weight 0, so that every
    process takes part in the gradient exchange."""
    device, config = run.device, run.config
    weight = 1.0 if len(rows) else 0.0
    rows = rows if len(rows) else torch.zeros(1, dtype=torch.long)
    counts = data.counts[trials[rows]].to(device)
    target = mask.target[rows].to(device)
    inputs = apply_mask(counts, _to_device(Mask(hidden=mask.hidden[rows], target=target, causal=mask.causal), device))
    with run.world.gradient_sync(run.trainer, sync), _autocast(precision, device):
        out = run.trainer(inputs, prompt=prompt_of(scheme, use_prompt=config.use_prompt), session=data.eid, causal=mask.causal)
        nll = poisson_nll(out.log_rates, counts, target, reduction="sum")
        loss = nll if config.loss == "sum" else nll / n_scored
        (loss * (weight * run.world.size)).backward()
    return (float(nll.detach()), int(target.sum())) if weight else (0.0, 0)


def _end_epoch(run: _Run, train_loss: float, val: Scores, name: str, *, seconds: float) -> None:
    run.epoch += 1
    val_loss = sum(val.loss.values()) / len(val.loss)
    psth_r2 = sum(val.psth_r2.values()) / len(val.psth_r2)
    improved = val_loss < run.best_val_loss
    run.best_val_loss = min(run.best_val_loss, val_loss)
    score = -val_loss if run.config.selection == "val-loss" else psth_r2
    if score > run.best_score:
        run.best_score, run.best_epoch = score, run.epoch
        run.best_weights = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    row = dict(
        epoch=run.epoch,
        step=run.step,
        train_loss=train_loss,
        val_loss=val_loss,
        val_psth_r2=psth_r2,
        lr=run.scheduler.get_last_lr()[0],
        seconds=seconds,
        **{f"val_{scheme}": loss for scheme, loss in val.loss.items()},
    )
    run.history.append(row)
    _check_convergence(run, improved=improved)
    log.info(
        "%s %s: epoch %d/%d train %.5f val %.5f lr %.2e %.1f s",
        name, run.config.scheme, run.epoch, run.config.epochs, train_loss, val_loss, row["lr"], seconds,
    )  # fmt: skip


def _check_convergence(run: _Run, *, improved: bool) -> None:
    """After an epoch: count the epochs without a lower validation loss; after `patience` of
    them, cut the rate ("plateau" schedule, while it may) or call the run converged."""
    patience = run.config.patience
    run.stale = 0 if improved else run.stale + 1
    if patience is None or run.stale < patience:
        return
    if isinstance(run.scheduler, PlateauSchedule) and run.scheduler.cut():
        run.stale = 0
        return
    run.stop_reason = f"converged: no lower validation loss in {patience} epochs"


def _metadata(run: _Run, precision: str, extra: dict[str, Any]) -> dict[str, Any]:
    first = run.sessions[0]
    return {
        "eid": first.eid if len(run.sessions) == 1 else None,
        "eids": [data.eid for data in run.sessions],
        "training": dataclasses.asdict(run.config),
        "schemes": list(run.config.schemes),
        "prompt_schemes": list(MTM_SCHEMES) if run.config.use_prompt else None,
        "region_level": first.region_level,
        "region_names": {data.eid: list(data.region_names) for data in run.sessions},
        "regions": {data.eid: data.regions.tolist() for data in run.sessions},
        "n_trials": {data.eid: {split: len(t) for split, t in data.splits.items()} for data in run.sessions},
        "best_epoch": run.best_epoch,
        "selection": run.config.selection,
        "best_val_loss": run.history[run.best_epoch - 1]["val_loss"],
        "best_val_psth_r2": run.history[run.best_epoch - 1]["val_psth_r2"],
        "epochs_run": run.epoch,
        "stop_reason": run.stop_reason or f"epoch cap ({run.config.epochs})",
        "converged": run.stop_reason is not None,
        "device": str(run.device),
        "precision": precision,
        "torch_version": torch.__version__,
        "mtm_version": mtm.__version__,
        **extra,
    }


def _write_log(path: Path, history: list[dict[str, float]], schemes: tuple[str, ...]) -> None:
    columns = [*LOG_COLUMNS, *(f"val_{s}" for s in schemes)]
    write_text(path, pd.DataFrame(history, columns=columns).to_csv(index=False))


def train_session(
    binned_path: str | Path, out_dir: str | Path, config: TrainConfig, *, threads: int | None = None
) -> TrainResult | None:
    """Train on one binned session (see mtm.session). An unusable session is skipped, not an
    error: `config.json` says why, `model.safetensors` holds no tensors, `log.csv` no rows; returns None.
    """
    session = load_session(binned_path, true_rate=False)
    metadata = {"stage": "single", "binned": str(binned_path), "provenance": session.meta.get("provenance")}
    if not session.usable:
        reason = session.meta["session"].get("reason") or "unusable session"
        save_skipped(out_dir, reason, {"eid": session.eid, "training": dataclasses.asdict(config), **metadata})
        _write_log(Path(out_dir) / "log.csv", [], config.schemes)
        log.info("%s: skipped, %s", session.eid, reason)
        return None
    data = SessionTensors.from_session(session, region_level=config.region_level)
    return train(data, config, out_dir, threads=threads, metadata=metadata)


def pretrain_sessions(
    binned_paths: Sequence[str | Path],
    out_dir: str | Path,
    config: TrainConfig,
    *,
    threads: int | None = None,
    cached_sessions: int = 32,
) -> TrainResult | None:
    """Train one model on several binned sessions (unusable ones are left out and named in
    config.json). With no usable session the model is skipped, as in `train_session`.

    Sessions are read lazily: only the counts of the `cached_sessions` most recently used ones
    are held in memory (see mtm.data).
    """
    usable, left_out = [], {}
    cache = CountsCache(cached_sessions)
    for path in binned_paths:
        header = read_session_header(path)
        if header.usable:
            usable.append(SessionTensors.from_file(path, cache, region_level=config.region_level))
        else:
            left_out[header.eid] = header.meta["session"].get("reason") or "unusable session"
    metadata = {"stage": "pretrain", "binned": [str(p) for p in binned_paths], "left_out": left_out}
    if not usable:
        save_skipped(out_dir, "no usable session", {"eid": None, "training": dataclasses.asdict(config), **metadata})
        _write_log(Path(out_dir) / "log.csv", [], config.schemes)
        return None
    for eid, reason in left_out.items():
        log.info("%s: left out of pretraining, %s", eid, reason)
    return train(usable, config, out_dir, threads=threads, metadata=metadata)


def finetune_session(
    checkpoint: str | Path,
    binned_path: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    *,
    threads: int | None = None,
) -> TrainResult | None:
    """Take the model saved in `checkpoint` to a new binned session: new stitchers and session
    token, then training as `config` says (`trainable`: all weights or the new layers only). The
    finetuned model keeps the shared weights and the new session's layers only."""
    session = load_session(binned_path, true_rate=False)
    metadata = {
        "stage": "finetune", "binned": str(binned_path), "pretrained": str(checkpoint),
        "provenance": session.meta.get("provenance"),
    }  # fmt: skip
    if not session.usable:
        reason = session.meta["session"].get("reason") or "unusable session"
        save_skipped(out_dir, reason, {"eid": session.eid, "training": dataclasses.asdict(config), **metadata})
        _write_log(Path(out_dir) / "log.csv", [], config.schemes)
        return None
    pretrained = read_config(checkpoint)
    if "skipped" in pretrained:
        reason = f"the pretrained model was skipped ({pretrained['skipped']})"
        save_skipped(out_dir, reason, {"eid": session.eid, "training": dataclasses.asdict(config), **metadata})
        _write_log(Path(out_dir) / "log.csv", [], config.schemes)
        return None
    model = load_pretrained(checkpoint)
    if not isinstance(model, BACKBONES[config.backbone][0]):
        raise ValueError(f"{checkpoint}: the model is a {type(model).__name__}, not the configured {config.backbone}")
    if model.config.use_prompt != config.use_prompt:
        raise ValueError(f"{checkpoint}: the model's prompt tokens ({model.config.use_prompt}) do not match scheme {config.scheme}")
    data = SessionTensors.from_session(session, region_level=config.region_level)
    return train(data, config, out_dir, init=model, threads=threads, metadata=metadata)
