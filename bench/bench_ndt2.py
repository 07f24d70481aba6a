"""Benchmark NDT2 training against NDT1 at the paper's size, timed in the same process:
samples/s, GFLOP/s, each one's fraction of the GEMM ceiling, and peak memory.

Both backbones take mtm.train's own step (bench_train.py's `OurStep`: a `TrainingRun` built
from config/paper.yaml's single-session TrainConfig for that backbone, MtM with prompts, stepped
by `train_epoch` one batch at a time) on the same synthetic batches of 16 trials x 100 bins x
668 units. NDT1 has 101-102 tokens per sample; NDT2, in patches of 128 units, has 6 per bin,
about 600 in all, so its attention costs about 35x NDT1's and it does about 6x the FLOPs per
sample.

After warm-up steps come rounds: each reads the GEMM ceiling once (the GEMM shapes of both
models), then takes --ndt1-steps NDT1 steps and --ndt2-steps NDT2 steps, in alternating order.
Per round: each one's samples/s and GFLOP/s, NDT2's samples/s and GFLOP/s over NDT1's, and each
one's GFLOP/s over the round's ceiling. Printed: the median, min-max and interquartile range
over rounds. Nothing is compared with a figure measured in another run or on another machine.

Peak memory is each backbone's alone: a child process per (backbone, precision) builds it and
takes two steps (the second holds the optimizer state and the activations at once), and reports
its peak resident set on the CPU, torch's peak allocated memory on CUDA (--no-memory skips it).

Precisions: fp32, and bf16 autocast where it runs in hardware (CUDA, or a CPU with AVX512-BF16
or AMX); elsewhere only when asked for (--precision both or bf16).

    python bench/bench_ndt2.py                     # CPU: about two minutes on 2 idle cores
    python bench/bench_ndt2.py --device cuda --rounds 10 --ndt1-steps 10 --ndt2-steps 10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import OurStep, bench_config, gemm_shapes, synthetic_counts  # noqa: E402
from rounds import (  # noqa: E402
    DTYPES,
    PRECISION_CHOICES,
    GemmCeiling,
    cpu_warning,
    machine,
    order,
    peak_rss_mb,
    precisions,
    set_up_device,
    summary,
    synchronize,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from mtm.runtime import keep_freed_memory  # noqa: E402

BACKBONES = ("ndt1", "ndt2")


def build(args, backbone: str, precision: str, device: torch.device) -> OurStep:
    counts, regions = synthetic_counts(args)
    return OurStep(bench_config(args, backbone, precision, device), counts, regions, device)


def peak_memory(args, backbone: str, precision: str) -> float:
    """(In a child process) MB at the peak of building `backbone` and taking two steps."""
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step = build(args, backbone, precision, device)
    step()
    step()
    synchronize(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


def compare(args, precision: str, device: torch.device) -> None:
    memory = {}  # first, while this process holds no model
    if args.memory:
        for backbone in BACKBONES:
            keys = ("batch", "units", "bins", "device", "threads", "seed", "config")
            flags = [f"--{k}={v}" for k, v in vars(args).items() if k in keys]
            command = [sys.executable, __file__, *flags, f"--precision={precision}", f"--child={backbone}"]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            memory[backbone] = json.loads(out.strip().splitlines()[-1])["peak_mb"]
    steps = {backbone: build(args, backbone, precision, device) for backbone in BACKBONES}
    n_steps = {"ndt1": args.ndt1_steps, "ndt2": args.ndt2_steps}
    flops = {backbone: step.flops_per_sample for backbone, step in steps.items()}
    shapes = [shape for step in steps.values() for shape in gemm_shapes(step.run.model.config, args.batch, args.units)]
    ceiling = GemmCeiling(shapes, DTYPES[precision], device)
    for step in steps.values():
        for _ in range(args.warmup):
            step()

    rows, cpu, wall = [], 0.0, 0.0
    for r in range(args.rounds):
        row = {"ceiling": ceiling.read()}
        for backbone in order(BACKBONES, r):
            synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(n_steps[backbone]):
                steps[backbone]()
            synchronize(device)
            seconds = time.perf_counter() - start
            cpu, wall = cpu + time.process_time() - start_cpu, wall + seconds
            row[backbone] = n_steps[backbone] * args.batch / seconds
            row[f"{backbone} GFLOP/s"] = row[backbone] * flops[backbone] / 1e9
            row[f"{backbone} of ceiling"] = row[f"{backbone} GFLOP/s"] / row["ceiling"]
        row["ratio"] = row["ndt2"] / row["ndt1"]
        row["flop ratio"] = row["ndt2 GFLOP/s"] / row["ndt1 GFLOP/s"]
        rows.append(row)
        print(f"  round {r + 1}: ceiling {row['ceiling']:.1f} GFLOP/s, NDT1 {row['ndt1']:.2f} samples/s, "
              f"NDT2 {row['ndt2']:.2f} samples/s, NDT2 / NDT1 {row['ratio']:.3f}", flush=True)  # fmt: skip

    def over_rounds(key: str, spec: str = ".2f") -> str:
        return summary([row[key] for row in rows], spec)

    print(f"{precision}, median [min-max] (IQR) over {args.rounds} rounds "
          f"({args.ndt1_steps} NDT1 and {args.ndt2_steps} NDT2 steps each, after {args.warmup} warm-up steps):")  # fmt: skip
    for backbone in BACKBONES:
        peak = f"; peak {memory[backbone]:.0f} MB (its own process)" if backbone in memory else ""
        print(f"  {backbone.upper()}  samples/s {over_rounds(backbone)}; {flops[backbone] / 1e9:.2f} GFLOP/sample, "
              f"GFLOP/s {over_rounds(f'{backbone} GFLOP/s', '.1f')}, of ceiling {over_rounds(f'{backbone} of ceiling', '.3f')}"
              f"{peak}")  # fmt: skip
    print(f"  NDT2 / NDT1 per round: samples/s {over_rounds('ratio', '.3f')}; GFLOP/s {over_rounds('flop ratio', '.3f')}")
    print(f"  GEMM ceiling GFLOP/s, read once per round: {over_rounds('ceiling', '.1f')}")
    warning = cpu_warning(cpu, wall, device)
    if warning:
        print(f"  {warning}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ndt1-steps", type=int, default=2, help="timed NDT1 steps per round")
    parser.add_argument("--ndt2-steps", type=int, default=1, help="timed NDT2 steps per round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each first")
    parser.add_argument("--config", default="config/paper.yaml", help="the workflow config whose training is timed")
    parser.add_argument("--batch", type=int, default=None, help="trials per batch (default: the config's)")
    parser.add_argument("--units", type=int, default=668)
    parser.add_argument("--bins", type=int, default=100)
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                        help="auto: fp32, and bf16 where it runs in hardware")  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                        help="peak memory of each backbone in its own process")  # fmt: skip
    parser.add_argument("--child", choices=BACKBONES, help=argparse.SUPPRESS)  # internal: peak memory of one
    args = parser.parse_args()
    keep_freed_memory()
    device = set_up_device(args.device, args.threads)
    if args.batch is None:
        args.batch = bench_config(args, "ndt1", "fp32", device).batch_size
    if args.child:
        print(json.dumps({"peak_mb": peak_memory(args, args.child, args.precision)}))
        return

    chosen, note = precisions(args.precision, device)
    print(f"torch {torch.__version__} on {machine(device)}")
    print(f"NDT1 and NDT2 training steps at paper size, batch {args.batch} x {args.bins} bins x {args.units} units, "
          f"MtM schemes with prompts; precisions: {', '.join(chosen)}{f' ({note})' if note else ''}")  # fmt: skip
    for precision in chosen:
        compare(args, precision, device)


if __name__ == "__main__":
    main()
