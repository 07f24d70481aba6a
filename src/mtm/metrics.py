"""Metrics of predicted firing rates against observed spike counts, in three conventions.

Every function takes `rates` and `counts` of the same shape (..., N): any leading axes (trials,
bins) and one last axis of N units. Rates are expected spikes per bin (not Hz), counts are
spikes per bin. Sums run in float64.

The null model of every metric is the per-unit mean rate of the evaluation data itself (the mean
of `counts` over all leading axes), as in the Neural Latents Benchmark (NLB) and MtM.

    bits/spike per unit   (NLL_null - NLL_model) / (spikes * ln 2), one value per unit;
                          MtM reports the mean over units after dropping +-inf (silent units)
    pooled bits/spike     the same with NLLs and spikes summed over all units first (NLB's
                          `bits_per_spike`): spike-weighted, barely moved by low-rate units
    Poisson D2            1 - (NLL_model - NLL_sat) / (NLL_null - NLL_sat) per unit, averaged
                          over units with a spike (BrainWideBench's deviance explained)

Zero rates are replaced by 1e-9 (NLB), so a model that puts no mass on an observed spike gets a
large finite penalty rather than infinity.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln, xlogy

MIN_RATE = 1e-9  # spikes per bin, NLB's floor for zero rates


def _check(rates: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rates, counts = np.asarray(rates, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    if rates.shape != counts.shape or rates.ndim < 2:
        raise ValueError(f"rates {rates.shape} and counts {counts.shape} must share one shape (..., units)")
    if np.isnan(rates).any() or (rates < 0).any():
        raise ValueError("rates must be non-negative and not NaN")
    return np.maximum(rates, MIN_RATE), counts


def _flat(x: np.ndarray) -> np.ndarray:
    """(..., N) -> (M, N): all leading axes as rows."""
    return x.reshape(-1, x.shape[-1])


def _nll(rates: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return (rates - xlogy(counts, rates) + gammaln(counts + 1.0)).sum(axis=0)


def null_rates(counts: np.ndarray) -> np.ndarray:
    """The per-unit mean count over all leading axes, broadcast to `counts`' shape."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.broadcast_to(_flat(counts).mean(axis=0), counts.shape)


def _nll_model_null(rates: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(NLL of the model, NLL of the null, spikes), each float64 (N,)."""
    rates, counts = _check(rates, counts)
    rates, counts = _flat(rates), _flat(counts)
    null = np.maximum(np.broadcast_to(counts.mean(axis=0), counts.shape), MIN_RATE)
    return _nll(rates, counts), _nll(null, counts), counts.sum(axis=0)


def bits_per_spike_per_unit(rates: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """float64 (N,); NaN for a unit without spikes (its ratio is infinite or undefined)."""
    model, null, spikes = _nll_model_null(rates, counts)
    with np.errstate(divide="ignore", invalid="ignore"):
        bps = (null - model) / (spikes * math.log(2))
    bps[~np.isfinite(bps)] = np.nan
    return bps


def bits_per_spike(rates: np.ndarray, counts: np.ndarray) -> float:
    """MtM's session score: the mean of per-unit bits/spike over units with a finite value."""
    return finite_mean(bits_per_spike_per_unit(rates, counts))


def bits_per_spike_pooled(rates: np.ndarray, counts: np.ndarray) -> float:
    """NLB's bits/spike: NLLs and spikes summed over all units, then one ratio; NaN without spikes."""
    model, null, spikes = _nll_model_null(rates, counts)
    total = spikes.sum()
    return float((null.sum() - model.sum()) / (total * math.log(2))) if total > 0 else math.nan


def poisson_d2_per_unit(rates: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Deviance explained, float64 (N,): 1 for a model equal to the counts (the saturated model),
    0 for the null, negative when worse than the null; NaN for a unit without spikes.
    """
    model, null, spikes = _nll_model_null(rates, counts)
    counts = _flat(np.asarray(counts, dtype=np.float64))
    saturated = _nll(np.maximum(counts, MIN_RATE), counts)  # the rate equal to each count
    with np.errstate(divide="ignore", invalid="ignore"):
        d2 = 1.0 - (model - saturated) / (null - saturated)
    d2[(spikes == 0) | ~np.isfinite(d2)] = np.nan
    return d2


def poisson_d2(rates: np.ndarray, counts: np.ndarray) -> float:
    """BrainWideBench's score: per-unit Poisson D2 averaged over units with a spike."""
    return finite_mean(poisson_d2_per_unit(rates, counts))


def r2_per_unit(predicted: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Coefficient of determination per unit over all leading axes, float64 (N,).

    As scikit-learn's r2_score(multioutput="raw_values"): a unit whose observations are constant
    scores 1 if predicted exactly, else 0.
    """
    predicted, observed = _flat(np.asarray(predicted, np.float64)), _flat(np.asarray(observed, np.float64))
    if predicted.shape != observed.shape:
        raise ValueError(f"predicted {predicted.shape} and observed {observed.shape} differ in shape")
    residual = ((observed - predicted) ** 2).sum(axis=0)
    total = ((observed - observed.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - residual / total
    return np.where(total > 0, r2, np.where(residual == 0, 1.0, 0.0))


def psth_r2_per_unit(rates: np.ndarray, counts: np.ndarray, conditions: np.ndarray) -> np.ndarray:
    """R2 per unit of the predicted against the observed PSTHs, float64 (N,).

    rates, counts: (trials, bins, N); conditions: (trials,) a label per trial (e.g. a choice x
    block x reward code). The PSTH of a condition is the mean over its trials; the PSTHs of all
    conditions are concatenated along time before the R2 (MtM's R2-PSTH).
    """
    rates, counts = np.asarray(rates, np.float64), np.asarray(counts, np.float64)
    if rates.ndim != 3 or len(conditions) != len(rates):
        raise ValueError(f"rates {rates.shape} must be (trials, bins, units) with one condition per trial")
    labels, which = np.unique(conditions, return_inverse=True)
    n_trials = np.bincount(which, minlength=len(labels)).astype(np.float64)[:, None, None]

    def psth(x: np.ndarray) -> np.ndarray:  # (conditions, bins, N)
        sums = np.zeros((len(labels), *x.shape[1:]))
        np.add.at(sums, which, x)
        return sums / n_trials

    return r2_per_unit(psth(rates), psth(counts))


def single_trial_r2_per_unit(rates: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """R2 per unit of the predicted rates against the counts of single trials and bins, (N,)."""
    return r2_per_unit(rates, counts)


def clipped_mean(values: np.ndarray) -> float:
    """MtM's summary of per-unit R2: each clipped to [0, 1], then the mean of finite values."""
    return finite_mean(np.clip(values, 0.0, 1.0))


def finite_mean(values: np.ndarray) -> float:
    """The mean of the finite values (a session score from per-unit scores); NaN if none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan
