"""Benchmark multi-session pretraining against single-session training: samples/s and GFLOP/s.

Pretraining adds, per batch, the choice of one session's stitchers (`NDT1.stitch_in[eid]`,
`readout[eid]`, `session_token[eid]`), an AdamW over every session's parameters, and the
session order drawn by `TrainingRun.epoch_batches`. This measures what that costs next to training
one session at the same model size; the target is under 10%.

Both runs are `mtm.train`'s own training state (`TrainingRun`: model, AdamW, one-cycle schedule,
generators), scheme "mtm-prompt" (MtM with prompt tokens), batch 16, fp32 on the CPU:
    single  one session of 668 units
    multi   10 sessions of 418..918 units (evenly spread, mean 668), proportional sampling
Synthetic sessions: 96 train + 16 val + 16 test trials x 100 bins, Poisson counts (log-normal
rates per unit), units spread over 8 regions. A step is the body of `train_epoch` for one
batch, taken in the order `TrainingRun.epoch_batches` gives: draw the scheme and its mask, index the
counts, forward with prompt and session, zero_grad, backward, AdamW step, the loss for the log,
scheduler step. Each run first takes warm-up steps; then the runs take turns (rounds of steps,
in an order that reverses every round), so that drifts in the machine's speed hit both alike.
Steps are timed one by one, by phase (prep: scheme, mask and counts; forward; backward; update:
optimizer, logged loss, schedule), and summarised by their median; multi over single is taken
per round (the medians of the round's steps) and given as its median, min-max and
interquartile range over rounds.

The sessions differ in size, so samples/s alone mixes overhead with work: a sample's FLOPs
(`NDT1.flops_per_sample(session=eid)`) grow with the session's units, and the shared embedding
is 2 x the largest session's units wide (1836 for 918 units, against 1336 for one session of
668). The fair comparison is the achieved GFLOP/s, multi over single. Also reported: the time
of one `TrainingRun.epoch_batches` call and the parameters, shared and per session.

    python bench/bench_pretrain.py                  # paper size, under a minute on 2 idle cores
    python bench/bench_pretrain.py --model demo     # about 10 seconds
    python bench/bench_pretrain.py --sessions 4 --spread 0   # equal sessions: overhead alone
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from mtm.data import SessionTensors  # noqa: E402
from mtm.masking import make_mask, sample_scheme  # noqa: E402
from mtm.runtime import keep_freed_memory  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rounds import order, summary as over_rounds  # noqa: E402
from mtm.splits import SPLITS  # noqa: E402
from mtm.device import autocast  # noqa: E402
from mtm.train import TrainingRun  # noqa: E402
from mtm.config.training import TrainConfig  # noqa: E402
from mtm.validation import masked_poisson_nll, prompt_of  # noqa: E402

N_REGIONS = 8
PHASES = ("prep", "forward", "backward", "update")


def synthetic_session(eid: str, n_units: int, args, generator: torch.Generator) -> SessionTensors:
    """Poisson counts (train + 2 x eval trials, bins, units); trials split in that order."""
    sizes = (args.train_trials, args.eval_trials, args.eval_trials)
    rates = torch.empty(n_units).log_normal_(-2.0, 1.0, generator=generator).clamp_max(3.0)  # spikes/bin
    counts = torch.poisson(rates.expand(sum(sizes), args.bins, n_units).contiguous(), generator=generator)
    starts = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    labels = dict(
        eid=eid,
        regions=torch.randint(0, N_REGIONS, (n_units,), generator=generator),
        region_names=tuple(f"region{i}" for i in range(N_REGIONS)),
        region_level="beryl",
        splits={name: torch.arange(a, b) for name, a, b in zip(SPLITS, starts, starts[1:])},
    )
    counts = counts.to(torch.uint8)  # as stored in binned files
    return SessionTensors(**labels, shape=tuple(counts.shape), source=lambda: counts)


def batch_stream(run: TrainingRun) -> Iterator[tuple[SessionTensors, torch.Tensor]]:
    """The batches of `train_epoch`, epoch after epoch."""
    while True:
        yield from run.epoch_batches(run.generators["data"])


def train_step(run: TrainingRun, data: SessionTensors, trials: torch.Tensor, precision: str) -> dict[str, float]:
    """The computation of one `train_epoch` step (one process, no accumulation), timed by phase; the
    loss is the model's own here, where the trainer computes the same sum outside the model."""
    config, device = run.config, run.device
    t0 = time.perf_counter()
    scheme = sample_scheme(config.schemes, generator=run.generators["mask"])
    mask = make_mask(
        scheme,
        shape=(len(trials), data.n_bins, data.n_units),
        regions=data.regions,
        generator=run.generators["mask"],
    )
    counts, mask = data.counts[trials].to(device), mask.to(device)
    t1 = time.perf_counter()
    with autocast(precision, device):
        prompt = prompt_of(scheme, use_prompt=config.use_prompt)
        out = run.model(counts, mask=mask, prompt=prompt, session=data.eid)
    t2 = time.perf_counter()
    run.optimizer.zero_grad(set_to_none=True)
    if out.n_scored:
        out.loss.backward()
    t3 = time.perf_counter()
    if out.n_scored:
        run.optimizer.step()
        masked_poisson_nll(out.log_rates.detach(), counts, mask.target)
    run.scheduler.step()
    run.step += 1
    t4 = time.perf_counter()
    return dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)))


def time_steps(run: TrainingRun, batches, n: int, *, timed: bool, records: list[dict], round_index: int = -1) -> None:
    for _ in range(n):
        data, trials = next(batches)
        cpu = time.process_time()
        phases = train_step(run, data, trials, "fp32")
        if timed:
            seconds = sum(phases.values())
            flops = len(trials) * run.model.flops_per_sample(session=data.eid, training=True)
            records.append(dict(phases, seconds=seconds, samples=len(trials), flops=flops,
                                cpu=time.process_time() - cpu, eid=data.eid, round=round_index))  # fmt: skip


def parameter_counts(run: TrainingRun) -> tuple[int, int]:
    """(shared parameters, parameters of all sessions' stitchers and tokens)."""
    model = run.model
    total = sum(p.numel() for p in model.parameters())
    per_session = sum(p.numel() for eid in model.config.sessions for p in model.session_parameters(eid))
    return total - per_session, per_session


def epoch_batches_seconds(run: TrainingRun, reps: int = 20) -> float:
    """Median seconds of one `epoch_batches` call (fresh generators: the run's own stay untouched)."""
    times = []
    for i in range(reps):
        generator = torch.Generator().manual_seed(i)
        start = time.perf_counter()
        run.epoch_batches(generator)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["paper", "demo"], default="paper")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first, per run")
    parser.add_argument("--rounds", type=int, default=5, help="turns the runs take over the timed steps")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--units", type=int, default=668, help="the single session; the mean of the others")
    parser.add_argument("--spread", type=int, default=500, help="largest minus smallest session, in units")
    parser.add_argument("--bins", type=int, default=100)
    parser.add_argument("--train-trials", type=int, default=96)
    parser.add_argument("--eval-trials", type=int, default=16, help="val and test trials each")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--malloc", choices=["reuse", "default"], default="reuse", help="see keep_freed_memory")
    args = parser.parse_args()
    reuse = args.malloc == "reuse" and keep_freed_memory()
    torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(args.seed)
    low = args.units - args.spread / 2
    sizes = torch.linspace(low, low + args.spread, args.sessions).round().long().tolist()
    sessions = {
        "single": [synthetic_session("single", args.units, args, generator)],
        "multi": [synthetic_session(f"s{i}", n, args, generator) for i, n in enumerate(sizes)],
    }
    config = TrainConfig(
        scheme="mtm-prompt",
        model=args.model,
        batch_size=args.batch,
        epochs=args.warmup + args.steps + 1,  # at least one batch per epoch: the schedule never runs out
        precision="fp32",
        device="cpu",
        seed=args.seed,
    )
    runs = {name: TrainingRun(data, config, torch.device("cpu"), None) for name, data in sessions.items()}
    print(f"torch {torch.__version__} on CPU, {torch.get_num_threads()} threads; "
          f"malloc: {'keeps freed memory' if reuse else 'default'}")  # fmt: skip
    print(f"NDT1 {args.model} size, MtM with prompts, fp32, batch {args.batch} x {args.bins} bins; "
          f"{args.train_trials} train trials per session")  # fmt: skip
    print(f"single: 1 session of {args.units} units; multi: {args.sessions} sessions of {sizes[0]}..{sizes[-1]} "
          f"units (mean {sum(sizes) / len(sizes):.0f}), {config.session_sampling} sampling")  # fmt: skip

    print(f"\n{'run':<7} {'embed width':>11} {'shared params':>13} {'session params':>14} {'steps/epoch':>11} "
          f"{'epoch_batches':>13}")  # fmt: skip
    for name, run in runs.items():
        shared, per_session = parameter_counts(run)
        print(f"{name:<7} {run.model.config.embed_width:11d} {shared / 1e6:11.2f} M {per_session / 1e6:12.2f} M "
              f"{run.steps_per_epoch:11d} {1e3 * epoch_batches_seconds(run):10.3f} ms")  # fmt: skip

    batches = {name: batch_stream(run) for name, run in runs.items()}
    records: dict[str, list[dict]] = {name: [] for name in runs}
    for run in runs.values():
        run.model.train()
    for name, run in runs.items():
        time_steps(run, batches[name], args.warmup, timed=False, records=records[name])
    for r in range(args.rounds):
        n = args.steps // args.rounds + (r < args.steps % args.rounds)
        for name in order(list(runs), r):
            time_steps(runs[name], batches[name], n, timed=True, records=records[name], round_index=r)

    print(f"\nmedian of {args.steps} steps per run after {args.warmup} warm-up steps, in {args.rounds} rounds")
    print(f"{'run':<7} {'samples/s':>9} {'GFLOP/sample':>12} {'GFLOP/s':>8} {'ms/step':>8} "
          + " ".join(f"{p + ' ms':>11}" for p in PHASES))  # fmt: skip
    summary = {}
    for name, steps in records.items():
        median = {key: statistics.median(s[key] for s in steps) for key in (*PHASES, "seconds")}
        summary[name] = {
            "samples/s": statistics.median(s["samples"] / s["seconds"] for s in steps),
            "GFLOP/s": statistics.median(s["flops"] / s["seconds"] / 1e9 for s in steps),
            "GFLOP/sample": sum(s["flops"] for s in steps) / sum(s["samples"] for s in steps) / 1e9,
        }
        print(f"{name:<7} {summary[name]['samples/s']:9.1f} {summary[name]['GFLOP/sample']:12.3f} "
              f"{summary[name]['GFLOP/s']:8.1f} {1e3 * median['seconds']:8.1f} "
              + " ".join(f"{1e3 * median[p]:11.1f}" for p in PHASES))  # fmt: skip
        cpu_share = sum(s["cpu"] for s in steps) / sum(s["seconds"] for s in steps)
        if cpu_share < 0.9 * torch.get_num_threads():
            print(f"  warning: the process used {cpu_share:.2f} of {torch.get_num_threads()} cores while timed; "
                  "another process probably competed for the CPU")  # fmt: skip
    def per_round(name: str, r: int, key: str) -> float:
        steps = [s for s in records[name] if s["round"] == r]
        if key == "samples/s":
            return statistics.median(s["samples"] / s["seconds"] for s in steps)
        return statistics.median(s["flops"] / s["seconds"] / 1e9 for s in steps)

    for key in ("samples/s", "GFLOP/s"):
        ratios = [per_round("multi", r, key) / per_round("single", r, key) for r in range(args.rounds)]
        print(f"multi / single {key:<9}, per round: {over_rounds(ratios, '.3f')}")
    print("GFLOP/sample: the mean over the timed steps (multi: of the sessions the steps drew)")


if __name__ == "__main__":
    main()
