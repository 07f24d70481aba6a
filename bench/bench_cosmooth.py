"""Benchmark co-smoothing evaluation of one paper-size session: speed, memory and exactness.

Session: 668 units drawn from the units of one real repeated-site insertion (the bundled IBL
cluster table, `mtm/data/re_clusters.pqt`: all units, as MtM uses, many of them near silent)
with their firing rates, each trial scaled by a log-normal gain and each unit slowly modulated,
Poisson counts in 160 test trials x 100 bins of 20 ms. Of the 78 insertions the one timed has
the median share of (unit, trial) pairs with a spike; the speed-up of the others is projected
from the measured seconds per sample. Model: NDT1 at paper size with prompt tokens,
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

Each variant counts the samples (trial copies) it runs. A full session is extrapolated from
the subset's seconds per sample: the authors' procedure and one unit at a time run 668 x 160
samples; ours runs one unmasked pass per trial plus one sample per (unit, trial) with a spike,
counted on the whole session. The recorded anchor: the authors' co-smoothing ran about 28
forward samples/s on a machine of this kind, about an hour for this session, at 7.7 GB.

    python bench/bench_cosmooth.py                 # about 5 minutes on 2 cores
    python bench/bench_cosmooth.py --units 64
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
from mtm.evaluate import model_predictor  # noqa: E402
from mtm.models import NDT1, NDT1Config  # noqa: E402
from mtm.runtime import keep_freed_memory  # noqa: E402
from mtm.vocabulary import TASK_PROMPTS  # noqa: E402

N_UNITS, N_TRIALS, N_BINS, BIN_SIZE = 668, 160, 100, 0.02
AUTHORS_UNITS_PER_PASS = 8
VARIANTS = ("authors", "sequential", "batched", "bf16")


def insertion_rates() -> dict[str, np.ndarray]:
    """Firing rates (Hz) of all units of each real repeated-site insertion in the bundled table."""
    clusters = pd.read_parquet(ROOT / "src/mtm/data/re_clusters.pqt")
    return {pid: rates.to_numpy() for pid, rates in clusters["firing_rate"].groupby(level=0)}


def session_counts(rates_hz: np.ndarray, seed: int = 0) -> np.ndarray:
    """uint8 (trials, bins, units) Poisson counts of 668 of the units with `rates_hz`, each
    trial scaled by a log-normal gain and each unit modulated slowly over the trial."""
    rng = np.random.default_rng(seed)
    rates_hz = rng.choice(rates_hz, N_UNITS, replace=False)
    gain = rng.lognormal(0.0, 0.4, size=(N_TRIALS, 1, N_UNITS))
    phase = rng.uniform(0, 2 * np.pi, size=(1, 1, N_UNITS))
    modulation = 1.0 + 0.5 * np.sin(np.linspace(0, 2 * np.pi, N_BINS)[None, :, None] + phase)
    return rng.poisson(rates_hz * BIN_SIZE * gain * modulation).astype(np.uint8)


def spiking_fraction(counts: np.ndarray) -> float:
    """The share of (unit, trial) pairs with a spike: the samples ours cannot reuse."""
    return float((counts.sum(axis=1) > 0).mean())


def spiking_fractions() -> dict[str, float]:
    """The spiking fraction of a session drawn from each insertion, by insertion id."""
    return {pid: spiking_fraction(session_counts(rates)) for pid, rates in insertion_rates().items()}


def typical_session(fractions: dict[str, float]) -> np.ndarray:
    """The counts of the insertion whose spiking fraction is the median of `fractions`."""
    median = sorted(fractions, key=fractions.get)[len(fractions) // 2]
    return session_counts(insertion_rates()[median])


def paper_model(counts: np.ndarray) -> NDT1:
    torch.manual_seed(0)
    model = NDT1(NDT1Config.paper({"bench": N_UNITS}, use_prompt=True))
    model.init_readout_bias(torch.from_numpy(counts.mean(axis=(0, 1))).float())
    return model.eval()


class Counting:
    """A heldout.Predictor that counts the samples it runs."""

    def __init__(self, predict: heldout.Predictor):
        self.predict, self.samples = predict, 0

    def __call__(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        self.samples += len(x)
        return self.predict(x, causal)


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
    if variant != "authors":  # our evaluation jobs set it (workflow/scripts/evaluate_single.py)
        keep_freed_memory()
    counts = typical_session(spiking_fractions())
    model = paper_model(counts)
    units = np.sort(np.random.default_rng(1).choice(N_UNITS, n_units, replace=False))
    precision = "bf16" if variant == "bf16" else "fp32"
    predict = Counting(model_predictor(model, session="bench", prompt=TASK_PROMPTS["co-smoothing"], precision=precision))
    predict(torch.zeros(2, N_BINS, N_UNITS), False)  # warm-up
    predict.samples = 0
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
        "samples": predict.samples,
        "units": n_units,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "bps": [None if np.isnan(b) else float(b) for b in bps],
        "active_fraction": float(active.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=32, help="held-out units timed (of 668)")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per pass (batched, bf16)")
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
    by_insertion = spiking_fractions()
    fractions = sorted(by_insertion.values())
    counts = typical_session(by_insertion)
    spiking_pairs = int((counts.sum(axis=1) > 0).sum())
    full_samples = {"authors": N_UNITS * N_TRIALS, "sequential": N_UNITS * N_TRIALS}
    full_samples["batched"] = full_samples["bf16"] = N_TRIALS + spiking_pairs
    subset = next(iter(results.values()))["active_fraction"]
    print(f"session: {N_UNITS} units x {N_TRIALS} test trials x {N_BINS} bins; "
          f"(unit, trial) pairs with a spike: {spiking_pairs / (N_UNITS * N_TRIALS):.1%} "
          f"({subset:.1%} in the {args.units} timed units); {args.threads} threads")  # fmt: skip
    reference = np.array(results.get("sequential", {}).get("bps", []), dtype=float)
    minutes = {v: r["seconds"] / r["samples"] * full_samples[v] / 60 for v, r in results.items()}
    print(f"{'variant':<11} {'samples/s':>9} {'full session':>13} {'speed-up':>9} {'peak RSS':>9} "
          f"{'max |d bps|':>12} {'|d mean bps|':>13}")  # fmt: skip
    for variant, r in results.items():
        speedup = minutes["authors"] / minutes[variant] if "authors" in minutes else float("nan")
        bps = np.array(r["bps"], dtype=float)
        diff = np.nanmax(np.abs(bps - reference)) if len(reference) else float("nan")
        mean_diff = abs(np.nanmean(bps) - np.nanmean(reference)) if len(reference) else float("nan")
        print(f"{variant:<11} {r['samples'] / r['seconds']:9.1f} {minutes[variant]:9.1f} min {speedup:8.2f}x "
              f"{r['peak_rss_mb']:6.0f} MB {diff:12.2e} {mean_diff:13.2e}")  # fmt: skip
    if "authors" in results:
        print(f"the {len(fractions)} real insertions: pairs with a spike "
              f"{fractions[0]:.1%} / {fractions[len(fractions) // 2]:.1%} / {fractions[-1]:.1%} (min / median / max)")
        for variant in ("batched", "bf16"):
            if variant in results:
                per_sample = results[variant]["seconds"] / results[variant]["samples"]
                ups = [minutes["authors"] * 60 / (per_sample * N_TRIALS * (1 + f * N_UNITS)) for f in fractions]
                print(f"  {variant} speed-up over the authors' procedure: "
                      f"{min(ups):.2f}x / {ups[len(ups) // 2]:.2f}x / {max(ups):.2f}x")  # fmt: skip

if __name__ == "__main__":
    main()
