"""Held-out prediction for MtM's four activity tasks, batched and exact.

The tasks (Zhang et al. 2024, section 4; mtm.vocabulary.TASKS), each run with the prompt of the
matching scheme (TASK_PROMPTS):

    co-smoothing        hide unit i over all bins, score unit i                    (neuron)
    forward-prediction  hide the last `forward_bins` bins of every unit, score     (causal)
                        those bins; attention causal, or bidirectional for a model
                        trained without causal attention (`forward_causal`)
    inter-region        hide every unit of region R, score them                    (inter-region)
    intra-region        hide every unit outside unit i's region, and unit i itself;
                        score unit i from the rest of its region                   (intra-region)

A hold-out (`HoldOut`) hides a set of units over all bins. One unit at a time, co-smoothing
costs a forward pass per (unit, trial). Two exact savings, and batching:

- Hiding units that have no spike in a trial leaves that trial's input unchanged, so each
  (hold-out, trial) is reduced to (trial, hidden units that spike in it), and each distinct
  reduced input runs once. In co-smoothing every unit that is silent in trial t shares the one
  unmasked pass of t; in intra-region, the pass that hides only the other regions.
- The remaining inputs run in passes of `batch_size` samples, each sample one trial with its
  own hidden units. On CPUs passes of about one unit x all test trials ran fastest: larger ones
  allocate activations that page memory.
Every number equals the one-hold-out-at-a-time result up to floating-point summation order.

A `Predictor` is the model seen from here: (inputs (B, T, N) float32 with hidden entries
already zero, causal) -> log rates (B, T, N) float32, log(spikes per bin).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mtm.vocabulary import FORWARD_ATTENTION

Predictor = Callable[[torch.Tensor, bool], torch.Tensor]

FORWARD_BINS = 10  # 200 ms of 20 ms bins, as NLB and MtM


@dataclass(frozen=True)
class HoldOut:
    """hidden: bool (N,), units zeroed over all bins; scored: bool (N,), units whose predictions count."""

    hidden: np.ndarray
    scored: np.ndarray


@dataclass(frozen=True)
class TaskPrediction:
    """log_rates: float32 (trials, len(bins), len(units)), the predictions of the scored cells;
    units: int (U,) the scored units; bins: int (B,) the scored bins."""

    log_rates: np.ndarray
    units: np.ndarray
    bins: np.ndarray


def holdouts(task: str, regions: np.ndarray, units: np.ndarray | None = None) -> list[HoldOut]:
    """The hold-outs of a hold-one-out `task` that score `units` (all units when None).

    regions: (N,) region label of every unit. Inter-region hides a whole region even when only
    some of its units are scored.
    """
    regions = np.asarray(regions)
    n = len(regions)
    units = np.arange(n) if units is None else np.unique(units)

    def one_hot(index) -> np.ndarray:
        out = np.zeros(n, dtype=bool)
        out[index] = True
        return out

    if task == "co-smoothing":
        return [HoldOut(hidden=one_hot(i), scored=one_hot(i)) for i in units]
    if task == "intra-region":
        return [HoldOut(hidden=(regions != regions[i]) | one_hot(i), scored=one_hot(i)) for i in units]
    if task == "inter-region":
        out = []
        for region in np.unique(regions[units]):
            members = regions == region
            out.append(HoldOut(hidden=members, scored=members & one_hot(units)))
        return out
    raise ValueError(f"{task!r} is not a hold-out task; expected co-smoothing, intra-region or inter-region")


def predict_holdouts(
    predict: Predictor, counts: np.ndarray, holdouts: Sequence[HoldOut], *, batch_size: int = 128
) -> np.ndarray:
    """Log rates float32 (trials, T, N) of each hold-out's scored units under its hidden units;
    NaN at units no hold-out scores. counts: (trials, T, N). A unit may be scored once only.
    """
    n_trials, _, n_units = counts.shape
    _check_scored_once(holdouts, n_units)
    active = (counts > 0).any(axis=1)  # (trials, N): units with a spike in the trial
    samples: dict[tuple[int, bytes], int] = {}  # (trial, packed reduced hidden units) -> sample
    sample_trial, sample_hidden = [], []
    cells = []  # per hold-out: (sample, trial, unit) of each scored cell
    for holdout in holdouts:
        reduced = np.packbits(active & holdout.hidden, axis=1)  # (trials, ceil(N / 8))
        of_trial = np.empty(n_trials, dtype=np.int64)
        for t in range(n_trials):
            key = (t, reduced[t].tobytes())
            if key not in samples:
                samples[key] = len(sample_trial)
                sample_trial.append(t)
                sample_hidden.append(reduced[t])
            of_trial[t] = samples[key]
        scored = np.flatnonzero(holdout.scored)
        cells.append(np.stack(np.broadcast_arrays(of_trial[:, None], np.arange(n_trials)[:, None], scored), -1))
    log_rates = np.full(counts.shape, np.nan, dtype=np.float32)
    if not sample_trial:
        return log_rates
    cell_sample, cell_trial, cell_unit = np.concatenate([c.reshape(-1, 3) for c in cells]).T
    order = np.argsort(cell_sample, kind="stable")
    cell_sample, cell_trial, cell_unit = cell_sample[order], cell_trial[order], cell_unit[order]

    sample_trial, sample_hidden = np.asarray(sample_trial), np.stack(sample_hidden)
    inputs = torch.from_numpy(np.ascontiguousarray(counts, dtype=np.float32))
    for start in range(0, len(sample_trial), batch_size):
        stop = min(start + batch_size, len(sample_trial))
        hidden = np.unpackbits(sample_hidden[start:stop], axis=1, count=n_units).astype(bool)  # (b, N)
        x = inputs[sample_trial[start:stop]].masked_fill_(torch.from_numpy(hidden)[:, None, :], 0.0)
        out = predict(x, False).float().numpy()  # (b, T, N)
        lo, hi = np.searchsorted(cell_sample, [start, stop])
        log_rates[cell_trial[lo:hi], :, cell_unit[lo:hi]] = out[cell_sample[lo:hi] - start, :, cell_unit[lo:hi]]
    return log_rates


def predict_holdouts_one_at_a_time(predict: Predictor, counts: np.ndarray, holdouts: Sequence[HoldOut]) -> np.ndarray:
    """The reference for `predict_holdouts`: one pass per hold-out over all trials, no reuse."""
    _check_scored_once(holdouts, counts.shape[2])
    log_rates = np.full(counts.shape, np.nan, dtype=np.float32)
    inputs = torch.from_numpy(np.ascontiguousarray(counts, dtype=np.float32))
    for holdout in holdouts:
        out = predict(inputs.masked_fill(torch.from_numpy(holdout.hidden), 0.0), False).float().numpy()
        log_rates[:, :, holdout.scored] = out[:, :, holdout.scored]
    return log_rates


def forward_causal(scheme: str, *, prompted: bool, attention: str) -> bool:
    """Whether forward prediction runs a model of `scheme` under causal attention.

    attention "causal": always (ours: the task is then the same computation for every model).
    "as-trained" (the authors'): only a model that met causal attention in training, the
    causal-only scheme and prompted models (whose causal prompt selects it); every other model
    was trained bidirectionally and is run so, its hidden bins zeroed, which leaks nothing: the
    hidden bins' inputs are zeros either way.
    """
    if attention not in FORWARD_ATTENTION:
        raise ValueError(f"forward attention must be one of {FORWARD_ATTENTION}, not {attention!r}")
    return attention == "causal" or scheme == "causal" or prompted


def predict_forward(
    predict: Predictor,
    counts: np.ndarray,
    *,
    forward_bins: int = FORWARD_BINS,
    batch_size: int = 128,
    causal: bool = True,
) -> np.ndarray:
    """Log rates float32 (trials, forward_bins, N) of the last `forward_bins` bins, hidden for every
    unit, under causal (or bidirectional) attention. counts: (trials, T, N)."""
    n_bins = counts.shape[1]
    if not 0 < forward_bins < n_bins:
        raise ValueError(f"forward_bins must lie in 1..{n_bins - 1}, got {forward_bins}")
    inputs = torch.from_numpy(np.ascontiguousarray(counts, dtype=np.float32))
    out = []
    for batch in inputs.split(batch_size):
        x = batch.clone()
        x[:, n_bins - forward_bins :] = 0.0
        out.append(predict(x, causal)[:, n_bins - forward_bins :].float().numpy())
    return np.concatenate(out) if out else np.zeros((0, forward_bins, counts.shape[2]), np.float32)


def predict_task(
    predict: Predictor,
    task: str,
    counts: np.ndarray,
    regions: np.ndarray,
    *,
    units: np.ndarray | None = None,
    batch_size: int = 128,
    forward_bins: int = FORWARD_BINS,
    causal_forward: bool = True,
) -> TaskPrediction:
    """The predictions `task` scores, for `units` (all when None). counts: (trials, T, N);
    causal_forward: forward prediction's attention (`forward_causal`)."""
    units = np.arange(counts.shape[2]) if units is None else np.unique(units)
    if task == "forward-prediction":
        n_bins = counts.shape[1]
        log_rates = predict_forward(
            predict, counts, forward_bins=forward_bins, batch_size=batch_size, causal=causal_forward
        )
        return TaskPrediction(log_rates[:, :, units], units, np.arange(n_bins - forward_bins, n_bins))
    log_rates = predict_holdouts(predict, counts, holdouts(task, regions, units), batch_size=batch_size)
    return TaskPrediction(log_rates[:, :, units], units, np.arange(counts.shape[1]))


def _check_scored_once(holdouts: Sequence[HoldOut], n_units: int) -> None:
    times = np.zeros(n_units, dtype=np.int64)
    for holdout in holdouts:
        if holdout.hidden.shape != (n_units,) or holdout.scored.shape != (n_units,):
            raise ValueError(f"hold-out masks must be ({n_units},), got {holdout.hidden.shape}, {holdout.scored.shape}")
        if (holdout.scored & ~holdout.hidden).any():
            raise ValueError("a hold-out scores a unit it does not hide")
        times += holdout.scored
    if (times > 1).any():
        raise ValueError(f"units {np.flatnonzero(times > 1)[:5].tolist()} are scored by more than one hold-out")
