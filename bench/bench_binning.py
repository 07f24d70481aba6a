"""Benchmark `mtm.binning.bin_spikes` against a plain per-trial loop, timed in the same process.

    ours      mtm.binning.bin_spikes on every trial: one searchsorted of all bin edges in the
              sorted spike times, then one bincount per chunk of trials
    per-trial the straightforward loop of the authors' loader (written here, `per_trial_counts`):
              for each trial, a mask of the spikes in its window over the whole spike array,
              then each of those spikes' bin (searchsorted in the trial's edges) and unit, counted
              by np.bincount; exact to the same edges, so its counts must equal ours

Session (default; the size of an IBL probe): 700 units, 20 M spikes (sorted float64 times,
uniform over 3000 s; int64 unit ids with log-normal rates), 800 trials 2.5-4.7 s apart,
windows -0.5..1.5 s in 20 ms bins.

Rounds, alternating which runs first: ours bins the whole session; the per-trial loop bins
--baseline-trials of the trials (different ones each round, spread over the session) and its
time is scaled per trial to the whole session. That is fair to it: each trial scans every
spike, so its cost per trial does not depend on which trial it is. Printed: every round, then
the median, min-max and interquartile range over rounds of ours, of the loop (scaled), and of
the per-round speed-up; memory; and whether the loop's counts equal ours on every trial it
binned. Nothing is compared with a figure measured in another run or on another machine.

    python bench/bench_binning.py            # full size, about half a minute on 2 cores
    python bench/bench_binning.py --quick    # a small session, seconds
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rounds import order, summary  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from mtm.binning import bin_edges, bin_spikes  # noqa: E402

WINDOW, BIN_SIZE = (-0.5, 1.5), 0.02


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
    if onsets[-1] + WINDOW[1] > duration:
        raise SystemExit(f"{n_trials} trials do not fit in {duration} s")
    return times, units, onsets


def per_trial_counts(times, units, n_units, align_times) -> np.ndarray:
    """The per-trial loop: (n_trials, n_bins, n_units) int64 counts, a full scan of the spikes per trial."""
    edges = bin_edges(align_times, window=WINDOW, bin_size=BIN_SIZE)
    nb = edges.shape[1] - 1
    out = np.zeros((len(align_times), nb, n_units), dtype=np.int64)
    for j, trial_edges in enumerate(edges):
        inside = np.flatnonzero((times >= trial_edges[0]) & (times < trial_edges[-1]))
        bins = np.searchsorted(trial_edges, times[inside], side="right") - 1
        out[j] = np.bincount(bins * n_units + units[inside], minlength=nb * n_units).reshape(nb, n_units)
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
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--baseline-trials", type=int, default=40, help="trials the per-trial loop bins per round")
    ap.add_argument("--chunk-trials", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="100 units, 1 M spikes, 100 trials, 400 s")
    args = ap.parse_args()
    if args.quick:
        args.units, args.spikes, args.trials, args.duration = 100, 1_000_000, 100, 400.0
    subset = min(args.baseline_trials, args.trials)

    times, units, onsets = make_session(args.units, args.spikes, args.trials, args.duration, args.seed)
    input_mb = (times.nbytes + units.nbytes) / 1e6
    rss_inputs = peak_rss_mb()
    print(f"session: {args.units} units, {args.spikes:,} spikes over {args.duration:g} s, {args.trials} trials; "
          f"times+units {input_mb:.0f} MB; peak RSS after generating {rss_inputs:.0f} MB")  # fmt: skip
    print(f"ours: bin_spikes on all {args.trials} trials; per-trial loop: {subset} trials per round "
          f"(different ones each round), its seconds scaled by {args.trials}/{subset} to the session")  # fmt: skip

    def ours():
        return bin_spikes(times, units, args.units, onsets, window=WINDOW, bin_size=BIN_SIZE,
                          chunk_trials=args.chunk_trials)  # fmt: skip

    counts = ours()  # warm-up, and the counts the loop is checked against
    rows, checked, equal = [], 0, True
    print(f"{'round':>5}  {'order':<20} {'ours s':>7}  {'loop s/trial':>12}  {'loop s, scaled':>14}  {'speed-up':>8}")
    stride = args.trials // subset
    for r in range(args.rounds):
        # every stride-th trial, from an offset that moves each round: the rounds bin different trials
        pick = np.arange(subset) * stride + (r * stride) // args.rounds
        seconds = {}
        for name in order(["ours", "per-trial"], r):
            start = time.perf_counter()
            if name == "ours":
                result = ours()
            else:
                loop = per_trial_counts(times, units, args.units, onsets[pick])
            seconds[name] = time.perf_counter() - start
        del result
        checked, equal = checked + subset, equal and np.array_equal(counts[pick], loop)
        scaled = seconds["per-trial"] / subset * args.trials
        rows.append(dict(ours=seconds["ours"], per_trial=seconds["per-trial"] / subset, scaled=scaled,
                         speedup=scaled / seconds["ours"]))  # fmt: skip
        row = rows[-1]
        print(f"{r + 1:5d}  {' then '.join(order(['ours', 'per-trial'], r)):<20} {row['ours']:7.3f}  "
              f"{1e3 * row['per_trial']:9.1f} ms  {row['scaled']:14.2f}  {row['speedup']:7.1f}x", flush=True)  # fmt: skip

    def over_rounds(key: str, spec: str) -> str:
        return summary([row[key] for row in rows], spec)

    print(f"median [min-max] (IQR) over {args.rounds} rounds:")
    print(f"  ours, s:                                  {over_rounds('ours', '.3f')}")
    print(f"  per-trial loop, s for {args.trials} trials (scaled): {over_rounds('scaled', '.2f')}")
    print(f"  speed-up (loop scaled / ours), per round:  {over_rounds('speedup', '.1f')}")

    tracemalloc.start()
    counts = ours()
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"output: shape {counts.shape}, dtype {counts.dtype}, {counts.nbytes / 1e6:.0f} MB, "
          f"{int(counts.sum(dtype=np.int64)):,} spikes counted, max {counts.max()}")  # fmt: skip
    print(f"memory: tracemalloc peak of one call of ours {traced_peak / 1e6:.0f} MB (output included); "
          f"process peak RSS {peak_rss_mb():.0f} MB (inputs {input_mb:.0f} MB)")  # fmt: skip
    print(f"check: the per-trial loop's counts {'equal' if equal else 'DIFFER FROM'} ours on the {checked} trials it binned")
    if not equal:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
