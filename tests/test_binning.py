"""mtm.binning: spike counts equal a brute-force edge comparison bit for bit; signal binning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtm.binning import bin_edges, bin_signal, bin_spikes, n_bins

DATA = Path(__file__).parent / "data"


def brute_force(times, units, n_units, align_times, window, bin_size):
    """counts[j, k, u] = #{spikes of unit u with t0_j + k*b <= t < t0_j + (k+1)*b}, int64.

    Deliberately naive: every spike near the window is compared with every bin's two edges.
    """
    nb = round((window[1] - window[0]) / bin_size)
    k = np.arange(nb)
    out = np.zeros((len(align_times), nb, n_units), dtype=np.int64)
    for j, a in enumerate(align_times):
        t0 = a + window[0]
        lower, upper = t0 + k * bin_size, t0 + (k + 1) * bin_size
        # a margin of a whole bin each side, only to keep the comparison matrix small
        near = (times >= t0 - bin_size) & (times < t0 + (nb + 1) * bin_size)
        t, u = times[near], units[near]
        in_bin = (t[:, None] >= lower) & (t[:, None] < upper)  # (spikes, bins)
        of_unit = u[:, None] == np.arange(n_units)  # (spikes, units)
        # float64 matmul for BLAS speed; counts far below 2**53 are exact
        out[j] = in_bin.T.astype(np.float64) @ of_unit.astype(np.float64)
    return out


@st.composite
def spike_sessions(draw):
    """Small sessions whose spikes often sit exactly on (or one ulp off) bin edges."""
    bin_size = draw(st.sampled_from([0.01, 0.02, 0.025, 0.05, 0.1, 1 / 3]))
    nb = draw(st.integers(1, 20))
    start = draw(st.floats(-2.0, 0.5, allow_nan=False))
    window = (start, start + nb * bin_size)
    # onsets close together so that windows often overlap
    align = np.array(draw(st.lists(st.floats(0.0, 10.0, allow_nan=False), max_size=6)))
    free = draw(st.lists(st.floats(-3.0, 20.0, allow_nan=False), max_size=60))
    on_edges = []
    if align.size:
        picks = st.tuples(st.integers(0, align.size - 1), st.integers(0, nb), st.sampled_from([-1, 0, 0, 1]))
        for j, k, step in draw(st.lists(picks, max_size=40)):
            edge = (align[j] + window[0]) + k * bin_size
            on_edges.append(np.nextafter(edge, step * np.inf) if step else edge)
    times = np.sort(np.array(free + on_edges, dtype=np.float64))
    n_units = draw(st.integers(1, 5))
    # -1 drops a spike; units beyond the drawn ids stay empty
    units = np.array(draw(st.lists(st.integers(-1, n_units - 1), min_size=times.size, max_size=times.size)),
                     dtype=np.int64)
    chunk_trials = draw(st.sampled_from([None, 1, 2, 5]))
    return times, units, n_units, align, window, bin_size, chunk_trials


@settings(max_examples=300, deadline=None)
@given(spike_sessions())
def test_bin_spikes_equals_brute_force(session):
    times, units, n_units, align, window, bin_size, chunk_trials = session
    counts = bin_spikes(times, units, n_units, align, window=window, bin_size=bin_size, chunk_trials=chunk_trials)
    expected = brute_force(times, units, n_units, align, window, bin_size)
    assert counts.shape == expected.shape
    assert counts.dtype == np.uint8
    np.testing.assert_array_equal(counts, expected)


@pytest.mark.parametrize("window, bin_size", [((-0.5, 1.5), 0.02), ((-1.0, 1.0), 0.005)])
def test_bin_spikes_real_spike_train(window, bin_size):
    data = np.load(DATA / "ephys_test.npz")
    times = data["spike_times"]
    ids, units = np.unique(data["spike_clusters"], return_inverse=True)
    assert times.size == 124_905 and ids.size == 289
    # 50 onsets spread over the 120 s; every fifth one puts the window start on a spike time
    # (up to rounding), and the closest pairs overlap
    rng = np.random.default_rng(1)
    align = np.sort(rng.uniform(1.0, 118.0, size=50))
    align[::5] = times[np.searchsorted(times, align[::5])] - window[0]
    counts = bin_spikes(times, units, ids.size, align, window=window, bin_size=bin_size)
    expected = brute_force(times, units, ids.size, align, window, bin_size)
    assert counts.shape == (50, n_bins(window, bin_size), 289)
    assert expected.sum() > 10_000
    np.testing.assert_array_equal(counts, expected)


def test_spike_on_window_boundaries():
    align = np.array([1.0])
    window, b = (-0.5, 1.5), 0.02
    edges = bin_edges(align, window=window, bin_size=b)[0]
    times = np.array([np.nextafter(edges[0], -np.inf), edges[0], edges[1], np.nextafter(edges[-1], -np.inf), edges[-1]])
    counts = bin_spikes(times, np.zeros(5, dtype=np.int64), 1, align, window=window, bin_size=b)
    assert counts[0, :, 0].tolist() == [1, 1] + [0] * 97 + [1]


def test_overlapping_windows_count_a_spike_in_each():
    counts = bin_spikes(np.array([1.0]), np.array([0]), 1, np.array([0.5, 1.0]), window=(-1.0, 1.0), bin_size=0.5)
    # trial 0 starts at -0.5: 1.0 is in bin 3; trial 1 starts at 0.0: bin 2
    assert counts[:, :, 0].tolist() == [[0, 0, 0, 1], [0, 0, 1, 0]]


@pytest.mark.parametrize("n, dtype", [(255, np.uint8), (256, np.uint16), (70_000, np.uint32)])
def test_dtype_fits_the_largest_count(n, dtype):
    # trial 0 has 3 spikes; trial 1 has n in one bin, so chunk 2 promotes what chunk 1 wrote
    times = np.concatenate([[0.1, 0.1, 0.2], np.full(n, 10.05)])
    units = np.zeros(times.size, dtype=np.int64)
    units[2] = 1
    counts = bin_spikes(times, units, 2, np.array([0.0, 10.0]), window=(0.0, 0.2), bin_size=0.1, chunk_trials=1)
    assert counts.dtype == dtype
    assert counts[0].tolist() == [[0, 0], [2, 0]] and counts[1].tolist() == [[n, 0], [0, 0]]


def test_empty_inputs():
    none = np.array([])
    assert bin_spikes(none, none.astype(int), 3, np.array([1.0])).shape == (1, 100, 3)
    counts = bin_spikes(np.array([0.5]), np.array([0]), 3, none, window=(0, 1), bin_size=0.5)
    assert counts.shape == (0, 2, 3) and counts.dtype == np.uint8


def test_n_bins():
    assert n_bins((-0.5, 1.5), 0.02) == 100
    assert n_bins((-1, 1), 1 / 3) == 6
    with pytest.raises(ValueError, match="not an integer multiple"):
        n_bins((0.0, 1.0), 0.3)
    with pytest.raises(ValueError, match="not an integer multiple"):
        n_bins((0.0, 0.01), 0.02)
    with pytest.raises(ValueError, match="start < stop"):
        n_bins((1.0, 1.0), 0.1)
    with pytest.raises(ValueError, match="start < stop"):
        n_bins((0.0, np.nan), 0.1)
    for bad in (0.0, -0.02, np.inf):
        with pytest.raises(ValueError, match="bin_size"):
            n_bins((0.0, 1.0), bad)


def test_bin_edges():
    edges = bin_edges(np.array([1.0, 3.0]), window=(-0.5, 1.5), bin_size=0.02)
    assert edges.shape == (2, 101)
    assert edges[1, 0] == 2.5 and edges[1, 50] == 2.5 + 50 * 0.02


def test_bin_spikes_rejects_bad_input():
    t, u, a = np.array([0.1, 0.2, 0.3]), np.array([0, 1, 0]), np.array([0.5])
    with pytest.raises(ValueError, match="sorted"):
        bin_spikes(t[::-1], u, 2, a)
    with pytest.raises(ValueError, match="sorted"):
        bin_spikes(np.array([0.1, np.nan, 0.3]), u, 2, a)
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="align_times must be finite"):
            bin_spikes(t, u, 2, np.array([0.5, bad]))
    with pytest.raises(ValueError, match="out of range"):
        bin_spikes(t, u, 1, a)
    with pytest.raises(ValueError, match="integer"):
        bin_spikes(t, u.astype(float), 2, a)
    with pytest.raises(ValueError, match="equal length"):
        bin_spikes(t, u[:2], 2, a)


def test_bin_signal_linear_ramp_is_exact():
    # dyadic sample times, centres and slope: interpolation is exact in float64 and float32
    t = np.arange(0, 40) * 0.25
    out = bin_signal(t, 2 * t + 1, np.array([2.0, 5.0]), window=(-0.5, 1.5), bin_size=0.25)
    centres = np.array([[2.0], [5.0]]) - 0.5 + (np.arange(8) + 0.5) * 0.25
    assert out.dtype == np.float32 and out.shape == (2, 8)
    np.testing.assert_array_equal(out, (2 * centres + 1).astype(np.float32))


def test_bin_signal_ramp_at_1khz():
    t = np.arange(10_000) / 1000
    out = bin_signal(t, -3.0 * t + 7.0, np.array([1.0, 4.321, 8.0]), window=(-0.5, 1.5), bin_size=0.02)
    centres = np.array([[1.0], [4.321], [8.0]]) - 0.5 + (np.arange(100) + 0.5) * 0.02
    np.testing.assert_allclose(out, -3.0 * centres + 7.0, rtol=1e-6)


def test_bin_signal_outside_samples_is_nan():
    t = np.linspace(1.0, 3.0, 201)
    out = bin_signal(t, t, np.array([1.0, 2.0, 3.0]), window=(-0.5, 0.5), bin_size=0.1)
    centres = np.array([[1.0], [2.0], [3.0]]) - 0.5 + (np.arange(10) + 0.5) * 0.1
    outside = (centres < 1.0) | (centres > 3.0)
    assert outside.sum() == 10
    assert np.isnan(out[outside]).all() and np.isfinite(out[~outside]).all()


def test_bin_signal_gaps_and_nan_values():
    t = np.arange(1000) * 0.01  # 0 .. 9.99 s
    hole = (t > 4.0) & (t < 5.0)
    values = 2.0 * t
    values[hole] = np.nan  # a NaN stretch: ignored, so the finite samples 4.0 and 5.0 bracket it
    kept = bin_signal(t, values, np.array([4.5]), window=(-1.0, 1.0), bin_size=0.1)
    gap = bin_signal(t, values, np.array([4.5]), window=(-1.0, 1.0), bin_size=0.1, max_gap=0.05)
    centres = 3.5 + (np.arange(20) + 0.5) * 0.1
    in_hole = (centres > 4.0) & (centres < 5.0)
    np.testing.assert_allclose(kept[0], 2.0 * centres, rtol=1e-6)
    assert np.isnan(gap[0, in_hole]).all()
    np.testing.assert_array_equal(gap[0, ~in_hole], kept[0, ~in_hole])
    # removing the samples instead of NaN-ing them gives the same result
    same = bin_signal(t[~hole], values[~hole], np.array([4.5]), window=(-1.0, 1.0), bin_size=0.1, max_gap=0.05)
    np.testing.assert_array_equal(same, gap)


def test_bin_signal_all_nan_and_unsorted():
    out = bin_signal(np.arange(5.0), np.full(5, np.nan), np.array([2.0]), window=(0, 1), bin_size=0.5)
    assert np.isnan(out).all()
    with pytest.raises(ValueError, match="sorted"):
        bin_signal(np.array([1.0, 0.0]), np.zeros(2), np.array([0.5]), window=(0, 1), bin_size=0.5)
