"""Benchmark co-smoothing evaluation of one paper-size session: speed, memory and exactness,
against the authors' procedure timed in the same run, in interleaved rounds.

Session: 668 units drawn from the units of one real repeated-site insertion (the bundled IBL
cluster table, `mtm/data/re_clusters.pqt`: all units, as MtM uses, many of them near silent)
with their firing rates, each trial scaled by a log-normal gain and each unit slowly modulated,
Poisson counts in 160 test trials x 100 bins of 20 ms. Of the 78 insertions the one timed has
the median share of (unit, trial) pairs with a spike; the speed-up of the others is projected
from the measured seconds per sample. Model: NDT1 at paper size with prompt tokens,
random weights with the readout bias at each unit's log mean count (the values mean nothing;
only times and agreement count), the `neuron` prompt.

Variants, on the same seeded subset of `--units` held-out units, per-unit bits/spike compared
with the one-at-a-time reference:

    authors     the authors' procedure: 8 held-out units per pass, each in its own copy of all
                test trials (1280 samples), every unit read out; fp32. Their own code adds int64
                masks, clones and a loss over all units, so this stand-in is if anything faster.
    sequential  one unit at a time: one pass of all test trials per unit; fp32 (the reference)
    batched     mtm.heldout.predict_holdouts: passes of --batch-size samples, and the unmasked
                pass of a trial reused for every unit silent in it; fp32
    bf16        batched under bf16 autocast; by default only where bf16 runs in hardware (a CPU
                with AVX512-BF16 or AMX: mtm.device.cpu_has_fast_bf16), elsewhere it is
                emulated and far slower

Rounds: the held-out units are cut into chunks of 8 (one pass of the authors' procedure); in
round r every variant predicts chunk r, each in a process of its own (so that each peak RSS is
its own), in an order that reverses every round. Each variant counts the samples (trial copies)
it runs. A full session is projected from a round's seconds per sample: the authors' procedure
and one unit at a time run 668 x 160 samples; ours runs one unmasked pass per trial plus one
sample per (unit, trial) with a spike, counted on the whole session. Per round: each variant's
projected minutes and its speed-up over the authors' procedure in the same round, printed as
the median, min-max and interquartile range over rounds. Nothing is compared with a figure
measured in another run or on another machine.

    python bench/bench_cosmooth.py                 # 3 rounds, about 5 minutes on 2 idle cores
    python bench/bench_cosmooth.py --units 8       # 1 round
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rounds import order, peak_rss_mb, precisions, summary  # noqa: E402

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


def paper_model(counts: np.ndarray) -> NDT1:
    torch.manual_seed(0)
    model = NDT1(NDT1Config.paper({"bench": N_UNITS}, use_prompt=True))
    model.init_readout_bias(torch.from_numpy(counts.mean(axis=(0, 1))).float())
    return model.eval()


def timed_units(n_units: int) -> list[np.ndarray]:
    """The seeded subset of `n_units` held-out units, in chunks of one authors' pass (a round each)."""
    units = np.sort(np.random.default_rng(1).choice(N_UNITS, n_units, replace=False))
    return np.array_split(units, -(-n_units // AUTHORS_UNITS_PER_PASS))


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


def run_variant(variant: str, insertion: str, units: np.ndarray, batch_size: int, threads: int) -> dict:
    """(In a process of its own) `variant` on the held-out `units` of the session of `insertion`."""
    torch.set_num_threads(threads)
    if variant != "authors":  # our evaluation jobs set it (workflow/scripts/evaluate_single.py)
        keep_freed_memory()
    counts = session_counts(insertion_rates()[insertion])
    model = paper_model(counts)
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
    return {
        "seconds": seconds,
        "samples": predict.samples,
        "peak_rss_mb": peak_rss_mb(),
        "bps": [None if np.isnan(b) else float(b) for b in bps],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=24, help="held-out units timed (of 668), 8 per round")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per pass (batched, bf16)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, help="default: all, bf16 where it runs in hardware")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant, print JSON
    parser.add_argument("--insertion", help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    chunks = timed_units(args.units)
    if args.variant:
        units = chunks[args.chunk]
        print(json.dumps(run_variant(args.variant, args.insertion, units, args.batch_size, args.threads)))
        return
    if args.variants is None:
        with_bf16 = "bf16" in precisions("auto", torch.device("cpu"))[0]
        args.variants = [v for v in VARIANTS if v != "bf16" or with_bf16]

    by_insertion = spiking_fractions()
    fractions = sorted(by_insertion.values())
    insertion = sorted(by_insertion, key=by_insertion.get)[len(by_insertion) // 2]  # the median one
    counts = session_counts(insertion_rates()[insertion])
    spiking_pairs = int((counts.sum(axis=1) > 0).sum())
    full_samples = {"authors": N_UNITS * N_TRIALS, "sequential": N_UNITS * N_TRIALS}
    full_samples["batched"] = full_samples["bf16"] = N_TRIALS + spiking_pairs
    timed = np.concatenate(chunks)
    subset = float((counts.sum(axis=1) > 0)[:, timed].mean())
    print(f"session: {N_UNITS} units x {N_TRIALS} test trials x {N_BINS} bins; "
          f"(unit, trial) pairs with a spike: {spiking_pairs / (N_UNITS * N_TRIALS):.1%} "
          f"({subset:.1%} in the {len(timed)} timed units); {args.threads} threads; "
          f"{len(chunks)} rounds of {AUTHORS_UNITS_PER_PASS} units, every variant in its own process")  # fmt: skip

    results = {variant: [] for variant in args.variants}
    for r in range(len(chunks)):
        for variant in order(args.variants, r):
            command = [sys.executable, __file__, "--variant", variant, "--insertion", insertion, "--chunk", str(r),
                       "--units", str(args.units), "--batch-size", str(args.batch_size), "--threads", str(args.threads)]  # fmt: skip
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[variant].append(json.loads(out.strip().splitlines()[-1]))
        minutes = {v: rows[r]["seconds"] / rows[r]["samples"] * full_samples[v] / 60 for v, rows in results.items()}
        print(f"  round {r + 1}: full session " + ", ".join(f"{v} {m:.1f} min" for v, m in minutes.items()), flush=True)

    def minutes(variant: str, r: int) -> float:
        row = results[variant][r]
        return row["seconds"] / row["samples"] * full_samples[variant] / 60

    rounds = range(len(chunks))
    bps = {v: np.array([b for row in rows for b in row["bps"]], dtype=float) for v, rows in results.items()}
    reference = bps.get("sequential", np.array([]))
    print(f"median [min-max] over {len(chunks)} rounds; speed-up: over the authors' procedure in the same round")
    print(f"{'variant':<11} {'samples/s':>22} {'full session, min':>26} {'speed-up':>22} {'peak RSS':>9} "
          f"{'max |d bps|':>12} {'|d mean bps|':>13}")  # fmt: skip
    for variant, rows in results.items():
        rates = summary([row["samples"] / row["seconds"] for row in rows], ".1f")
        full = summary([minutes(variant, r) for r in rounds], ".1f")
        ups = summary([minutes("authors", r) / minutes(variant, r) for r in rounds]) if "authors" in results else "-"
        diff = np.nanmax(np.abs(bps[variant] - reference)) if len(reference) else float("nan")
        mean_diff = abs(np.nanmean(bps[variant]) - np.nanmean(reference)) if len(reference) else float("nan")
        peak = max(row["peak_rss_mb"] for row in rows)
        print(f"{variant:<11} {rates:>22} {full:>26} {ups:>22} {peak:6.0f} MB {diff:12.2e} {mean_diff:13.2e}")
    if "authors" in results:
        print(f"the {len(fractions)} real insertions: pairs with a spike "
              f"{fractions[0]:.1%} / {fractions[len(fractions) // 2]:.1%} / {fractions[-1]:.1%} (min / median / max)")
        for variant in ("batched", "bf16"):
            if variant in results:
                per_sample = np.median([row["seconds"] / row["samples"] for row in results[variant]])
                authors = np.median([minutes("authors", r) for r in rounds]) * 60
                ups = [authors / (per_sample * N_TRIALS * (1 + f * N_UNITS)) for f in fractions]
                print(f"  {variant} speed-up over the authors' procedure, projected (medians over rounds): "
                      f"{min(ups):.2f}x / {ups[len(ups) // 2]:.2f}x / {max(ups):.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
