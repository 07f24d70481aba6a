"""Metrics against brute-force formulas, the NLB formula, sklearn, and known cases."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import r2_score

from mtm import metrics


def brute_nll(rates, counts):
    """sum over entries of lambda - k log lambda + log k!, one entry at a time."""
    total = 0.0
    for lam, k in zip(np.ravel(rates), np.ravel(counts)):
        lam = max(float(lam), 1e-9)
        total += lam - k * math.log(lam) + math.lgamma(k + 1)
    return total


def brute_bps_per_unit(rates, counts):
    out = []
    for n in range(counts.shape[-1]):
        y, lam = counts[..., n], rates[..., n]
        null = np.full_like(y, y.mean(), dtype=float)
        spikes = y.sum()
        value = (brute_nll(null, y) - brute_nll(lam, y)) / (spikes * math.log(2)) if spikes else math.inf
        out.append(value if math.isfinite(value) else math.nan)
    return np.array(out)


def nlb_bits_per_spike(rates, spikes):
    """The Neural Latents Benchmark formula (nlb_tools.evaluation.bits_per_spike), written out."""

    def nll(r, s):
        r = np.where(r == 0, 1e-9, r)
        return np.nansum(r - s * np.log(r) + np.vectorize(math.lgamma)(s + 1))

    null = np.tile(np.nanmean(spikes, axis=tuple(range(spikes.ndim - 1)), keepdims=True), spikes.shape[:-1] + (1,))
    return (nll(null, spikes) - nll(rates, spikes)) / np.nansum(spikes) / np.log(2)


def random_case(seed, trials=7, bins=5, units=4):
    rng = np.random.default_rng(seed)
    true = rng.gamma(2.0, 0.3, size=(trials, bins, units))
    counts = rng.poisson(true).astype(float)
    rates = true * rng.uniform(0.5, 1.5, size=true.shape)
    return rates, counts


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), silent=st.booleans())
def test_per_unit_bits_per_spike_equals_brute_force(seed, silent):
    rates, counts = random_case(seed)
    if silent:
        counts[..., 1] = 0
    got = metrics.bits_per_spike_per_unit(rates, counts)
    want = brute_bps_per_unit(rates, counts)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert np.isnan(got[1]) == silent
    assert metrics.bits_per_spike(rates, counts) == pytest.approx(np.nanmean(want), rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_pooled_bits_per_spike_equals_nlb(seed):
    rates, counts = random_case(seed)
    rates[0, 0, 0] = 0.0  # NLB floors zero rates at 1e-9
    assert metrics.bits_per_spike_pooled(rates, counts) == pytest.approx(nlb_bits_per_spike(rates, counts), rel=1e-9)


def test_pooled_and_per_unit_differ_as_documented():
    """Pooled bps is spike-weighted: a badly fitted low-rate unit barely moves it."""
    rng = np.random.default_rng(0)
    true = np.concatenate([np.full((200, 10, 1), 2.0), np.full((200, 10, 1), 0.02)], axis=-1)
    true[:100, :, 0] = 4.0  # unit 0 is modulated and fitted exactly
    counts = rng.poisson(true).astype(float)
    rates = true.copy()
    rates[..., 1] = 0.06  # unit 1 is predicted 3x too high
    per_unit = metrics.bits_per_spike_per_unit(rates, counts)
    assert per_unit[0] > 0.05 and per_unit[1] < -1
    assert metrics.bits_per_spike_pooled(rates, counts) > 0.5 * per_unit[0]
    assert metrics.bits_per_spike(rates, counts) < 0


def test_null_model_scores_zero_everywhere():
    _, counts = random_case(3)
    null = metrics.null_rates(counts)
    np.testing.assert_allclose(metrics.bits_per_spike_per_unit(null, counts), 0.0, atol=1e-12)
    assert metrics.bits_per_spike_pooled(null, counts) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(metrics.poisson_d2_per_unit(null, counts), 0.0, atol=1e-12)


def test_poisson_d2_known_cases_and_brute_force():
    rates, counts = random_case(5)
    saturated = np.maximum(counts, 1e-9)
    d2 = metrics.poisson_d2_per_unit(saturated, counts)
    np.testing.assert_allclose(d2, 1.0, atol=1e-6)  # the saturated model explains all deviance
    got = metrics.poisson_d2_per_unit(rates, counts)
    for n in range(counts.shape[-1]):
        y = counts[..., n]
        model, null = brute_nll(rates[..., n], y), brute_nll(np.full_like(y, y.mean()), y)
        sat = brute_nll(np.maximum(y, 1e-9), y)
        assert got[n] == pytest.approx(1 - (model - sat) / (null - sat), rel=1e-9)
    assert metrics.poisson_d2(rates, counts) == pytest.approx(got.mean())


def test_known_single_unit_value():
    # counts 0 and 2 (mean 1); the model predicts them exactly up to the 1e-9 floor
    counts = np.array([[[0.0], [2.0]]])
    rates = np.array([[[0.0], [2.0]]])
    null_nll = 2 * 1.0 - 2 * math.log(1.0) + math.lgamma(3)
    model_nll = 1e-9 + 2.0 - 2 * math.log(2.0) + math.lgamma(3)
    want = (null_nll - model_nll) / (2 * math.log(2))
    assert metrics.bits_per_spike_per_unit(rates, counts)[0] == pytest.approx(want, rel=1e-12)


def test_bad_rates_are_rejected():
    counts = np.ones((2, 3, 4))
    with pytest.raises(ValueError, match="share one shape"):
        metrics.bits_per_spike(np.ones((2, 3, 5)), counts)
    with pytest.raises(ValueError, match="non-negative"):
        metrics.bits_per_spike(-np.ones((2, 3, 4)), counts)


def test_r2_matches_sklearn():
    rng = np.random.default_rng(1)
    observed = rng.normal(size=(30, 6))
    predicted = observed + rng.normal(scale=0.5, size=observed.shape)
    np.testing.assert_allclose(
        metrics.r2_per_unit(predicted, observed), r2_score(observed, predicted, multioutput="raw_values"), rtol=1e-12
    )
    constant = np.ones((5, 2))
    np.testing.assert_array_equal(metrics.r2_per_unit(constant, constant), [1.0, 1.0])


def test_psth_r2_concatenates_condition_means():
    rates, counts = random_case(7, trials=12, bins=5, units=3)
    conditions = np.array(["a", "b", "c"] * 4)
    got = metrics.psth_r2_per_unit(rates, counts, conditions)
    order = ["a", "b", "c"]
    true_psth = np.concatenate([counts[conditions == c].mean(0) for c in order])  # (3 x bins, units)
    pred_psth = np.concatenate([rates[conditions == c].mean(0) for c in order])
    np.testing.assert_allclose(got, r2_score(true_psth, pred_psth, multioutput="raw_values"), rtol=1e-10)
    single = metrics.single_trial_r2_per_unit(rates, counts)
    np.testing.assert_allclose(
        single, r2_score(counts.reshape(-1, 3), rates.reshape(-1, 3), multioutput="raw_values"), rtol=1e-10
    )


def test_clipped_mean_is_mtm_convention():
    assert metrics.clipped_mean(np.array([-3.0, 0.5, 1.0, np.nan])) == pytest.approx((0 + 0.5 + 1.0) / 3)
    assert math.isnan(metrics.clipped_mean(np.array([np.nan])))
