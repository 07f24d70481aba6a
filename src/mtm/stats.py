"""Paired comparisons of two models over sessions, with confidence intervals.

A comparison pairs two models' values of one metric session by session. A session's value is
the mean over its seeds (replicates of training), so the unit of the interval is the session,
as in the paper's per-session scatter plots: the interval says how the difference varies from
recording to recording, with each recording's training noise averaged first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedDifference:
    """mean: the mean over sessions of (a - b); low, high: its two-sided `CONFIDENCE` t-interval
    (NaN with fewer than 2 sessions); n_sessions; n_better: sessions where a > b."""

    mean: float
    low: float
    high: float
    n_sessions: int
    n_better: int


def paired_difference(a: np.ndarray, b: np.ndarray, *, confidence: float = CONFIDENCE) -> PairedDifference:
    """The difference a - b of paired per-session values (n,), pairs with a NaN dropped."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    diff = a[keep] - b[keep]
    n = len(diff)
    if n == 0:
        return PairedDifference(np.nan, np.nan, np.nan, 0, 0)
    mean = float(diff.mean())
    if n < 2:
        return PairedDifference(mean, np.nan, np.nan, 1, int((diff > 0).sum()))
    low, high = stats.ttest_1samp(diff, 0.0).confidence_interval(confidence)
    return PairedDifference(mean, float(low), float(high), n, int((diff > 0).sum()))


def session_values(metrics: pd.DataFrame, **where) -> pd.Series:
    """A metric's value per (task, eid), the mean over seeds, of the rows matching `where`
    (column -> value, e.g. backbone="ndt1", scheme="temporal", setting="single", metric="bps")."""
    rows = metrics
    for column, value in where.items():
        rows = rows[rows[column] == value]
    return rows.groupby(["task", "eid"])["value"].mean()
