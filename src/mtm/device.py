"""Where and in what precision tensors run: the device and autocast choices of training,
evaluation and the supervised heads, without importing any of them."""

from __future__ import annotations

import contextlib

import torch

from mtm.vocabulary import PRECISIONS



def resolve_device(device: str) -> torch.device:
    """"auto": CUDA when available, else the CPU; anything else is a torch device string."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto": bf16 autocast on CUDA, fp32 on the CPU (where bf16 matmuls are slow without AMX)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` for precision "bf16"; a no-op context for "fp32"."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
