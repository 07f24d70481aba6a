"""One resumable run: the state a killed job restarts from, the selected epoch's weights, and
what a run that had nothing to train on leaves behind.

Training a backbone (mtm.train) and a supervised head (mtm.supervised) are both a
`ResumableRun`. The base keeps what every run has: the epoch count and per-epoch `history`, the
selection (`best_score`, higher is better; `best_epoch`, 1-based; `best_weights`), the
optimizer, and the random state: torch's global RNG (weight init, dropout), CUDA's on a CUDA
device, and every generator in `generators` (data order, masks). A subclass says

    identity()                    what a saved state must match to be resumed (config, sessions, ...)
    weights() / load_weights()    a copy of the tensors that train, and putting them back
    extra_state() / restore_extra()   any further counters (a schedule, convergence)

and a job runs

    run.resume(state_dir, name)   # a matching state is restored; another run's is cleared
    each epoch: ...; run.select(score); run.save_if_due(state_dir)
    clear_state(state_dir)        # once the outputs are written

On the CPU a run killed at any point and restarted ends bit-identical to an uninterrupted one.
The state is saved after an epoch unless that would spend more than STATE_SAVE_SHARE of the run's time
writing it: a demo model saves after every epoch; a paper-size model on a GPU, whose 200 MB state
(weights, best weights, AdamW's two moments) takes longer to write than an epoch takes to train,
every few epochs. A killed run then resumes from an earlier epoch, and still ends the same.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from mtm.checkpoint import clear_state, load_state, save_skipped, save_state
from mtm.config.training import STATE_SAVE_SHARE
from mtm.io import write_text

log = logging.getLogger(__name__)

STATE_DIR = "state"  # a run's state folder, inside its output folder


class ResumableRun:
    """The state every run keeps (module docstring); subclasses set `optimizer` and `generators`."""

    optimizer: torch.optim.Optimizer

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.generators: dict[str, torch.Generator] = {}
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self.best_score = -math.inf
        self.best_epoch: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.last_save: tuple[float, float] | None = None  # (when the last save ended, its seconds)

    def identity(self) -> dict[str, Any]:
        raise NotImplementedError

    def weights(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        return {}

    def restore_extra(self, state: dict[str, Any]) -> None:
        pass

    def select(self, score: float) -> None:
        """After an epoch: keep its weights when `score` beats every earlier epoch's (ties keep
        the earlier; NaN never wins)."""
        if score > self.best_score:
            self.best_score, self.best_epoch, self.best_weights = score, self.epoch, self.weights()

    def state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(), **{k: g.get_state() for k, g in self.generators.items()}}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            **self.identity(),
            "epoch": self.epoch,
            "history": self.history,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_weights": self.best_weights,
            "weights": self.weights(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,
            **self.extra_state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.load_weights(state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        for name, generator in self.generators.items():
            generator.set_state(state["rng"][name])
        self.epoch, self.history = state["epoch"], state["history"]
        self.best_score, self.best_epoch, self.best_weights = state["best_score"], state["best_epoch"], state["best_weights"]
        self.restore_extra(state)

    def save(self, state_dir: Path) -> None:
        started = time.perf_counter()
        save_state(state_dir, self.state())
        self.last_save = (time.perf_counter(), time.perf_counter() - started)

    def save_if_due(self, state_dir: Path) -> bool:
        """Save the state (after an epoch) unless the time since the last save is too short for
        that save's cost to stay under STATE_SAVE_SHARE of it; returns whether it saved."""
        if self.last_save is not None:
            ended, seconds = self.last_save
            if time.perf_counter() - ended < seconds * (1 - STATE_SAVE_SHARE) / STATE_SAVE_SHARE:
                return False
        self.save(state_dir)
        return True

    def resume(self, state_dir: Path, name: str) -> None:
        """Restore the state in `state_dir` when it is this run's (same identity); a state of
        another run is cleared, with a warning."""
        state = load_state(state_dir)
        if state is None:
            return
        saved_by_this_harness = all(key in state for key in ("weights", "optimizer", "rng", "best_score"))
        if not saved_by_this_harness or {k: state.get(k) for k in self.identity()} != self.identity():
            log.warning("%s: the state in %s is of another run; starting afresh", name, state_dir)
            clear_state(state_dir)
            return
        self.restore(state)
        log.info("%s: resumed after epoch %d", name, self.epoch)


def write_skipped(out_dir: str | Path, reason: str, metadata: dict[str, Any], log_columns: list[str]) -> None:
    """The outputs of a run with nothing to train on (an unusable session, a skipped model
    upstream): `config.json` says why, `model.safetensors` holds no tensors, `log.csv` no rows.
    The folder has the files of a trained run, so a workflow declares the same outputs for both."""
    log.info("%s: skipped, %s", metadata.get("eid") or out_dir, reason)
    save_skipped(out_dir, reason, metadata)
    write_text(Path(out_dir) / "log.csv", pd.DataFrame([], columns=log_columns).to_csv(index=False))
