"""Benchmark NDT1 training at paper size: samples/s, FLOP/s, and the fraction of the GEMM ceiling.

One step is what `mtm.train` does per batch under MtM's schedule: draw a scheme (MTM_SCHEMES)
and its mask, forward with the scheme's prompt token, Poisson loss, backward, AdamW step
(lr 1e-4, weight decay 0.01). Defaults: batch 16 trials x 100 bins x 668 units (12.5 M
parameters), synthetic Poisson counts, 8 brain regions. Steps are timed one by one after a
warm-up and summarised by their median.

The ceiling is measured in the same run: the median speed of torch.matmul (with out=, no
allocation) on the shapes of the model's GEMMs (tokens x hidden x {hidden, 3 hidden, ffn}, bins x
units x 2 units), reported as their total FLOPs over their total time. The MtM authors'
implementation trains at about 15 samples/s in fp32 on the 2-core machine of this project.

    python bench/bench_train.py                      # fp32 and bf16 autocast, under a minute
    python bench/bench_train.py --precision bf16 --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from mtm.masking import make_mask, sample_scheme  # noqa: E402
from mtm.models import BACKBONES  # noqa: E402
from mtm.runtime import keep_freed_memory  # noqa: E402
from mtm.vocabulary import MTM_SCHEMES  # noqa: E402

AUTHORS_SAMPLES_PER_S = 15.0  # their fp32 training speed on the project's 2-core machine
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_ceiling(shapes: list[tuple[int, int, int]], dtype: torch.dtype, device: torch.device, reps: int) -> float:
    """GFLOP/s of torch.matmul over `shapes` (m, k, n): total FLOPs / total of median times."""
    flops, seconds = 0.0, 0.0
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device).to(dtype)
        b = torch.randn(k, n, device=device).to(dtype)
        out = torch.empty(m, n, device=device, dtype=dtype)
        times = []
        for i in range(reps + 3):
            synchronize(device)
            start = time.perf_counter()
            torch.matmul(a, b, out=out)
            synchronize(device)
            if i >= 3:
                times.append(time.perf_counter() - start)
        flops += 2.0 * m * k * n
        seconds += statistics.median(times)
    return flops / seconds / 1e9


def make_adamw(params) -> tuple[torch.optim.Optimizer, str]:
    """AdamW, fused (one kernel for all parameters) where this torch build supports it."""
    try:
        return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, fused=True), "fused"
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01), "foreach"


def train_speed(args, precision: str, device: torch.device, backbone: str = "ndt1") -> dict:
    """Per-step wall and process CPU seconds of MtM training steps of the paper-size `backbone`
    (mtm.models.BACKBONES), after a warm-up."""
    torch.manual_seed(args.seed)
    data = torch.Generator().manual_seed(args.seed)
    rates = torch.empty(args.units).log_normal_(-2.0, 1.0, generator=data).clamp_max(3.0)  # spikes/bin
    batches = [
        torch.poisson(rates.expand(args.batch, args.bins, args.units), generator=data).to(device) for _ in range(4)
    ]
    regions = torch.randint(0, 8, (args.units,), generator=data).to(device)
    model_cls, config_cls = BACKBONES[backbone]
    model = model_cls(config_cls.paper({"bench": args.units}, n_bins=args.bins, use_prompt=True)).to(device)
    model.init_readout_bias(torch.stack(batches).mean(dim=(0, 1, 2)))
    optimizer, kind = make_adamw(model.parameters())
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    masks = torch.Generator(device=device).manual_seed(args.seed)
    wall, cpu = [], []
    for step in range(args.warmup + args.steps):
        synchronize(device)
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        counts = batches[step % len(batches)]
        scheme = sample_scheme(MTM_SCHEMES, generator=masks)
        mask = make_mask(
            scheme, shape=tuple(counts.shape), regions=regions, generator=masks, token_units=model.token_units
        )
        with autocast:
            out = model(counts, mask=mask, prompt=MTM_SCHEMES.index(scheme))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if step >= args.warmup:
            wall.append(time.perf_counter() - start_wall)
            cpu.append(time.process_time() - start_cpu)
    return {
        "seconds": statistics.median(wall),
        "cpu_share": sum(cpu) / sum(wall),
        "optimizer": kind,
        "flops": model.flops_per_sample(training=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per precision")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--units", type=int, default=668)
    parser.add_argument("--bins", type=int, default=100)
    parser.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--malloc", choices=["reuse", "default"], default="reuse", help="see keep_freed_memory")
    args = parser.parse_args()
    reuse = args.malloc == "reuse" and keep_freed_memory()

    device = torch.device(args.device)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here, on both devices
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {name}; malloc: {'keeps freed memory' if reuse else 'default'}")
    print(f"NDT1 paper size: batch {args.batch} x {args.bins} bins x {args.units} units, MtM schedule with prompt")

    tokens = args.batch * (args.bins + 2)  # session and prompt tokens
    shapes = [
        (tokens, 512, 512),
        (tokens, 512, 1536),
        (tokens, 512, 1024),
        (args.batch * args.bins, args.units, 2 * args.units),
    ]
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    print(f"median of {args.steps} steps after {args.warmup} warm-up steps")
    print("precision  samples/s  ms/step  GFLOP/sample  GFLOP/s  GEMM ceiling GFLOP/s  of ceiling  vs authors")
    for precision in precisions:
        ceiling = gemm_ceiling(shapes, DTYPES[precision], device, reps=15)
        run = train_speed(args, precision, device)
        samples = args.batch / run["seconds"]
        achieved = samples * run["flops"] / 1e9
        print(
            f"{precision:9}  {samples:9.1f}  {1e3 * run['seconds']:7.0f}  {run['flops'] / 1e9:12.2f}"
            f"  {achieved:7.1f}  {ceiling:20.1f}  {achieved / ceiling:10.2f}"
            f"  {samples / AUTHORS_SAMPLES_PER_S:9.2f}x",
            flush=True,
        )
        if device.type == "cpu" and run["cpu_share"] < 0.9 * torch.get_num_threads():
            print(
                f"  warning: the process used {run['cpu_share']:.2f} of {torch.get_num_threads()} cores "
                "while timed; another process probably competed for the CPU"
            )
    print(f"vs authors: over their {AUTHORS_SAMPLES_PER_S} samples/s (fp32). AdamW: {run['optimizer']}.")


if __name__ == "__main__":
    main()
