"""Train/val/test splits of trials that depend only on (eid, seed)."""

from __future__ import annotations

import numpy as np

from mtm.seeds import derive_seed

SPLITS = ("train", "val", "test")


def split_rng(eid: str, seed: int) -> np.random.Generator:
    """A generator seeded from the eid and the seed alone, never from processing order."""
    return np.random.default_rng(derive_seed(seed, "splits", eid))


def check_fractions(fractions) -> np.ndarray:
    """`fractions` (train, val, test) as a float array, shape (3,); ValueError unless they are 3
    finite non-negative numbers summing to 1."""
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or not np.all(np.isfinite(fractions)) or np.any(fractions < 0):
        raise ValueError(f"split fractions must be 3 non-negative numbers (train, val, test), got {fractions.tolist()}")
    if not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"split fractions must sum to 1, got {fractions.tolist()} (sum {fractions.sum():g})")
    return fractions


def split_trials(eid: str, n_trials: int, *, seed: int = 42, fractions=(0.7, 0.1, 0.2)) -> np.ndarray:
    """Split label ('train', 'val' or 'test') of each of `n_trials` trials, shape (n_trials,).

    A seeded permutation cut at int(0.7 n) and int(0.8 n), as the MtM authors cut their splits,
    but seeded per session so each session's split is reproducible from its eid.
    """
    fractions = check_fractions(fractions)
    order = split_rng(eid, seed).permutation(n_trials)
    cuts = (np.cumsum(fractions)[:2] * n_trials).astype(int)
    labels = np.empty(n_trials, dtype=object)
    for name, part in zip(SPLITS, np.split(order, cuts)):
        labels[part] = name
    return labels
