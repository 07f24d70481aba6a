"""Time to load a binned session (700 units x 800 trials x 100 bins) into arrays.

    python bench/bench_load.py [--units 700 --trials 800 --repeats 5]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mtm.session import load_session, write_session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=700)
    parser.add_argument("--trials", type=int, default=800)
    parser.add_argument("--bins", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rates = rng.lognormal(np.log(5.0), 1.0, args.units) * 0.02  # expected counts per 20 ms bin
    counts = rng.poisson(rates, (args.trials, args.bins, args.units)).astype(np.uint8)
    trials = pd.DataFrame(
        {
            "trial_index": np.arange(args.trials),
            "split": rng.choice(["train", "val", "test"], args.trials),
            "align_time": np.cumsum(rng.uniform(2.5, 4.7, args.trials)),
            "choice": rng.choice([-1, 1], args.trials),
            "block": rng.choice([0.2, 0.5, 0.8], args.trials),
            "reward": rng.integers(0, 2, args.trials),
            "signed_contrast": rng.choice([-1, -0.25, 0, 0.25, 1], args.trials),
            "reaction_time": rng.uniform(0.1, 1.0, args.trials),
        }
    )
    units = pd.DataFrame(
        {
            "uuid": [f"{i:08d}" for i in range(args.units)], "probe": "probe00", "cluster_id": np.arange(args.units),
            "allen": "CA1", "beryl": "CA1", "cosmos": "HPF", "depth_um": np.arange(args.units) * 5.0,
            "firing_rate": rates / 0.02, "label": 1.0,
        }
    )
    behaviour = {k: rng.normal(size=(args.trials, args.bins)) for k in ("wheel_speed", "whisker_motion_energy")}
    meta = {"provenance": {"eid": "bench"}, "binning": {"n_bins": args.bins, "bin_size": 0.02}, "session": {"usable": True}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "binned.parquet"
        write_session(path, trials=trials, counts=counts, behaviour=behaviour, units=units, meta=meta)
        size_mb = path.stat().st_size / 1e6
        walls = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            session = load_session(path)
            walls.append(time.perf_counter() - start)
        assert np.array_equal(session.counts, counts)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"session: {args.trials} trials x {args.bins} bins x {args.units} units, file {size_mb:.1f} MB (zstd)")
    print(f"load_session: best {min(walls):.3f} s, median {np.median(walls):.3f} s over {args.repeats} runs")
    print(f"peak RSS of the process: {peak:.0f} MB (counts array {counts.nbytes / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
