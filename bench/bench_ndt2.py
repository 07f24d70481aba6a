"""Benchmark NDT2 training against NDT1 at the paper's size: samples/s, GFLOP/s, peak memory.

Both backbones take the training step of `bench_train.py` (MtM's schedule with prompt tokens,
Poisson loss, backward, AdamW) on the same synthetic batch: 16 trials x 100 bins x 668 units.
NDT1 has 102 tokens per sample; NDT2, in patches of 128 units, has 6 per bin, 602 in all, so
its attention costs about 35x NDT1's and it does about 6x the FLOPs per sample.

Each (backbone, precision) runs in its own process, so that peak memory is that run's alone:
the process's peak resident set on the CPU, torch's peak allocated memory on CUDA.

    python bench/bench_ndt2.py                     # CPU, fp32 and bf16, a few minutes
    python bench/bench_ndt2.py --device cuda --steps 30
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import synchronize, train_speed  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from mtm.runtime import keep_freed_memory  # noqa: E402

BACKBONES = ("ndt1", "ndt2")


def run_one(args) -> dict:
    """One (backbone, precision) in this process: speed and peak memory, as a dict."""
    keep_freed_memory()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    else:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.cuda.reset_peak_memory_stats(device)
    run = train_speed(args, args.precision, device, backbone=args.backbone)
    synchronize(device)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    samples = args.batch / run["seconds"]
    return {
        "backbone": args.backbone,
        "precision": args.precision,
        "samples_per_s": samples,
        "ms_per_step": 1e3 * run["seconds"],
        "gflop_per_sample": run["flops"] / 1e9,
        "gflop_per_s": samples * run["flops"] / 1e9,
        "peak_mb": peak_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 5 on CPU, 30 on CUDA)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--units", type=int, default=668)
    parser.add_argument("--bins", type=int, default=100)
    parser.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbone", choices=BACKBONES, help=argparse.SUPPRESS)  # one run, in a child
    args = parser.parse_args()
    if args.steps is None:
        args.steps = 30 if args.device.startswith("cuda") else 5
    if args.backbone:
        print(json.dumps(run_one(args)))
        return

    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {args.threads} threads"
    print(f"torch {torch.__version__} on {where}")
    print(f"paper size, batch {args.batch} x {args.bins} bins x {args.units} units, MtM schedule with prompt;")
    print(f"median of {args.steps} steps after {args.warmup} warm-up steps; each row in its own process")
    print("backbone  precision  samples/s  ms/step  GFLOP/sample  GFLOP/s  peak MB  samples/s vs NDT1")
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    flags = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("backbone", "precision")]
    for precision in precisions:
        ndt1_speed = None
        for backbone in BACKBONES:
            cmd = [sys.executable, __file__, *flags, f"--precision={precision}", f"--backbone={backbone}"]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            ndt1_speed = ndt1_speed or row["samples_per_s"]
            print(
                f"{backbone:8}  {precision:9}  {row['samples_per_s']:9.2f}  {row['ms_per_step']:7.0f}"
                f"  {row['gflop_per_sample']:12.2f}  {row['gflop_per_s']:7.1f}  {row['peak_mb']:7.0f}"
                f"  {row['samples_per_s'] / ndt1_speed:17.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
