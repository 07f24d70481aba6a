"""Learning-rate schedules stepped once per batch, with state dicts for resumable runs."""

from __future__ import annotations

from typing import Any

import torch


def one_cycle(optimizer: torch.optim.Optimizer, *, lr: float, total_steps: int, warmup_fraction: float):
    """The authors' schedule: cosine one-cycle from lr / 10 up to `lr` over the first
    `warmup_fraction` of `total_steps`, then down towards 0 at the last step."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=total_steps, pct_start=warmup_fraction, div_factor=10, anneal_strategy="cos"
    )


class PlateauSchedule:
    """Linear warm-up from lr / 10 to `lr` over `warmup_steps` batches, then constant until `cut`
    multiplies it by `factor` (at most `max_cuts` times): reduce-on-plateau for a run that stops
    on convergence, so it anneals when, and only when, the validation loss stalls."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, lr: float, warmup_steps: int, factor: float, max_cuts: int):
        if not 0 < factor < 1 or max_cuts < 0 or warmup_steps < 0:
            raise ValueError("PlateauSchedule: need 0 < factor < 1, max_cuts >= 0, warmup_steps >= 0")
        self.optimizer, self.lr, self.warmup_steps = optimizer, lr, warmup_steps
        self.factor, self.max_cuts = factor, max_cuts
        self.steps, self.cuts = 0, 0
        self._apply()

    def _apply(self) -> None:
        warm = 1.0 if self.steps >= self.warmup_steps else 0.1 + 0.9 * self.steps / self.warmup_steps
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * warm * self.factor**self.cuts

    def step(self) -> None:
        self.steps += 1
        self._apply()

    def cut(self) -> bool:
        """Lower the rate by `factor`; False (and no change) once it has been cut `max_cuts` times."""
        if self.cuts >= self.max_cuts:
            return False
        self.cuts += 1
        self._apply()
        return True

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "cuts": self.cuts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps, self.cuts = int(state["steps"]), int(state["cuts"])
        self._apply()
