"""Train several models of one session together, as one stacked computation.

A session's single-session models differ only in their masking scheme (the paper's grid: seven
schemes per backbone). At paper size a batch of 16 trials is too small to keep a GPU busy: each
model's step is bound by kernel launches, not arithmetic. `train_stack` trains K such models in
one process: every batch runs once through all K, their weights stacked along a new first axis
(torch.func: `functional_call` under `vmap`), so each kernel does K models' work.

    train_stack(data, [TrainConfig(scheme="temporal"), TrainConfig(scheme="neuron"), ...],
                ["out/temporal", "out/neuron", ...])

Each model keeps its own `mtm.train.TrainingRun`: weights, AdamW, schedule, mask generator,
validation, selection, convergence, resumable state, and output folder, laid out exactly as
`mtm.train.train` lays out one. What the K runs share is what they would draw alike apart:

    the data order   every run's data generator has the same seed, so the batches agree
                     (checked every epoch)
    dropout          drawn once per batch from torch's global RNG (vmap randomness "same"), as
                     each run would draw it alone: runs of one stack share their seed and their
                     model's shape, so alone they draw the same dropout masks

So a stacked model matches the one trained alone, to float tolerance: the K models' matmuls run
as one batched matmul, whose summation order differs from the single one's (bit-identical would
need the same kernels; tests/test_stack.py holds the tolerance). Two cases break the match and
are still valid training: a batch whose mask scores nothing for one model (that model alone
would draw no dropout for it), and runs resumed from different epochs (`train_stack` then
trains them one after the other, each resuming its own state).

Models stack when their configs are equal but for the scheme, and their weights have the same
shapes: a prompted model (mtm-prompt) has a prompt embedding and one more context token, so it
forms its own stack (`stack_groups`). A stack of one is trained by `mtm.train.train`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call, vmap

from mtm.config.training import TrainConfig
from mtm.data import SessionTensors
from mtm.device import autocast, resolve_device, resolve_precision
from mtm.masking import make_mask, sample_scheme
from mtm.models import poisson_nll
from mtm.resumable import STATE_DIR
from mtm.runtime import exit_on_sigterm, num_threads, progress_bar
from mtm.train import TrainingRun, TrainResult, end_epoch, finish, train, validation_masks
from mtm.validation import validate
from mtm.vocabulary import prompt_index


def stack_key(config: TrainConfig) -> tuple:
    """Configs with equal keys train as one stack: all fields but the scheme, and whether the
    model has prompt tokens (which changes its weights' shapes)."""
    fields = dataclasses.asdict(config)
    del fields["scheme"]
    return (config.use_prompt, tuple(sorted(fields.items())))


def stack_groups(configs: Sequence[TrainConfig]) -> list[list[int]]:
    """The indices of `configs`, grouped into stacks (in order of first appearance)."""
    groups: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(stack_key(config), []).append(i)
    return list(groups.values())


def train_stack(
    data: SessionTensors,
    configs: Sequence[TrainConfig],
    out_dirs: Sequence[str | Path],
    *,
    threads: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> list[TrainResult]:
    """Train one model per config on `data`, config i's into out_dirs[i] (the layout of
    mtm.train.train); configs that stack (`stack_groups`) train together. Returns the results
    in the configs' order. One process, on one device (the configs'); no gradient accumulation."""
    if len(configs) != len(out_dirs) or len({str(Path(d)) for d in out_dirs}) != len(out_dirs):
        raise ValueError(f"train_stack needs one distinct output folder per config: {list(out_dirs)}")
    results: list[TrainResult | None] = [None] * len(configs)
    for group in stack_groups(configs):
        trained = _train_group(data, [configs[i] for i in group], [Path(out_dirs[i]) for i in group], threads, metadata)
        for i, result in zip(group, trained):
            results[i] = result
    return results


def _train_group(
    data: SessionTensors, configs: list[TrainConfig], out_dirs: list[Path], threads: int | None, metadata: dict | None
) -> list[TrainResult]:
    config = configs[0]
    if len(configs) == 1 or config.accumulation != 1:
        return [train(data, c, out, threads=threads, metadata=metadata) for c, out in zip(configs, out_dirs)]
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    with num_threads(threads), exit_on_sigterm():
        runs = [TrainingRun([data], c, device) for c in configs]
        for run, out in zip(runs, out_dirs):
            run.resume(out / STATE_DIR, f"{data.eid} {run.config.scheme}")
        if len({(run.epoch, run.step) for run in runs}) > 1:
            # states from different epochs share no batches: each run resumes its own, alone
            return [train(data, c, out, threads=threads, metadata=metadata) for c, out in zip(configs, out_dirs)]
        val_masks = [validation_masks(run) for run in runs]
        bar = progress_bar(total=config.epochs * runs[0].steps_per_epoch, initial=runs[0].step)
        try:
            while active := [k for k, run in enumerate(runs) if run.epoch < config.epochs and run.stop_reason is None]:
                started = time.perf_counter()
                losses = train_stacked_epoch([runs[k] for k in active], precision, bar)
                seconds = (time.perf_counter() - started) / len(active)  # the stack's time, shared out
                for k, train_loss in zip(active, losses):
                    run = runs[k]
                    started = time.perf_counter()
                    val = validate(run.model, [data], val_masks[k], batch_size=config.batch_size,
                                   use_prompt=run.config.use_prompt, precision=precision)  # fmt: skip
                    end_epoch(run, train_loss, val, data.eid, seconds=seconds + time.perf_counter() - started)
                # the runs save together, so that a killed stack resumes as one
                if runs[active[0]].save_if_due(out_dirs[active[0]] / STATE_DIR):
                    for k in active[1:]:
                        runs[k].save(out_dirs[k] / STATE_DIR)
        finally:
            bar.close()
        meta = {"processes": 1, "stacked_with": [c.scheme for c in configs], **(metadata or {})}
        return [finish(run, out, data.eid, precision, meta) for run, out in zip(runs, out_dirs)]


def train_stacked_epoch(runs: list[TrainingRun], precision: str, bar=None) -> list[float]:
    """One pass over the train split for every run of a stack, each batch through all of them
    at once; returns each run's Poisson NLL per scored entry (as mtm.train.train_epoch)."""
    batches = [run.epoch_batches(run.generators["data"]) for run in runs]
    for other in batches[1:]:
        if any(not torch.equal(a[1], b[1]) for a, b in zip(batches[0], other)) or len(other) != len(batches[0]):
            raise RuntimeError("runs of a stack drew different batches: their data generators disagree")
    for run in runs:
        run.model.train()
    totals, counts = [0.0] * len(runs), [0] * len(runs)
    for data, trials in batches[0]:
        for run in runs:
            if data.eid in run.pending_bias:
                run.model.init_readout_bias(data.mean_counts("train"), data.eid)
                run.pending_bias.remove(data.eid)
        schemes = [sample_scheme(run.config.schemes, generator=run.generators["mask"]) for run in runs]
        masks = [
            make_mask(
                scheme, shape=(len(trials), data.n_bins, data.n_units), regions=data.regions,
                generator=run.generators["mask"], token_units=run.model.token_units,
            )  # fmt: skip
            for scheme, run in zip(schemes, runs)
        ]
        scored = [int(mask.target.sum()) for mask in masks]
        # a mask can score nothing (e.g. inter-region masking of a one-region session): that run skips the step
        live = [k for k, n in enumerate(scored) if n]
        for run in runs:
            run.optimizer.zero_grad(set_to_none=True)
        if live:
            nll = _stacked_step([runs[k] for k in live], data, trials, [masks[k] for k in live],
                                [schemes[k] for k in live], [scored[k] for k in live], precision)  # fmt: skip
            for k, value in zip(live, nll):
                runs[k].optimizer.step()
                totals[k], counts[k] = totals[k] + value, counts[k] + scored[k]
        for run in runs:
            run.scheduler.step()
            run.step += 1
        if bar is not None:
            bar.update()
    return [total / count if count else math.nan for total, count in zip(totals, counts)]


def _stacked_step(runs, data, trials, masks, schemes, n_scored, precision) -> list[float]:
    """Forward and backward of one batch through the models of `runs`, their weights stacked;
    each model's gradient lands in its own parameters. Returns each model's summed NLL."""
    base, device = runs[0].model, runs[0].device
    names = [name for name, _ in base.named_parameters()]
    per_run = [dict(run.model.named_parameters()) for run in runs]
    params = {name: torch.stack([p[name] for p in per_run]) for name in names}
    buffers = dict(base.named_buffers())
    counts = data.counts[trials].to(device)
    hidden = torch.stack([mask.hidden for mask in masks]).to(device)  # (K, B, T, N)
    target = torch.stack([mask.target for mask in masks]).to(device)
    causal = [mask.causal for mask in masks]
    # a flag the whole stack shares stays a Python bool: the models then run the code they run alone
    flags = causal[0] if len(set(causal)) == 1 else torch.tensor(causal, device=device)
    prompts = torch.tensor([prompt_index(s) for s in schemes], device=device) if base.config.use_prompt else None

    def model_nll(weights, hidden, target, prompt, causal):
        inputs = counts.float().masked_fill(hidden, 0.0)
        out = functional_call(base, (weights, buffers), (inputs,), {"prompt": prompt, "session": data.eid, "causal": causal})
        return poisson_nll(out.log_rates, counts, target, reduction="sum")

    in_dims = (0, 0, 0, None if prompts is None else 0, 0 if isinstance(flags, torch.Tensor) else None)
    with autocast(precision, device):
        nll = vmap(model_nll, in_dims=in_dims, randomness="same")(params, hidden, target, prompts, flags)  # (K,)
        scale = torch.tensor([1.0 if run.config.loss == "sum" else 1.0 / n for run, n in zip(runs, n_scored)], device=device)
        (nll * scale).sum().backward()
    return nll.detach().tolist()
