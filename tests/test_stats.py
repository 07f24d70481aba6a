"""Paired differences over sessions and their confidence intervals."""

import numpy as np
import pytest
from scipy import stats

from mtm.stats import paired_difference


def test_the_interval_is_the_paired_t_interval():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.1, 0.05, 7), rng.normal(0.05, 0.05, 7)
    diff = paired_difference(a, b)
    expected = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (diff.low, diff.high) == pytest.approx((expected.low, expected.high))
    assert diff.mean == pytest.approx(np.mean(a - b)) and diff.n_sessions == 7
    assert diff.n_better == int((a > b).sum())


def test_missing_values_drop_their_pair_and_one_session_has_no_interval():
    diff = paired_difference(np.array([0.2, np.nan, 0.3]), np.array([0.1, 0.5, np.nan]))
    assert diff.n_sessions == 1 and diff.mean == pytest.approx(0.1) and np.isnan(diff.low) and np.isnan(diff.high)
    assert paired_difference(np.array([np.nan]), np.array([1.0])).n_sessions == 0


def test_a_comparison_says_which_model_is_better_and_how_surely():
    from mtm.figures.comparisons import verdict
    from mtm.stats import PairedDifference

    assert verdict(PairedDifference(0.1, 0.05, 0.15, 3, 3)) == "a better in every session"
    assert verdict(PairedDifference(0.1, -0.05, 0.25, 2, 2)) == "a better in every session, interval includes 0"
    assert verdict(PairedDifference(-0.1, -0.2, -0.01, 4, 1)) == "b better on average"
    assert verdict(PairedDifference(0.01, -0.1, 0.12, 4, 2)) == "no clear difference"
    assert verdict(PairedDifference(-0.1, np.nan, np.nan, 1, 0)) == "b better in every session, one session: no interval"
