"""Benchmark `mtm.binning.bin_spikes` on a synthetic session the size of an IBL probe.

Default session: 700 units, 20 M spikes (sorted float64 times, uniform over 3000 s; int64
unit ids with log-normal rates), 800 trials 2.5-4.7 s apart, window -0.5..1.5 s in 20 ms bins.
The MtM authors' per-trial loop takes about 19.3 s and 825 MB peak RSS on it (2-core machine).

    python bench/bench_binning.py            # full size
    python bench/bench_binning.py --quick    # a small session, seconds
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from mtm.binning import bin_spikes, n_bins  # noqa: E402

AUTHORS_SECONDS = 19.3  # their per-trial loop on the full-size session


def make_session(n_units: int, n_spikes: int, n_trials: int, duration: float, seed: int):
    """Spike times (n_spikes,) float64 s sorted, unit ids (n_spikes,) int64, onsets (n_trials,) s.

    Written in place and in blocks so that generating never holds more than the two
    output arrays plus a few MB, which keeps the process's peak RSS about the benchmark.
    """
    rng = np.random.default_rng(seed)
    times = np.empty(n_spikes)
    rng.random(out=times)
    times *= duration
    times.sort()
    rates = rng.lognormal(mean=0.0, sigma=1.0, size=n_units)
    cdf = np.cumsum(rates / rates.sum())
    units = np.empty(n_spikes, dtype=np.int64)
    block = 1 << 20
    for i in range(0, n_spikes, block):
        n = min(block, n_spikes - i)
        # inverse-CDF draw; clip guards against cdf[-1] rounding just below 1
        units[i : i + n] = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), n_units - 1)
    onsets = 5.0 + np.cumsum(rng.uniform(2.5, 4.7, size=n_trials))
    if onsets[-1] + 1.5 > duration:
        raise SystemExit(f"{n_trials} trials do not fit in {duration} s")
    return times, units, onsets


def reference_counts(times, units, n_units, align_times, window, bin_size):
    """Per-trial np.histogram2d, the straightforward way; (n_trials, n_bins, n_units) int64."""
    nb = n_bins(window, bin_size)
    out = np.zeros((len(align_times), nb, n_units), dtype=np.int64)
    for j, a in enumerate(align_times):
        edges = (a + window[0]) + np.arange(nb + 1) * bin_size
        lo, hi = np.searchsorted(times, [edges[0], edges[-1]])  # half-open window
        h, _, _ = np.histogram2d(times[lo:hi], units[lo:hi], bins=(edges, np.arange(n_units + 1)))
        out[j] = h
    return out


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=700)
    ap.add_argument("--spikes", type=int, default=20_000_000)
    ap.add_argument("--trials", type=int, default=800)
    ap.add_argument("--duration", type=float, default=3000.0, help="recording length, s")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--check-trials", type=int, default=20, help="trials verified against the reference (0: skip)")
    ap.add_argument("--chunk-trials", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="100 units, 1 M spikes, 100 trials, 400 s")
    args = ap.parse_args()
    if args.quick:
        args.units, args.spikes, args.trials, args.duration = 100, 1_000_000, 100, 400.0
    window, bin_size = (-0.5, 1.5), 0.02

    times, units, onsets = make_session(args.units, args.spikes, args.trials, args.duration, args.seed)
    input_mb = (times.nbytes + units.nbytes) / 1e6
    rss_inputs = peak_rss_mb()
    print(f"session: {args.units} units, {args.spikes:,} spikes over {args.duration:g} s, {args.trials} trials; "
          f"times+units {input_mb:.0f} MB; peak RSS after generating {rss_inputs:.0f} MB")

    def run():
        return bin_spikes(times, units, args.units, onsets, window=window, bin_size=bin_size,
                          chunk_trials=args.chunk_trials)

    walls = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        counts = run()
        walls.append(time.perf_counter() - t)
        del counts
    tracemalloc.start()
    counts = run()
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    best, median = min(walls), statistics.median(walls)
    print(f"bin_spikes: best {best:.3f} s, median {median:.3f} s over {args.repeats} repeats")
    if (args.units, args.spikes, args.trials, args.duration) == (700, 20_000_000, 800, 3000.0):
        print(f"speedup vs the authors' {AUTHORS_SECONDS} s: {AUTHORS_SECONDS / best:.1f}x (best), "
              f"{AUTHORS_SECONDS / median:.1f}x (median); goal >= 20x")
    print(f"output: shape {counts.shape}, dtype {counts.dtype}, {counts.nbytes / 1e6:.0f} MB, "
          f"{int(counts.sum(dtype=np.int64)):,} spikes counted, max {counts.max()}")
    print(f"memory: tracemalloc peak of one call {traced_peak / 1e6:.0f} MB (output included); "
          f"process peak RSS {peak_rss_mb():.0f} MB (budget 2 x inputs = {2 * input_mb:.0f} MB)")

    if args.check_trials:
        pick = np.linspace(0, args.trials - 1, min(args.check_trials, args.trials)).astype(int)
        ref = reference_counts(times, units, args.units, onsets[pick], window, bin_size)
        ok = np.array_equal(counts[pick], ref)
        print(f"reference check on {pick.size} trials (np.histogram2d per trial): {'equal' if ok else 'DIFFERENT'}")
        if not ok:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
