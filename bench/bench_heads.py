"""Benchmark the supervised heads at the paper's size: seconds per epoch and peak memory.

A paper-size NDT1 (5 x 512, 668 units) on a synthetic session of 300 trials x 100 bins (70/10/20
split), heads trained as mtm.supervised does: a frozen encoder (its latents computed once, then
a linear head on 100 x 512 = 51,200 features: one logit for choice, 100 outputs for wheel speed)
and a fully trained one. The demo and the paper run 200 epochs per head.

    python bench/bench_heads.py            # CPU, 2 threads, about a minute
    python bench/bench_heads.py --device cuda
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from mtm.models.ndt1 import NDT1, NDT1Config  # noqa: E402
from mtm.runtime import keep_freed_memory  # noqa: E402
from mtm.session import SessionData  # noqa: E402
from mtm.supervised import finetune_head  # noqa: E402
from mtm.config.heads import HeadConfig  # noqa: E402

N_TRIALS, N_BINS, N_UNITS = 300, 100, 668


def synthetic_session(seed: int = 0) -> SessionData:
    rng = np.random.default_rng(seed)
    choice = rng.choice([-1, 1], N_TRIALS)
    rates = rng.gamma(2.0, 0.05, N_UNITS) * (1 + 0.3 * choice[:, None, None] * rng.normal(size=N_UNITS))
    counts = rng.poisson(np.broadcast_to(rates.clip(0.001), (N_TRIALS, N_BINS, N_UNITS))).astype(np.uint8)
    split = np.array(["train"] * 210 + ["val"] * 30 + ["test"] * 60)[rng.permutation(N_TRIALS)]
    trials = pd.DataFrame({"split": split, "choice": choice, "block": rng.choice([0.2, 0.8], N_TRIALS)})
    wheel = (choice[:, None] * np.linspace(0, 1, N_BINS) + rng.normal(0, 0.5, (N_TRIALS, N_BINS))).astype(np.float32)
    meta = {"provenance": {"eid": "bench"}}
    return SessionData(trials=trials, units=pd.DataFrame(index=range(N_UNITS)), meta=meta, counts=counts,
                       wheel_speed=wheel, whisker_motion_energy=wheel.copy(), true_rate=None)  # fmt: skip


def timed(model: NDT1, session: SessionData, target: str, encoder: str, epochs: int) -> float:
    """Seconds for a head of `epochs` epochs, the frozen latents and the test scoring included."""
    started = time.perf_counter()
    finetune_head(model, session, target, HeadConfig(encoder=encoder, epochs=epochs))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    session = synthetic_session()
    model = NDT1(NDT1Config.paper({"bench": N_UNITS})).to(device)
    print(f"supervised heads, paper-size NDT1, {N_TRIALS} trials x {N_BINS} bins x {N_UNITS} units, {device}"
          f"{f', {args.threads} threads' if device.type == 'cpu' else ''}")  # fmt: skip
    for target, encoder, epochs in (("choice", "frozen", 20), ("wheel-speed", "frozen", 20), ("choice", "full", 2)):
        seconds = timed(model, session, target, encoder, epochs)
        print(f"  {target:12s} {encoder:7s} encoder: {epochs:3d} epochs in {seconds:6.1f} s "
              f"({seconds / epochs:.2f} s per epoch, setup included)")  # fmt: skip
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak memory {peak:.0f} MB")


if __name__ == "__main__":
    main()
