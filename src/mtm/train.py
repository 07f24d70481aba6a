"""Train a backbone (NDT1 or NDT2) with a masking scheme, or MtM's schedule of schemes, on one or many sessions.

`train(sessions, config, out_dir)` (a `TrainConfig`, mtm.config.training) writes into `out_dir`:
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

Model selection (`selection`; mtm.validation) keeps the weights of the epoch with
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

import pandas as pd
import torch

import mtm
from mtm.checkpoint import clear_state, save_model
from mtm.config.training import TrainConfig
from mtm.data import SessionTensors
from mtm.device import autocast, resolve_device, resolve_precision
from mtm.distributed import World, process_group, world_from_env
from mtm.io import write_text
from mtm.masking import Mask, apply_mask, make_mask, sample_scheme
from mtm.models import BACKBONES, Backbone, poisson_nll
from mtm.resumable import STATE_DIR, ResumableRun
from mtm.runtime import exit_on_sigterm, num_threads, progress_bar
from mtm.schedules import PlateauSchedule, one_cycle
from mtm.seeds import derive_seed
from mtm.validation import Scores, fixed_masks, prompt_of, validate
from mtm.vocabulary import MTM_SCHEMES

log = logging.getLogger(__name__)

PLATEAU_FACTOR = 0.2  # "plateau": the learning rate's cut when the validation loss stalls
PLATEAU_CUTS = 2  # "plateau": cuts before a stall ends the run
LOG_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "val_psth_r2", "lr", "seconds")


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """model: the selected weights, in eval mode (best_epoch; best_val_loss is that epoch's
    validation loss); history: the rows of log.csv."""

    model: Backbone
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]]


def log_columns(schemes: Sequence[str]) -> list[str]:
    """log.csv's columns: LOG_COLUMNS, then the validation loss under each scheme."""
    return [*LOG_COLUMNS, *(f"val_{s}" for s in schemes)]


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
    sessions = _trainable_sessions(sessions)
    out_dir = Path(out_dir)
    state_dir = out_dir / STATE_DIR
    world = world_from_env()
    device = world.device(resolve_device(config.device))
    precision = resolve_precision(config.precision, device)
    name = sessions[0].eid if len(sessions) == 1 else f"{len(sessions)} sessions"
    with num_threads(threads), exit_on_sigterm(), process_group(world, device):
        # setup: the model, optimizer, schedule and generators; a saved state of this run replaces them
        run = TrainingRun(sessions, config, device, init, world)
        run.resume(state_dir, name)
        # the validation masks, drawn once: every epoch is scored on the same entries
        val_masks = validation_masks(run)
        bar = progress_bar(total=config.epochs * run.steps_per_epoch, initial=run.step)
        try:
            while run.epoch < config.epochs and run.stop_reason is None:
                started = time.perf_counter()
                # one pass over the train batches, an optimizer step per batch
                train_loss = train_epoch(run, precision, bar)
                # the validation scores, under the fixed masks
                val = validate(run.model, sessions, val_masks, batch_size=config.batch_size,
                               use_prompt=config.use_prompt, precision=precision)  # fmt: skip
                # the log row, selection and convergence; then the state a restart resumes from
                end_epoch(run, train_loss, val, name, seconds=time.perf_counter() - started)
                if world.is_main:
                    run.save_if_due(state_dir)
                bar.set_postfix_str(f"epoch {run.epoch} val {run.history[-1]['val_loss']:.4f}")
        finally:
            bar.close()
        return finish(run, out_dir, name, precision, {"processes": world.size, **(metadata or {})})


def validation_masks(run: TrainingRun) -> dict[str, dict[str, list[Mask]]]:
    """The run's validation masks per session id, drawn once (mtm.validation.fixed_masks)."""
    config = run.config
    return {
        data.eid: fixed_masks(
            data, "val", config.schemes, seed=config.seed, batch_size=config.batch_size,
            token_units=run.model.token_units,
        )  # fmt: skip
        for data in run.sessions
    }


def finish(run: TrainingRun, out_dir: Path, name: str, precision: str, metadata: dict[str, Any]) -> TrainResult:
    """The end of a run: the selected epoch's weights and the log are written to `out_dir` (by
    the main process), and the state is no longer needed."""
    if run.best_weights is None:
        raise RuntimeError(f"{name}: the validation {run.config.selection} was never finite: {run.history}")
    run.load_weights(run.best_weights)
    run.model.eval()
    if run.world.is_main:
        save_model(out_dir, run.model, _metadata(run, precision, metadata))
        write_log(out_dir / "log.csv", run.history, run.config.schemes)
        clear_state(out_dir / STATE_DIR)
    run.world.barrier()
    selected = run.history[run.best_epoch - 1]["val_loss"]
    return TrainResult(model=run.model, best_epoch=run.best_epoch, best_val_loss=selected, history=run.history)


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


def _trainable_sessions(sessions: SessionTensors | Sequence[SessionTensors]) -> list[SessionTensors]:
    sessions = [sessions] if isinstance(sessions, SessionTensors) else list(sessions)
    if len({data.eid for data in sessions}) != len(sessions) or not sessions:
        raise ValueError(f"training needs distinct sessions, got {[data.eid for data in sessions]}")
    for data in sessions:
        if not (len(data.splits["train"]) and len(data.splits["val"])):
            counts = {k: len(v) for k, v in data.splits.items()}
            raise ValueError(f"{data.eid}: training needs train and val trials, has {counts}")
    return sessions


class TrainingRun(ResumableRun):
    """One training run's state (mtm.resumable): the model, AdamW, the learning-rate schedule,
    the data and mask generators, and the convergence counters."""

    def __init__(
        self,
        sessions: list[SessionTensors],
        config: TrainConfig,
        device: torch.device,
        init: Backbone | None = None,
        world: World = World(),
    ) -> None:
        super().__init__(device)
        self.sessions, self.config, self.world = sessions, config, world
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
        self.step = 0
        self.best_val_loss = math.inf  # the lowest so far: convergence (selection may follow another score)
        self.stale = 0  # epochs since the validation loss last improved, or the rate was cut
        self.stop_reason: str | None = None  # set when the run ends before `epochs`

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
        return {
            "config": dataclasses.asdict(self.config),
            "sessions": {data.eid: list(data.shape) for data in self.sessions},
            "model_sessions": dict(self.model.config.sessions),
        }

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(tensors)

    def extra_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "best_val_loss": self.best_val_loss,
            "stale": self.stale,
            "stop_reason": self.stop_reason,
            "pending_bias": self.pending_bias,
            "scheduler": self.scheduler.state_dict(),
        }

    def restore_extra(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.best_val_loss, self.stale = state["step"], state["best_val_loss"], state["stale"]
        self.stop_reason, self.pending_bias = state["stop_reason"], state["pending_bias"]


def train_epoch(run: TrainingRun, precision: str, bar=None) -> float:
    """One pass over the train split(s); returns the Poisson NLL per scored entry.

    Each batch is one optimizer step. Its rows are cut into `world.size x accumulation`
    micro-batches; this process runs its `accumulation` of them, each loss scaled so that the
    gradients, summed over micro-batches and averaged over processes, are the whole batch's.
    bar: a progress bar to advance by one per step, or None.
    """
    config, world = run.config, run.world
    run.model.train()
    total, count = 0.0, 0
    batches = run.epoch_batches(run.generators["data"])
    for i, (data, trials) in enumerate(batches):
        if i + 1 < len(batches):
            # pretraining on more sessions than the cache holds: the next batch's is read while this one computes
            batches[i + 1][0].prefetch()
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
        if bar is not None:
            bar.update()
    if world.size > 1:
        total, count = world.sum(total, count)
    return total / count if count else math.nan


def _micro_step(
    run: TrainingRun, data: SessionTensors, trials: torch.Tensor, mask: Mask, rows: torch.Tensor,
    scheme: str, n_scored: int, precision: str, sync: bool,
) -> tuple[float, int]:  # fmt: skip
    """Forward and backward on `rows` of the batch; returns their summed NLL and scored entries.
    An empty piece (a batch smaller than the pieces) still runs, with weight 0, so that every
    process takes part in the gradient exchange."""
    device, config = run.device, run.config
    weight = 1.0 if len(rows) else 0.0
    rows = rows if len(rows) else torch.zeros(1, dtype=torch.long)
    counts = data.counts[trials[rows]].to(device)
    piece = Mask(hidden=mask.hidden[rows], target=mask.target[rows], causal=mask.causal).to(device)
    inputs = apply_mask(counts, piece)
    with run.world.gradient_sync(run.trainer, sync), autocast(precision, device):
        out = run.trainer(inputs, prompt=prompt_of(scheme, use_prompt=config.use_prompt), session=data.eid, causal=mask.causal)
        nll = poisson_nll(out.log_rates, counts, piece.target, reduction="sum")
        loss = nll if config.loss == "sum" else nll / n_scored
        (loss * (weight * run.world.size)).backward()
    return (float(nll.detach()), int(piece.target.sum())) if weight else (0.0, 0)


def end_epoch(run: TrainingRun, train_loss: float, val: Scores, name: str, *, seconds: float) -> None:
    """Count the epoch, select on its score (`selection`), log it, and check convergence."""
    run.epoch += 1
    val_loss, psth_r2 = val.mean_loss(), val.mean_psth_r2()
    improved = val_loss < run.best_val_loss
    run.best_val_loss = min(run.best_val_loss, val_loss)
    run.select(-val_loss if run.config.selection == "val-loss" else psth_r2)
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


def _check_convergence(run: TrainingRun, *, improved: bool) -> None:
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


def _metadata(run: TrainingRun, precision: str, extra: dict[str, Any]) -> dict[str, Any]:
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


def write_log(path: Path, history: list[dict[str, float]], schemes: tuple[str, ...]) -> None:
    write_text(path, pd.DataFrame(history, columns=log_columns(schemes)).to_csv(index=False))
