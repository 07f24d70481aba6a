"""How to train one model: `TrainConfig`, its defaults the config schema's (`training`, and
`multisession` for the multi-session fields)."""

from __future__ import annotations

from dataclasses import dataclass

from mtm.config.schema import from_schema
from mtm.vocabulary import (
    BACKBONES,
    LOSSES,
    LR_SCHEDULES,
    MODEL_SIZES,
    MTM_SCHEMES,
    PRECISIONS,
    REGION_LEVELS,
    SELECTIONS,
    SESSION_SAMPLING,
    TRAIN_SCHEMES,
    TRAINABLE,
)

# the most of a run's time that writing its resumable state may take (mtm.resumable saves it
# after an epoch only when due; mtm.cost counts the same)
STATE_SAVE_SHARE = 0.05


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train one model. Defaults: the config schema's (mtm.config), where the config has the key.

    scheme: one of vocabulary.TRAIN_SCHEMES: a masking scheme, or "mtm" (one scheme of MTM_SCHEMES drawn per
        batch) or "mtm-prompt" (the same, with the drawn scheme's prompt token)
    backbone: "ndt1" or "ndt2" (mtm.models.BACKBONES); model: its size, "demo" or "paper"
    patch_size: NDT2's units per token; None keeps the size preset's (NDT1: must be None)
    region_level: units' regions for region masking
    epochs: the most epochs a run takes (with `patience`, a cap; without, the run's length)
    patience: converged = no lower validation loss in `patience` epochs in a row (with
        "plateau": at the lowest learning rate); None trains for `epochs` (the authors' protocol)
    lr_schedule, per batch:
        "one-cycle"  cosine one-cycle over `epochs` (the authors'): from lr / 10 up to `lr` in
                     the first `warmup_fraction` of the steps, then down towards 0
        "plateau"    linear warm-up from lr / 10 to `lr` over the first `warmup_fraction` x
                     `epochs` epochs, then constant; each stall of `patience` epochs cuts the
                     rate by mtm.train.PLATEAU_FACTOR, PLATEAU_CUTS times, and the next stall ends
                     the run (needs `patience`)
    batch_size in trials; lr: the peak learning rate
    precision: "auto" (bf16 autocast on CUDA, fp32 on the CPU; mtm.device), "fp32" or "bf16"
    device: "auto" (CUDA if available), or a torch device string
    loss: the training loss over scored entries, "mean" or "sum"
    selection: which epoch's weights are kept, "val-loss" or "psth-r2" (mtm.train's docstring)
    single_session_token: a model of one session has a session token (a learned context
        token, as every multi-session model has); False: none, as the authors' single-session models
    causal_context_sees_bins: NDT1's context tokens attend to every bin under causal attention,
        a leak of the future in the authors' code (mtm.models.ndt1); only to reproduce their models
    session_sampling: with several sessions, "proportional" (to training trials) or "balanced"
    trainable: when finetuning, "all" weights or only the new sessions' layers ("session")
    accumulation: micro-batches per batch and process (gradient accumulation); under torchrun a
        batch is shared by all processes, so each takes batch_size / (processes x accumulation)
    dropout: every dropout probability of the model; None keeps the size preset's
    """

    scheme: str
    backbone: str = "ndt1"
    model: str = from_schema("training", "model")
    patch_size: int | None = from_schema("training", "patch_size")
    region_level: str = from_schema("training", "region_level")
    epochs: int = from_schema("training", "epochs")
    patience: int | None = from_schema("training", "patience")
    lr_schedule: str = from_schema("training", "lr_schedule")
    batch_size: int = from_schema("training", "batch_size")
    lr: float = from_schema("training", "lr")
    weight_decay: float = from_schema("training", "weight_decay")
    warmup_fraction: float = from_schema("training", "warmup_fraction")
    seed: int = 0
    precision: str = from_schema("training", "precision")
    device: str = "auto"
    loss: str = from_schema("training", "loss")
    selection: str = from_schema("training", "selection")
    single_session_token: bool = from_schema("training", "single_session_token")
    causal_context_sees_bins: bool = from_schema("training", "causal_context_sees_bins")
    session_sampling: str = from_schema("multisession", "session_sampling")
    trainable: str = from_schema("multisession", "trainable")
    accumulation: int = from_schema("training", "accumulation")
    dropout: float | None = None

    def __post_init__(self) -> None:
        choices = dict(
            scheme=TRAIN_SCHEMES,
            backbone=BACKBONES,
            model=MODEL_SIZES,
            region_level=REGION_LEVELS,
            precision=PRECISIONS,
            loss=LOSSES,
            session_sampling=SESSION_SAMPLING,
            trainable=TRAINABLE,
            lr_schedule=LR_SCHEDULES,
            selection=SELECTIONS,
        )
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrainConfig.{name} must be one of {allowed}, not {getattr(self, name)!r}")
        if self.patch_size is not None and (self.backbone != "ndt2" or self.patch_size < 1):
            raise ValueError(f"TrainConfig: patch_size is NDT2's, >= 1; got {self.patch_size} for {self.backbone}")
        if self.accumulation < 1 or not (self.dropout is None or 0 <= self.dropout < 1):
            raise ValueError(f"TrainConfig: need accumulation >= 1 and dropout None or in [0, 1): {self}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr < 0 or not 0 < self.warmup_fraction < 1:
            raise ValueError(
                f"TrainConfig: need epochs >= 1, batch_size >= 1, lr >= 0, 0 < warmup_fraction < 1: {self}"
            )
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"TrainConfig: patience must be None or >= 1, got {self.patience}")
        if self.causal_context_sees_bins and self.backbone != "ndt1":
            raise ValueError("TrainConfig: causal_context_sees_bins is NDT1's (the authors' causal attention)")
        if self.lr_schedule == "plateau" and self.patience is None:
            raise ValueError("TrainConfig: lr_schedule 'plateau' cuts the rate after `patience` epochs; set patience")

    @property
    def schemes(self) -> tuple[str, ...]:
        """The masking schemes of the schedule."""
        return MTM_SCHEMES if self.scheme in ("mtm", "mtm-prompt") else (self.scheme,)

    @property
    def use_prompt(self) -> bool:
        return self.scheme == "mtm-prompt"
