"""Benchmark stacked training (mtm.stack): K models of one session through each batch at once,
against the same K models trained one after the other, in the same run.

Both sides run the trainer's own code on the same synthetic session: `mtm.train.train_epoch`
for each model alone, `mtm.stack.train_stacked_epoch` for the stack (masks, forward, Poisson
loss, backward, AdamW with the trainer's settings from the workflow config). Rounds alternate
alone, stacked, alone, stacked, ... so a machine's drift hits both; each round's ratio is
printed, then the median and range. The K models are the config's single-session schemes of
the backbone that share a stack (all but mtm-prompt: see mtm.stack).

"separate processes" (--processes P): P processes, one thread each, train the K models alone
side by side on P cores, against one stacked process with P threads: the comparison of a
workflow's K train_single jobs on a P-core machine with one train_stack job.

    python bench/bench_stack.py                                   # demo size, NDT1, on the CPU
    python bench/bench_stack.py --model paper --backbone ndt2 --batch 16 --rounds 2
    python bench/bench_stack.py --processes 2                     # against 2 processes side by side
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from mtm.config import stages  # noqa: E402
from mtm.config.validate import validate_config  # noqa: E402
from mtm.data import SessionTensors  # noqa: E402
from mtm.device import resolve_device, resolve_precision  # noqa: E402
from mtm.stack import stack_groups, train_stacked_epoch  # noqa: E402
from mtm.train import TrainingRun, train_epoch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def synthetic_session(n_trials: int, n_bins: int, n_units: int, seed: int = 0) -> SessionTensors:
    """Poisson counts at log-normal rates (IBL-like: about 5 Hz median at 20 ms bins), 8 regions;
    every trial is a train trial, and a few are also the val split (the trainer needs one)."""
    generator = torch.Generator().manual_seed(seed)
    rates = torch.exp(torch.randn(n_units, generator=generator) + torch.log(torch.tensor(0.1)))
    counts = torch.poisson(rates.expand(n_trials, n_bins, n_units), generator=generator).to(torch.uint8)
    return SessionTensors(
        eid="bench", regions=torch.arange(n_units) % 8, region_names=tuple(f"R{i}" for i in range(8)),
        region_level="beryl", splits={"train": torch.arange(n_trials), "val": torch.arange(4)},
        shape=(n_trials, n_bins, n_units), source=lambda: counts,
    )  # fmt: skip


def stacked_configs(args) -> list:
    """The config's single-session TrainConfigs of the backbone that form its largest stack, K of them."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    if args.config:  # on top of config.yaml, section by section, as Snakemake layers them
        for key, value in yaml.safe_load((REPO / args.config).read_text()).items():
            config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
    config = validate_config(config)
    overrides = {"model": args.model, **({"batch_size": args.batch} if args.batch else {}), "device": args.device}
    schemes = config["training"]["schemes"].get(args.backbone) or ["temporal"]
    configs = [
        dataclasses.replace(stages.train_config(config, stage="single", backbone=args.backbone, scheme=s, seed=0), **overrides)
        for s in schemes
    ]
    largest = max(stack_groups(configs), key=len)
    return [configs[i] for i in largest][: args.k] if args.k else [configs[i] for i in largest]


def epoch_seconds(runs: list[TrainingRun], precision: str, stacked: bool) -> float:
    device = runs[0].device
    start = time.perf_counter()
    if stacked:
        train_stacked_epoch(runs, precision)
    else:
        for run in runs:
            train_epoch(run, precision)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def alone_in_process(args, index: int, epochs: int, queue) -> None:
    """One of P side-by-side processes: its share of the K models, each alone, one thread."""
    torch.set_num_threads(1)
    configs = stacked_configs(args)
    data = synthetic_session(args.trials, args.bins, args.units)
    device = resolve_device(configs[0].device)
    precision = resolve_precision(configs[0].precision, device)
    mine = [TrainingRun([data], c, device) for i, c in enumerate(configs) if i % args.processes == index]
    for run in mine:  # a warm-up epoch, untimed
        train_epoch(run, precision)
    queue.put(sum(epoch_seconds([run], precision, False) for _ in range(epochs) for run in mine))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="a config on top of config.yaml (e.g. config/paper.yaml)")
    parser.add_argument("--backbone", default="ndt1", choices=["ndt1", "ndt2"])
    parser.add_argument("--model", default="demo", choices=["demo", "paper"])
    parser.add_argument("--k", type=int, default=None, help="models in the stack (default: the config's largest stack)")
    parser.add_argument("--batch", type=int, default=None, help="trials per batch (default: the config's)")
    parser.add_argument("--trials", type=int, default=64, help="train trials of the synthetic session (an epoch)")
    parser.add_argument("--bins", type=int, default=100)
    parser.add_argument("--units", type=int, default=128, help="128: the demo sessions'; the paper's: about 670")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    parser.add_argument("--processes", type=int, default=0, help="also time P separate one-thread processes")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if not args.config:
        # the demo's schemes stack nothing (temporal and mtm-prompt differ in shape): the paper's grid does
        args.config = "config/paper.yaml" if args.k is None else None
    torch.set_num_threads(args.threads)

    configs = stacked_configs(args)
    data = synthetic_session(args.trials, args.bins, args.units)
    device = resolve_device(configs[0].device)
    precision = resolve_precision(configs[0].precision, device)
    K = len(configs)
    print(f"{args.backbone} {args.model}, K={K} ({', '.join(c.scheme for c in configs)}), batch {configs[0].batch_size}, "
          f"{args.trials} trials x {args.bins} bins x {args.units} units per epoch, {device} {precision}, "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__}")  # fmt: skip
    alone = [TrainingRun([data], c, device) for c in configs]
    stacked = [TrainingRun([data], c, device) for c in configs]
    epoch_seconds(alone, precision, False), epoch_seconds(stacked, precision, True)  # warm-up
    rates = {"alone": [], "stacked": []}
    for r in range(args.rounds):
        for name, runs in (("alone", alone), ("stacked", stacked)):
            rates[name].append(K * args.trials / epoch_seconds(runs, precision, name == "stacked"))
        print(f"  round {r + 1}: alone {rates['alone'][-1]:8.1f} samples/s   stacked {rates['stacked'][-1]:8.1f} "
              f"samples/s   ratio {rates['stacked'][-1] / rates['alone'][-1]:.2f}")  # fmt: skip
    ratios = [s / a for s, a in zip(rates["stacked"], rates["alone"])]
    print(f"K models one after the other: {statistics.median(rates['alone']):.1f} samples/s (median of {args.rounds})")
    print(f"K models stacked:             {statistics.median(rates['stacked']):.1f} samples/s")
    print(f"stacked / alone: median {statistics.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}")

    if args.processes:
        P = args.processes
        context = multiprocessing.get_context("spawn")
        ratios = []
        for r in range(args.rounds):
            queue = context.Queue()
            workers = [context.Process(target=alone_in_process, args=(args, i, 1, queue)) for i in range(P)]
            for worker in workers:
                worker.start()
            busy = [queue.get() for _ in workers]  # each process's timed epochs (warm-up left out)
            for worker in workers:
                worker.join()
            separate = K * args.trials / max(busy)
            torch.set_num_threads(P)
            together = K * args.trials / epoch_seconds(stacked, precision, True)
            torch.set_num_threads(args.threads)
            ratios.append(together / separate)
            print(f"  round {r + 1}: {P} processes alone {separate:8.1f} samples/s   1 stacked process, "
                  f"{P} threads {together:8.1f} samples/s   ratio {ratios[-1]:.2f}")  # fmt: skip
        print(f"stacked process / {P} separate processes: median {statistics.median(ratios):.2f}, "
              f"range {min(ratios):.2f}-{max(ratios):.2f}")


if __name__ == "__main__":
    main()
