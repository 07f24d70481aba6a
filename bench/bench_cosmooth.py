"""Benchmark co-smoothing evaluation of one paper-size session: speed, memory and exactness.

Session: 668 units whose firing rates are those of the units of one real repeated-site
insertion (the bundled IBL cluster table, `mtm/data/re_clusters.pqt`: all units, as MtM uses,
many of them near silent), each trial scaled by a log-normal gain and a slow modulation, Poisson
counts in 160 test trials x 100 bins of 20 ms. Model: NDT1 at paper size with prompt tokens,
random weights with the readout bias at each unit's log mean count (the values mean nothing;
only times and agreement count), the `neuron` prompt.

Variants, each in its own process (so each peak RSS is its own), on the same seeded subset of
`--units` held-out units, per-unit bits/spike compared with the one-at-a-time reference:

    authors     the authors' procedure: 8 held-out units per pass, each in its own copy of all
                test trials (1280 samples), every unit read out; fp32. Their own code adds int64
                masks, clones and a loss over all units, so this stand-in is if anything faster.
    sequential  one unit at a time: one pass of all test trials per unit; fp32 (the reference)
    batched     mtm.heldout.predict_holdouts: passes of --batch-size samples, and the unmasked
                pass of a trial reused for every unit silent in it; fp32
    bf16        batched under bf16 autocast

Times are extrapolated to all units from the subset (cost is linear in units; the subset is
uniform, so its share of silent units is the session's). The recorded anchor: the authors'
co-smoothing ran about 28 forward samples/s, about an hour for this session, at 7.7 GB.

    python bench/bench_cosmooth.py                 # about 4 minutes on 2 cores
    python bench/bench_cosmooth.py --units 48
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from mtm import heldout, metrics  # noqa: E402
from mtm.models import NDT1, NDT1Config  # noqa: E402

N_UNITS, N_TRIALS, N_BINS, BIN_SIZE = 668, 160, 100, 0.02
AUTHORS_UNITS_PER_PASS = 8
VARIANTS = ("authors", "sequential", "batched", "bf16")


def session_counts(seed: int = 0) -> np.ndarray:
    """uint8 (trials, bins, units) counts with the firing rates of one real insertion's units."""
    rng = np.random.default_rng(seed)
    clusters = pd.read_parquet(ROOT / "src/mtm/data/re_clusters.pqt")
    insertion = clusters.index.get_level_values(0).unique()[0]
    rates_hz = clusters.loc[insertion, "firing_rate"].to_numpy()
    rates_hz = rng.choice(rates_hz, N_UNITS, replace=False)
    gain = rng.lognormal(0.0, 0.4, size=(N_TRIALS, 1, N_UNITS))
    phase = rng.uniform(0, 2 * np.pi, size=(1, 1, N_UNITS))
    modulation = 1.0 + 0.5 * np.sin(np.linspace(0, 2 * np.pi, N_BINS)[None, :, None] + phase)
    return rng.poisson(rates_hz * BIN_SIZE * gain * modulation).astype(np.uint8)


def paper_model(counts: np.ndarray) -> NDT1:
    torch.manual_seed(0)
    model = NDT1(NDT1Config.paper(N_UNITS, use_prompt=True))
    model.init_readout_bias(torch.from_numpy(counts.mean(axis=(0, 1))).float())
    return model.eval()


def predictor(model: NDT1, bf16: bool = False) -> heldout.Predictor:
    prompt = heldout.TASK_PROMPTS["co-smoothing"]
    from mtm.masking import MTM_SCHEMES

    def predict(x: torch.Tensor, causal: bool) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return model(x, prompt=MTM_SCHEMES.index(prompt), causal=causal).log_rates.float()

    return predict


def authors_procedure(predict: heldout.Predictor, counts: np.ndarray, units: np.ndarray) -> np.ndarray:
    """log rates (trials, bins, units) from passes of 8 units x all trials, each pass read out in full."""
    inputs = torch.from_numpy(counts.astype(np.float32))
    out = np.full(counts.shape, np.nan, dtype=np.float32)
    for chunk in np.array_split(units, -(-len(units) // AUTHORS_UNITS_PER_PASS)):
        copies = inputs.repeat(len(chunk), 1, 1)  # (len(chunk) * trials, bins, units)
        for k, unit in enumerate(chunk):
            copies[k * N_TRIALS : (k + 1) * N_TRIALS, :, unit] = 0.0
        log_rates = predict(copies, False).numpy()  # every unit of every copy
        for k, unit in enumerate(chunk):
            out[:, :, unit] = log_rates[k * N_TRIALS : (k + 1) * N_TRIALS, :, unit]
    return out


def run_variant(variant: str, n_units: int, batch_size: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    counts = session_counts()
    model = paper_model(counts)
    units = np.sort(np.random.default_rng(1).choice(N_UNITS, n_units, replace=False))
    predict = predictor(model, bf16=variant == "bf16")
    predict(torch.zeros(2, N_BINS, N_UNITS), False)  # warm-up
    started = time.perf_counter()
    if variant == "authors":
        log_rates = authors_procedure(predict, counts, units)
    elif variant == "sequential":
        log_rates = heldout.predict_holdouts_one_at_a_time(predict, counts, heldout.holdouts("co-smoothing", np.zeros(N_UNITS), units))
    else:
        holdouts = heldout.holdouts("co-smoothing", np.zeros(N_UNITS), units)
        log_rates = heldout.predict_holdouts(predict, counts, holdouts, batch_size=batch_size)
    seconds = time.perf_counter() - started
    bps = metrics.bits_per_spike_per_unit(np.exp(log_rates[:, :, units].astype(np.float64)), counts[:, :, units])
    active = (counts.sum(axis=1) > 0)[:, units]
    return {
        "variant": variant,
        "seconds": seconds,
        "units": n_units,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "bps": [None if np.isnan(b) else float(b) for b in bps],
        "active_fraction": float(active.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=24, help="held-out units timed (of 668)")
    parser.add_argument("--batch-size", type=int, default=128, help="samples per pass (batched, bf16)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant, print JSON
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.units, args.batch_size, args.threads)))
        return

    results = {}
    for variant in args.variants:
        command = [sys.executable, __file__, "--variant", variant, "--units", str(args.units),
                   "--batch-size", str(args.batch_size), "--threads", str(args.threads)]  # fmt: skip
        results[variant] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    counts = session_counts()
    print(f"session: {N_UNITS} units x {N_TRIALS} test trials x {N_BINS} bins; "
          f"(unit, trial) pairs with a spike: {(counts.sum(axis=1) > 0).mean():.1%}; "
          f"timed on {args.units} units, {args.threads} threads")  # fmt: skip
    reference = np.array(results.get("sequential", {}).get("bps", []), dtype=float)
    base = results.get("authors")
    print(f"{'variant':<11} {'s/unit':>7} {'full session':>13} {'speed-up':>9} {'peak RSS':>9} {'max |d bps|':>12}")
    for variant, r in results.items():
        per_unit = r["seconds"] / r["units"]
        speedup = (base["seconds"] / base["units"]) / per_unit if base else float("nan")
        bps = np.array(r["bps"], dtype=float)
        diff = np.nanmax(np.abs(bps - reference)) if len(reference) else float("nan")
        print(f"{variant:<11} {per_unit:7.3f} {per_unit * N_UNITS / 60:10.1f} min {speedup:8.2f}x "
              f"{r['peak_rss_mb']:6.0f} MB {diff:12.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
