"""Latent-variable model of the spiking of a session's units, and its exact trial-binned truth.

Each unit i fires as an inhomogeneous Poisson process with a piecewise-constant rate on the
GRID_DT grid:

    rate_i(t) = base_i * exp(eta_i(t)) / mean_t exp(eta_i(t)),   eta_i(t) = W_i . x(t)

so that the session-average rate equals the real unit's firing rate. The covariates x(t) are

* 3 global latents shared by all regions and 2 latents per brain region (Beryl), smooth random
  signals (time constants 0.3-2 s): what co-smoothing, forward prediction and intra- and
  inter-region prediction can learn;
* the stimulus: a transient after stimulus onset scaled by sqrt(contrast), one covariate for
  each side;
* the choice: +-1 times a bump from 0.3 s before to 0.5 s after the movement onset;
* the mouse's running estimate of the block prior (tonic over each trial);
* wheel speed and whisking, the behaviour the decoders read back.

Region-specific gains scale the task loadings, so regions differ in what they encode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtm.demo.behaviour import Behaviour
from mtm.demo.signals import GRID_DT, convolve_causal, event_train, smooth_noise
from mtm.demo.task import Task

N_GLOBAL, N_PER_REGION = 3, 2
LATENT_TAUS = (0.3, 0.8, 2.0)  # s, cycled over the latents
TASK_COVARIATES = ("stim_left", "stim_right", "choice", "prior", "speed", "whisking")
# Standard deviation of the loadings (log-rate per unit of covariate); the task ones are then
# scaled by a gain per (region, covariate) drawn in [0.3, 1.5].
LOADING_SD = dict(glob=0.2, region=0.25, stim_left=0.4, stim_right=0.4, choice=0.25, prior=0.15,
                  speed=0.3, whisking=0.12)  # fmt: skip
UNITS_PER_CHUNK = 32  # units whose [n_steps] rates are held in memory at once


def _stimulus_kernel() -> np.ndarray:
    """Visual transient, peak 1 about 80 ms after stimulus onset, back near 0 by 0.4 s."""
    tau = np.arange(int(0.4 / GRID_DT)) * GRID_DT - 0.03  # 30 ms latency
    return np.where(tau > 0, tau / 0.05 * np.exp(1.0 - tau / 0.05), 0.0)


def _choice_kernel() -> np.ndarray:
    """Choice bump over [-0.3, 0.5] s around movement onset (kernel starts at -0.3 s)."""
    tau = np.arange(int(0.8 / GRID_DT)) * GRID_DT - 0.3
    return np.exp(-0.5 * ((tau - 0.05) / 0.15) ** 2)


def _trialwise(values: np.ndarray, starts: np.ndarray, n_steps: int) -> np.ndarray:
    """Step signal [n_steps]: values[i] from trial start i to start i+1 (0 before the first)."""
    t = (np.arange(n_steps) + 0.5) * GRID_DT
    trial = np.searchsorted(starts, t, side="right") - 1
    return np.where(trial >= 0, values[np.maximum(trial, 0)], 0.0)


def task_covariates(task: Task, behaviour: Behaviour, n_steps: int) -> np.ndarray:
    """The TASK_COVARIATES on the grid, [n_steps, 6], each of order 1 when active."""
    trials = task.table
    stim_on = trials.stimOn_times.to_numpy()
    stim = _stimulus_kernel()
    stim_left = convolve_causal(event_train(stim_on, np.sqrt(trials.contrastLeft.to_numpy()), n_steps), stim)
    stim_right = convolve_causal(event_train(stim_on, np.sqrt(trials.contrastRight.to_numpy()), n_steps), stim)
    choice_train = event_train(task.move_onset - 0.3, trials.choice.to_numpy(), n_steps)
    choice = convolve_causal(choice_train, _choice_kernel())
    prior = _trialwise((task.prior - 0.5) / 0.3, trials.intervals_0.to_numpy(), n_steps)
    speed = behaviour.speed / 2.0  # rad/s; choice movements peak near 2 rad/s
    return np.stack([stim_left, stim_right, choice, prior, speed, behaviour.whisking], axis=1)


@dataclass
class RateModel:
    """Covariates x [K, n_steps] and loadings W [n_units, K] of the model in the module docstring.

    base_rate: [n_units] Hz, the session-average rate of each unit.
    """

    x: np.ndarray
    loadings: np.ndarray
    base_rate: np.ndarray

    @property
    def n_steps(self) -> int:
        return self.x.shape[1]

    def cumulative_intensity(self, units: slice) -> np.ndarray:
        """Expected spike count from time 0 to each grid edge, [n_units_in_slice, n_steps + 1].

        Strictly increasing in time; its differences are rate * GRID_DT. Units are rows so that
        the cumulative sum runs along contiguous memory.
        """
        step_count = np.exp(self.loadings[units].astype(np.float32) @ self.x, dtype=np.float64)
        step_count *= (self.base_rate[units] * GRID_DT / step_count.mean(axis=1))[:, None]
        cum = np.zeros((step_count.shape[0], self.n_steps + 1))
        np.cumsum(step_count, axis=1, out=cum[:, 1:])
        return cum


def build_rate_model(
    rng: np.random.Generator, task: Task, behaviour: Behaviour, regions: np.ndarray, base_rate: np.ndarray
) -> RateModel:
    """Draw latents and loadings for units in `regions` [n_units] (Beryl acronyms) with `base_rate` Hz."""
    n_steps = len(behaviour.speed)
    names = sorted(set(regions))
    n_latents = N_GLOBAL + N_PER_REGION * len(names)
    latents = np.stack(
        [smooth_noise(rng, n_steps, LATENT_TAUS[k % len(LATENT_TAUS)]) for k in range(n_latents)], axis=1
    )
    x = np.concatenate([latents, task_covariates(task, behaviour, n_steps)], axis=1).T.astype(np.float32)

    n_units = len(regions)
    region_index = np.searchsorted(names, regions)
    w = np.zeros((n_units, x.shape[0]))
    w[:, :N_GLOBAL] = rng.normal(0.0, LOADING_SD["glob"], (n_units, N_GLOBAL))
    for k in range(N_PER_REGION):  # each unit loads only on its own region's latents
        w[np.arange(n_units), N_GLOBAL + N_PER_REGION * region_index + k] = rng.normal(
            0.0, LOADING_SD["region"], n_units
        )
    sd = np.array([LOADING_SD[c] for c in TASK_COVARIATES])
    region_gain = rng.uniform(0.3, 1.5, (len(names), len(TASK_COVARIATES)))
    w[:, n_latents:] = rng.normal(0.0, 1.0, (n_units, len(TASK_COVARIATES))) * sd * region_gain[region_index]
    return RateModel(x=x, loadings=w, base_rate=np.asarray(base_rate, dtype=np.float64))


def poisson_spikes(rng: np.random.Generator, cum: np.ndarray) -> list[np.ndarray]:
    """Spike times (s) of each row of a cumulative intensity [n_units, n_steps + 1].

    Time rescaling: a unit-rate Poisson process on [0, total count] mapped back through the inverse
    of the cumulative intensity. Within a grid step the map is linear, so this is the same as
    Poisson counts per step with times uniform inside the step. Each list entry is sorted.
    """
    edges = np.arange(cum.shape[1]) * GRID_DT
    spikes = []
    for row in cum:
        u = np.sort(rng.uniform(0.0, row[-1], rng.poisson(row[-1])))
        spikes.append(np.interp(u, row, edges))
    return spikes


def binned_truth(cum: np.ndarray, align: np.ndarray, window: tuple[float, float], bin_size: float) -> np.ndarray:
    """Mean true rate (Hz) per trial-aligned bin, [n_trials, n_bins, n_units] float32.

    Bin k of trial j is [align_j + window[0] + k bin_size, ... + (k+1) bin_size). The integral
    of the piecewise-constant rate over a bin is exact: the cumulative intensity is linear
    between grid edges. Trials with a NaN align time, or with a bin outside the recording,
    are NaN.
    """
    n_bins = int(round((window[1] - window[0]) / bin_size))
    edges = align[:, None] + window[0] + bin_size * np.arange(n_bins + 1)  # [n_trials, n_bins + 1]
    n_steps = cum.shape[1] - 1
    valid = np.all(np.isfinite(edges) & (edges >= 0) & (edges <= n_steps * GRID_DT), axis=1)
    pos = np.clip(np.nan_to_num(edges) / GRID_DT, 0, n_steps)
    idx = np.minimum(pos.astype(np.int64), n_steps - 1)
    frac = pos - idx
    at_edges = cum[:, idx] * (1 - frac) + cum[:, idx + 1] * frac  # [n_units, n_trials, n_bins + 1]
    rates = np.diff(at_edges, axis=2) / bin_size
    rates[:, ~valid] = np.nan
    return rates.transpose(1, 2, 0).astype(np.float32)
