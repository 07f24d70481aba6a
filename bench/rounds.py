"""What the benchmarks share: which precisions to time, rounds that interleave a candidate with
its baseline, the GEMM ceiling read once per round, and summaries over rounds.

A shared machine's speed drifts within one process (other processes, clocks, caches: with other
jobs running, the fp32 GEMM ceiling of a 2-core VM read 95 to 308 GFLOP/s within one run). So a benchmark compares a
candidate only with a baseline timed in the same process, in rounds that take turns (A B, B A,
A B, ...), and reports each per-round ratio's median and spread over the rounds; a ceiling is
read in every round, and a fraction of it is taken per round. No figure measured elsewhere.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from mtm.device import cpu_has_fast_bf16  # noqa: E402

PRECISION_CHOICES = ("auto", "fp32", "bf16", "both")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def precisions(requested: str, device: torch.device) -> tuple[list[str], str | None]:
    """The precisions to time, and a note when bf16 is left out.

    "auto": fp32, plus bf16 autocast where it runs in hardware (CUDA; a CPU with AVX512-BF16 or
    AMX, `mtm.device.cpu_has_fast_bf16`); elsewhere
    bf16 is emulated, tens of times slower than fp32. "both", "fp32", "bf16": as asked.
    """
    if requested == "both":
        return ["fp32", "bf16"], None
    if requested != "auto":
        return [requested], None
    if device.type == "cuda" or cpu_has_fast_bf16():
        return ["fp32", "bf16"], None
    return ["fp32"], "bf16 not timed: this CPU has neither AVX512-BF16 nor AMX (--precision both to time it anyway)"


def set_up_device(name: str, threads: int) -> torch.device:
    """The benchmarked device: torch's threads on the CPU (0: torch's default), and no TF32 on
    CUDA, so that fp32 means fp32 on both devices."""
    device = torch.device(name)
    if device.type == "cpu" and threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    return device


def machine(device: torch.device) -> str:
    """The device in words, with what decides the precisions."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}"
    fast = "yes" if cpu_has_fast_bf16() else "no"
    return f"CPU, {torch.get_num_threads()} threads, capability {torch.backends.cpu.get_cpu_capability()}, fast bf16: {fast}"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def order(names: Sequence[str], round_index: int) -> list[str]:
    """The order of a round: as given in even rounds, reversed in odd ones (A B, B A, ...), so
    that neither always runs first (after the ceiling) or last."""
    return list(names) if round_index % 2 == 0 else list(reversed(names))


class GemmCeiling:
    """The speed of torch.matmul (out=, no allocation) on the shapes (m, k, n) a model's GEMMs
    take, in one dtype. Each `read()` is one reading: per shape the best of `calls` calls after
    an untimed one, and their total FLOPs over the total of those times, in GFLOP/s."""

    def __init__(self, shapes: Sequence[tuple[int, int, int]], dtype: torch.dtype, device: torch.device, calls: int = 3):
        self.device, self.calls = device, calls
        self.operands = []
        for m, k, n in shapes:
            a = torch.randn(m, k, device=device).to(dtype)
            b = torch.randn(k, n, device=device).to(dtype)
            self.operands.append((a, b, torch.empty(m, n, device=device, dtype=dtype)))
        self.flops = sum(2.0 * m * k * n for m, k, n in shapes)

    def read(self) -> float:
        seconds = 0.0
        for a, b, out in self.operands:
            times = []
            for i in range(self.calls + 1):
                synchronize(self.device)
                start = time.perf_counter()
                torch.matmul(a, b, out=out)
                synchronize(self.device)
                if i:
                    times.append(time.perf_counter() - start)
            seconds += min(times)
        return self.flops / seconds / 1e9


def summary(values: Sequence[float], spec: str = ".2f") -> str:
    """"median [min-max] (IQR q1-q3)" of per-round values."""
    v = sorted(values)
    if len(v) < 4:
        return f"{statistics.median(v):{spec}} [{v[0]:{spec}}-{v[-1]:{spec}}]"
    q1, _, q3 = statistics.quantiles(v, n=4)
    return f"{statistics.median(v):{spec}} [{v[0]:{spec}}-{v[-1]:{spec}}] (IQR {q1:{spec}}-{q3:{spec}})"


def peak_rss_mb() -> float:
    """This process's peak resident set, MB: VmHWM of /proc/self/status on Linux (the current
    program's own: ru_maxrss would keep the parent's at the fork), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 2**20
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def cpu_warning(cpu_seconds: float, wall_seconds: float, device: torch.device) -> str | None:
    """A warning when the timed process used well under its threads' worth of CPU (another process competed)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or wall_seconds <= 0 or cpu_seconds / wall_seconds >= 0.9 * threads:
        return None
    return (f"warning: the process used {cpu_seconds / wall_seconds:.2f} of {threads} cores while timed; "
            "other processes competed for the CPU (the per-round ratios hold better than the rates)")  # fmt: skip
