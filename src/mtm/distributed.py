"""Data-parallel training over processes started by `torchrun` (one per GPU, or several on CPU).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them the world is this one process and
nothing here does anything. Every process draws the same batches and masks (the generators are
seeded alike) and trains on its own share of each batch's rows; DistributedDataParallel
averages the gradients, so the weights stay identical across processes and equal one process
training on whole batches, up to floating-point summation order.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """The process that writes checkpoints and logs."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This process's device: its own GPU when the run is on CUDA."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" and self.size > 1 else device

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module to train through: `model` itself, or a DistributedDataParallel of it.
        Every batch trains one session's stitchers only, so the others are unused parameters."""
        if self.size == 1:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    def gradient_sync(self, trainer: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient exchange for micro-batches before the last one of a step."""
        if isinstance(trainer, DistributedDataParallel) and not sync:
            return trainer.no_sync()
        return contextlib.nullcontext()

    def sum(self, *values: float) -> tuple[float, ...]:
        """Each value summed over all processes."""
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor)
        return tuple(tensor.tolist())

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def world_from_env() -> World:
    return World(
        rank=int(os.environ.get("RANK", 0)),
        size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


@contextlib.contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join the processes of `world` for the block (NCCL on CUDA, gloo on CPU)."""
    if world.size == 1 or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank, world_size=world.size)
    try:
        yield
    finally:
        dist.destroy_process_group()
