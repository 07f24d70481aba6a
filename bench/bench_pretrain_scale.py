"""Benchmark how pretraining's startup time and peak memory grow with the number of sessions.

Writes S synthetic binned sessions of a small demo's size (64 to 160 units, 200 trials, 100
bins; Poisson counts; stored as `mtm.session` files like the workflow's), then, in a fresh
process per S, does what `mtm.train.pretrain_sessions` does before and during its first steps:
list the sessions (header reads; counts stay on disk), build the run (a demo-size NDT1 with one
set of stitchers per session; each session's readout bias from its train-split mean, read
through the bounded counts cache), and take 50 training steps. Prints the seconds to the end
of the first step, and the peak RSS, split into what the data and what the model account for.

    python bench/bench_pretrain_scale.py                  # S = 10, 100, 400; about 3 minutes
    python bench/bench_pretrain_scale.py --sessions 10 50
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from mtm.data import CountsCache, SessionTensors  # noqa: E402
from mtm.session import TRIAL_COLUMNS, UNIT_COLUMNS, write_session  # noqa: E402
from mtm.splits import split_trials  # noqa: E402
from mtm.train import TrainingRun, train_epoch  # noqa: E402
from mtm.config.training import TrainConfig  # noqa: E402

N_TRIALS, N_BINS, STEPS = 200, 100, 50
REGIONS = ("CA1", "DG", "LP", "PO", "VISa")


def write_sessions(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        eid = f"{i:08x}-0000-4000-8000-000000000000"
        n_units = int(rng.integers(64, 161))
        counts = rng.poisson(rng.gamma(0.5, 0.2, size=(1, 1, n_units)), size=(N_TRIALS, N_BINS, n_units))
        trials = pd.DataFrame({name: np.zeros(N_TRIALS, dtype=kind.to_pandas_dtype()) for name, kind in TRIAL_COLUMNS.items()})
        trials["trial_index"] = np.arange(N_TRIALS)
        trials["split"] = split_trials(eid, N_TRIALS, seed=0, fractions=(0.7, 0.1, 0.2))
        units = pd.DataFrame({name: [""] * n_units for name in UNIT_COLUMNS})
        units["uuid"] = [f"{eid}-{u}" for u in range(n_units)]
        units["beryl"] = [REGIONS[u * len(REGIONS) // n_units] for u in range(n_units)]
        behaviour = {name: np.zeros((N_TRIALS, N_BINS), np.float32) for name in ("wheel_speed", "whisker_motion_energy")}
        meta = {"provenance": {"eid": eid}, "binning": {"n_bins": N_BINS, "bin_size": 0.02}, "session": {"usable": True}}
        path = folder / f"{eid}.parquet"
        write_session(path, trials=trials, counts=counts.astype(np.uint8), behaviour=behaviour, units=units, meta=meta)
        paths.append(path)
    return paths


def measure(paths: list[Path]) -> dict:
    torch.set_num_threads(2)
    started = time.perf_counter()
    cache = CountsCache(max_sessions=32)
    sessions = [SessionTensors.from_file(path, cache) for path in paths]
    listed = time.perf_counter()
    rss_listed = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    run = TrainingRun(sessions, TrainConfig(scheme="mtm-prompt", model="demo", epochs=1), torch.device("cpu"), None)
    built = time.perf_counter()
    batches = run.epoch_batches
    run.epoch_batches = lambda generator: batches(generator)[:1]  # the first step alone
    train_epoch(run, "fp32")
    first_step = time.perf_counter()
    run.epoch_batches = lambda generator: batches(generator)[: STEPS - 1]
    train_epoch(run, "fp32")
    params = sum(p.numel() for p in run.model.parameters())
    return {
        "sessions": len(paths),
        "list_s": listed - started,
        "build_s": built - listed,
        "first_step_s": first_step - started,
        "steps_per_s": (STEPS - 1) / (time.perf_counter() - first_step),
        "rss_after_listing_mb": rss_listed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "parameters": params,
        "cache_reads": cache.reads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, nargs="+", default=[10, 100, 400])
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)  # internal: measure these files
    args = parser.parse_args()
    if args.folder:
        print(json.dumps(measure(sorted(args.folder.glob("*.parquet"))[: args.sessions[0]])))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_sessions(folder, max(args.sessions))
        data_mb = sum(p.stat().st_size for p in folder.glob("*.parquet")) / 1e6
        print(f"{max(args.sessions)} sessions written, {data_mb:.0f} MB on disk; "
              f"counts in memory would take {max(args.sessions) * N_TRIALS * N_BINS * 112 / 1e6:.0f} MB as uint8")  # fmt: skip
        print(f"{'sessions':>8} {'list s':>7} {'build s':>8} {'to 1st step s':>14} {'steps/s':>8} "
              f"{'RSS listed':>11} {'peak RSS':>9} {'parameters':>11} {'reads':>6}")  # fmt: skip
        for n in args.sessions:
            command = [sys.executable, __file__, "--folder", str(folder), "--sessions", str(n)]
            r = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            print(f"{r['sessions']:8d} {r['list_s']:7.2f} {r['build_s']:8.2f} {r['first_step_s']:14.2f} "
                  f"{r['steps_per_s']:8.1f} {r['rss_after_listing_mb']:8.0f} MB {r['peak_rss_mb']:6.0f} MB "
                  f"{r['parameters']:11,d} {r['cache_reads']:6d}")  # fmt: skip


if __name__ == "__main__":
    main()
