"""Small signal helpers shared by the behaviour and the neural simulation."""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

GRID_DT = 0.005  # s, step of the piecewise-constant latent, behavioural and rate signals


def smooth_noise(rng: np.random.Generator, n: int, tau: float, dt: float = GRID_DT) -> np.ndarray:
    """A smooth zero-mean, unit-variance random signal [n]: white noise through two AR(1) stages.

    `tau` (s) is the time constant of each stage; cascading two makes the signal differentiable
    at the grid scale, unlike a single AR(1) process.
    """
    a = np.exp(-dt / tau)
    burn = int(5 * tau / dt)  # start from the stationary state
    x = lfilter([1.0 - a], [1.0, -a], rng.standard_normal(n + burn))
    x = lfilter([1.0 - a], [1.0, -a], x)[burn:]
    return (x - x.mean()) / x.std()


def event_train(times: np.ndarray, weights: np.ndarray, n: int, dt: float = GRID_DT) -> np.ndarray:
    """Weighted impulses [n] on a grid of step `dt` s; NaN times and weights are skipped."""
    train = np.zeros(n)
    ok = np.isfinite(times) & np.isfinite(weights)
    idx = np.floor(times[ok] / dt).astype(np.int64)
    inside = (idx >= 0) & (idx < n)
    np.add.at(train, idx[inside], weights[ok][inside])
    return train


def convolve_causal(train: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """`train` [n] convolved with `kernel` [m] (kernel[0] at the impulse), truncated to [n]."""
    return np.convolve(train, kernel)[: len(train)]


def min_jerk_velocity(u: np.ndarray) -> np.ndarray:
    """Velocity profile of a minimum-jerk movement of unit amplitude and duration, u in [0, 1]."""
    return 30.0 * u**2 * (1.0 - u) ** 2
