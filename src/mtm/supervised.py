"""A supervised head per behaviour target on a trained encoder's latents: MtM's supervised
protocol (the authors' configs/trainer_sl_*), beside the rate-based decoders of mtm.decoding.

For one target of one session, a linear head maps the latents of all bins of a trial, flattened
(n_bins x hidden, from `Backbone.encode` on the unmasked input, under the target's prompt for a
prompted model, as the rate decoders use), to the target; for `block` the encoder sees, and the
head reads, only the bins before the alignment event (mtm.decoding.input_bins):

    target                  head output                      loss                metric
    choice, block,          one logit (-1/+1; 0.2/0.8 block) binary cross-entropy accuracy
    block-whole-trial
    wheel-speed,            one value per bin: the target    mean squared error  R² over test
    whisker-motion-energy   less the train trials' mean of                       trials x bins
                            the bin, over their residual std

Encoder, `HeadConfig.encoder`:
    frozen   its weights never change; its latents are computed once, in eval mode
    full     it trains with the head from the first epoch (at encoder_lr, dropout on)
    gradual  the head trains alone first; then the transformer blocks are unfrozen from the top,
             one more at each of n_blocks equal steps through the epochs, the final norm with
             the top block and everything below the blocks (embedding, stitchers, context
             tokens) with the bottom one (ULMFiT's gradual unfreezing)

Protocol. Train on the train trials; after each epoch score the val trials, keep the head (and
encoder) of the best val score (ties: the earlier epoch); score that on the test trials. Trials a
target cannot use are dropped and a target that cannot be decoded gets NaN, exactly as in
mtm.decoding, whose chance levels (from the train+val trials, on the same test trials) are
reported here too, so both protocols compare row by row. The authors' settings are the defaults:
AdamW lr 5e-4, weight decay 1 (choice, block) or 0.1 (wheel, whisker), 200 epochs, batch 16.

The state is saved every `checkpoint_every` epochs (mtm.resumable), so a killed job resumes
where it stopped and ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch import nn

from mtm.checkpoint import clear_state, load_pretrained, read_config, write_weights
from mtm.config.heads import HeadConfig
from mtm.decoding import chance_level, flat_r2, input_bins, not_decodable, target_values
from mtm.device import resolve_device
from mtm.io import write_json, write_parquet, write_text
from mtm.results_table import METRIC_COLUMNS, ModelLabels, empty_table
from mtm.resumable import STATE_DIR, ResumableRun, write_skipped
from mtm.runtime import exit_on_sigterm, num_threads
from mtm.seeds import derive_seed
from mtm.session import SessionData, load_model_session
from mtm.vocabulary import CLASSIFICATION_TARGETS, DECODING_PROMPTS, DECODING_TARGETS, prompt_index

log = logging.getLogger(__name__)

HEAD_METRICS = {"accuracy": "head_accuracy", "r2": "head_r2"}  # metric names in the metrics table
LOG_COLUMNS = ["epoch", "train_loss", "val_loss", "val_score"]


@dataclass
class HeadResult:
    target: str
    metric: str  # accuracy | r2
    value: float  # test score of the selected epoch (NaN: not decodable)
    chance: float  # as mtm.decoding's, on the same test trials
    best_epoch: int | None
    history: list[dict[str, float]]  # LOG_COLUMNS
    n_train: int
    n_val: int
    n_test: int
    weights: dict[str, torch.Tensor]  # the selected head (head.*), and encoder (encoder.*) when it trained; {}: none


class _Targets:
    """One target's values, as the head is trained on them, for the train, val and test trials."""

    def __init__(self, target: str, session: SessionData):
        behaviour = {"wheel-speed": session.wheel_speed, "whisker-motion-energy": session.whisker_motion_energy}
        y, usable = target_values(target, session.trials, behaviour)
        self.classify = target in CLASSIFICATION_TARGETS
        self.metric = "accuracy" if self.classify else "r2"
        split = session.split
        self.index = {name: np.flatnonzero((split == name) & usable) for name in ("train", "val", "test")}
        self.y = y
        fit = np.concatenate([self.index["train"], self.index["val"]])
        self.chance = chance_level(y[fit], y[self.index["test"]], self.classify)
        self.unusable = not_decodable(y[fit], len(fit), len(self.index["test"]), self.classify)
        if self.unusable is None and not len(self.index["val"]):
            self.unusable = "no usable val trials to select the head's epoch on"
        if self.classify:
            self.labels = np.unique(y[fit])  # the two classes (not_decodable checks): the logit is for the second
        else:
            # one scale for every bin: the loss then ranks heads as the flattened R² does
            train = y[self.index["train"]]
            self.mean = train.mean(axis=0)
            self.std = float((train - self.mean).std()) or 1.0

    def tensor(self, split: str) -> torch.Tensor:
        """The head's targets for `split`: float (n,) 0/1 labels, or (n, n_bins) scaled values."""
        y = self.y[self.index[split]]
        y = (y == self.labels[1]).astype(np.float32) if self.classify else ((y - self.mean) / self.std)
        return torch.from_numpy(np.asarray(y, dtype=np.float32))

    def score(self, split: str, outputs: torch.Tensor) -> float:
        """Accuracy or flattened R² of the head's outputs on `split`, in the target's units."""
        y = self.y[self.index[split]]
        outputs = outputs.double().numpy()
        if self.classify:
            return float(np.mean(np.where(outputs > 0, self.labels[1], self.labels[0]) == y))
        return flat_r2(y, outputs * self.std + self.mean)


def encoder_stages(model: nn.Module) -> list[list[nn.Parameter]]:
    """The encoder's parameters in the order gradual unfreezing releases them: the top block with
    the final norm, then each block below, then everything under the blocks. The readout (and
    NDT2's per-unit offsets) are left out: a head replaces them."""
    blocks = list(model.blocks)
    stages: list[list[nn.Parameter]] = [list(model.ln_final.parameters()) + list(blocks[-1].parameters())]
    stages += [list(block.parameters()) for block in reversed(blocks[:-1])]
    taken = {id(p) for stage in stages for p in stage}
    excluded = {id(p) for name, p in model.named_parameters() if name.startswith(("readout", "unit_offset"))}
    stages[-1] += [p for p in model.parameters() if id(p) not in taken | excluded]
    return stages


def unfrozen_stages(epoch: int, config: HeadConfig, n_stages: int) -> int:
    """How many encoder stages train in `epoch` (0-based)."""
    if config.encoder == "frozen":
        return 0
    if config.encoder == "full":
        return n_stages
    return min(n_stages, epoch * (n_stages + 1) // config.epochs)


class HeadRun(ResumableRun):
    """A head's training (mtm.resumable): the encoder, the head, AdamW and the batch order."""

    def __init__(self, model: nn.Module, session: SessionData, targets: _Targets, target: str, config: HeadConfig,
                 device: torch.device):  # fmt: skip
        super().__init__(device)
        self.model, self.session, self.targets, self.target, self.config = model, session, targets, target, config
        uses_prompt = getattr(model.config, "use_prompt", False)
        self.prompt_name = DECODING_PROMPTS[target] if uses_prompt else None
        self.prompt = None if self.prompt_name is None else prompt_index(self.prompt_name)
        self.counts = torch.from_numpy(session.counts.astype(np.float32))
        n_bins = self.counts.shape[1]
        out = 1 if targets.classify else n_bins
        # the encoder sees the bins the target's decoders see (block: before the event only)
        self.input_bins = input_bins(target, session) or n_bins
        self.generators = {"batches": torch.Generator().manual_seed(derive_seed(config.seed, session.eid, target))}
        torch.manual_seed(derive_seed(config.seed, session.eid, target, "dropout"))  # the encoder's, when it trains
        # zeros: the head starts at the prior (logit 0; the train trials' mean per bin) and only
        # moves away from it where the latents help; random weights on thousands of latents
        # start far below chance
        self.head = nn.Linear(self.input_bins * model.config.hidden, out).to(device)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.stages = encoder_stages(model)
        for p in model.parameters():
            p.requires_grad_(False)
        groups = [{"params": list(self.head.parameters()), "lr": config.lr, "weight_decay": config.weight_decay[target]}]
        if config.encoder != "frozen":
            groups.append({"params": [p for stage in self.stages for p in stage], "lr": config.encoder_lr,
                           "weight_decay": config.encoder_weight_decay})  # fmt: skip
        self.optimizer = torch.optim.AdamW(groups)
        self.frozen_latents = self._latents(np.arange(len(self.counts))) if config.encoder == "frozen" else None
        self.loss_fn = nn.functional.binary_cross_entropy_with_logits if targets.classify else nn.functional.mse_loss

    def _latents(self, trials: np.ndarray, *, train: bool = False) -> torch.Tensor:
        """(len(trials), input_bins * hidden) latents; in eval mode without gradients unless `train`."""
        counts = self.counts[:, : self.input_bins]
        if train:
            self.model.train()
            return self.model.encode(counts[trials].to(self.device), prompt=self.prompt, session=self.session.eid).flatten(1)
        self.model.eval()
        with torch.inference_mode():
            parts = [
                self.model.encode(counts[chunk].to(self.device), prompt=self.prompt, session=self.session.eid)
                for chunk in torch.from_numpy(trials).split(64)
            ]
        return torch.cat(parts).flatten(1).clone()  # a normal tensor: the head's backward may save it

    def outputs(self, split: str) -> torch.Tensor:
        trials = self.targets.index[split]
        self.head.eval()
        with torch.inference_mode():
            z = self.frozen_latents[trials] if self.frozen_latents is not None else self._latents(trials)
            return self.head(z).squeeze(-1).float().cpu()

    def train_epoch(self) -> float:
        n_train = unfrozen_stages(self.epoch, self.config, len(self.stages))
        for i, stage in enumerate(self.stages):
            for p in stage:
                p.requires_grad_(i < n_train)
        train = self.targets.index["train"]
        y = self.targets.tensor("train").to(self.device)
        order = torch.randperm(len(train), generator=self.generators["batches"])
        total = 0.0
        self.head.train()
        for batch in order.split(self.config.batch_size):
            trials = train[batch.numpy()]
            if self.frozen_latents is not None:
                z = self.frozen_latents[trials]
            elif n_train:
                z = self._latents(trials, train=True)
            else:  # gradual, before the first stage: the encoder runs as in training, without gradients
                with torch.no_grad():
                    z = self._latents(trials, train=True)
            loss = self.loss_fn(self.head(z).squeeze(-1), y[batch])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item() * len(batch)
        return total / len(train)

    def end_epoch(self, train_loss: float) -> None:
        outputs = self.outputs("val")
        val_loss = float(self.loss_fn(outputs, self.targets.tensor("val")))
        self.epoch += 1
        self.history.append({"epoch": self.epoch, "train_loss": train_loss, "val_loss": val_loss,
                             "val_score": self.targets.score("val", outputs)})  # fmt: skip
        self.select(-val_loss)

    def weights(self) -> dict[str, torch.Tensor]:
        """The head's tensors (head.*) and, when the encoder trains, the encoder's (encoder.*)."""
        tensors = {f"head.{k}": v.detach().cpu().clone() for k, v in self.head.state_dict().items()}
        if self.config.encoder != "frozen":
            tensors |= {f"encoder.{k}": v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        return tensors

    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        self.head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
        encoder = {k[8:]: v for k, v in tensors.items() if k.startswith("encoder.")}
        if encoder:
            self.model.load_state_dict(encoder)

    def identity(self) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.config), "eid": self.session.eid, "target": self.target}


def finetune_head(
    model: nn.Module, session: SessionData, target: str, config: HeadConfig, *, state_dir: Path | None = None
) -> HeadResult:
    """Train and select a head for `target` on `session` (module docstring); `model` is the
    trained encoder, on its device, changed in place unless the encoder is frozen. state_dir:
    where states are saved and resumed from (None: no states)."""
    if target not in DECODING_TARGETS:
        raise ValueError(f"unknown target {target!r}; known: {list(DECODING_TARGETS)}")
    targets = _Targets(target, session)
    n = {split: len(index) for split, index in targets.index.items()}
    if targets.unusable is not None:
        log.warning("%s: cannot decode %s: %s", session.eid, target, targets.unusable)
        return HeadResult(target, targets.metric, float("nan"), float("nan"), None, [], n["train"], n["val"], n["test"], {})
    device = next(model.parameters()).device
    run = HeadRun(model, session, targets, target, config, device)
    if state_dir is not None:
        run.resume(state_dir, f"{session.eid} {target}")
    with exit_on_sigterm():
        while run.epoch < config.epochs:
            run.end_epoch(run.train_epoch())
            if state_dir is not None and (run.epoch % config.checkpoint_every == 0 or run.epoch == config.epochs):
                run.save(state_dir)
    run.load_weights(run.best_weights)
    value = targets.score("test", run.outputs("test"))
    for p in model.parameters():
        p.requires_grad_(True)
    log.info("%s %s: test %s %.3f (chance %.3f), val best at epoch %d", session.eid, target, targets.metric, value,
             targets.chance, run.best_epoch)  # fmt: skip
    return HeadResult(target, targets.metric, value, targets.chance, run.best_epoch, run.history, n["train"],
                      n["val"], n["test"], run.best_weights)  # fmt: skip


def finetune_head_checkpoint(
    model_dir: str | Path,
    binned_path: str | Path,
    out_dir: str | Path,
    target: str,
    config: HeadConfig,
    *,
    setting: str,
    threads: int | None = None,
) -> pd.DataFrame:
    """Finetune a head for `target` on the model saved in `model_dir`; write into `out_dir`:
    model.safetensors (head.*, and encoder.* when the encoder trained), config.json, log.csv and
    metrics.parquet (METRIC_COLUMNS: head_accuracy or head_r2). Returns the metrics rows.

    A model that was skipped (an unusable session) gives an empty table and weights file.
    """
    out_dir = Path(out_dir)
    saved = read_config(model_dir)
    meta = saved["metadata"]
    labels = ModelLabels.of_checkpoint(meta, setting)
    info = {"model_dir": str(model_dir), "binned": str(binned_path), "target": target, "head": dataclasses.asdict(config)}
    if "skipped" in saved:
        write_skipped(out_dir, f"no model to finetune a head on ({saved['skipped']})", info, LOG_COLUMNS)
        table = empty_table(METRIC_COLUMNS)
    else:
        session = load_model_session(model_dir, binned_path, meta.get("eids") or [meta["eid"]])
        with num_threads(threads):
            model = load_pretrained(model_dir, device=resolve_device(config.device))
            result = finetune_head(model, session, target, config, state_dir=out_dir / STATE_DIR)
        write_weights(out_dir / "model.safetensors", result.weights)
        summary = {k: getattr(result, k) for k in ("metric", "value", "chance", "best_epoch", "n_train", "n_val", "n_test")}
        write_json(out_dir / "config.json", {**info, "eid": session.eid, "model": labels.model, "result": summary})
        write_text(out_dir / "log.csv", pd.DataFrame(result.history, columns=LOG_COLUMNS).to_csv(index=False))
        prompt = DECODING_PROMPTS[target] if getattr(model.config, "use_prompt", False) else None
        row = labels.metric_row(session.eid, target, prompt, HEAD_METRICS[result.metric], result.value,
                                session.counts.shape[2], result.n_test)  # fmt: skip
        table = pd.DataFrame([row], columns=list(METRIC_COLUMNS))
        clear_state(out_dir / STATE_DIR)
    write_parquet(out_dir / "metrics.parquet", pa.Table.from_pandas(table, preserve_index=False), info)
    return table
