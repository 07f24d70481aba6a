"""Where and in what precision tensors run: the device and autocast choices of training,
evaluation and the supervised heads, without importing any of them."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

from mtm.vocabulary import PRECISIONS

log = logging.getLogger(__name__)

# x86 instruction sets that run bf16 matmuls in hardware, as /proc/cpuinfo names them; without
# them torch emulates bf16 on the CPU, and a bf16 training step runs several times (up to ~100x)
# slower than fp32. AVX-512 alone (torch's cpu capability "AVX512") is not enough.
FAST_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "amx_tile"})


def resolve_device(device: str) -> torch.device:
    """"auto": CUDA when available, else the CPU; anything else is a torch device string."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else torch.device(device)


def cpu_has_fast_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 in hardware: AVX512-BF16 or AMX (x86).

    Asks torch's own CPU detection where this torch has it, and reads the flags of `cpuinfo`
    (Linux). False wherever neither can tell: another OS, another architecture (ARM's bf16 is
    not counted), an older torch.
    """
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, name, None)
        try:
            if check is not None and check():
                return True
        except Exception:  # a private torch API: whatever it does, it cannot decide for us
            pass
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return bool(flags & FAST_BF16_FLAGS)


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto": bf16 autocast on CUDA, fp32 on the CPU, whatever the CPU: a run of the demo then
    gives the same numbers on every laptop and CI machine (a CPU with AVX512-BF16 or AMX can be
    asked for "bf16"). "bf16" on a CPU without them is kept, with a warning: it is emulated, and
    a training step runs tens of times slower than in fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        log.warning("precision bf16 on a CPU without AVX512-BF16 or AMX: emulated, far slower than fp32")
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` for precision "bf16"; a no-op context for "fp32"."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
