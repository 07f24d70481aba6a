"""How to train a supervised head (`HeadConfig`, mtm.supervised); defaults: the config schema's
`supervised` section."""

from __future__ import annotations

from dataclasses import dataclass

from mtm.config.schema import from_schema
from mtm.vocabulary import DECODING_TARGETS, ENCODER_MODES


@dataclass(frozen=True, kw_only=True)
class HeadConfig:
    """Defaults: the config schema's `supervised` section (mtm.config).
    encoder: frozen | full | gradual (module docstring); epochs, batch_size: of the head's training
    lr: the head's AdamW learning rate; encoder_lr: the encoder's, when it trains
    weight_decay: per target (the head's); the encoder's is encoder_weight_decay
    seed: the trial order of the batches and the encoder's dropout (with eid and target); the head
        starts at zero
    checkpoint_every: epochs between saved states; device: "auto" (CUDA if available) or a device
    """

    encoder: str = from_schema("supervised", "encoder")
    epochs: int = from_schema("supervised", "epochs")
    batch_size: int = from_schema("supervised", "batch_size")
    lr: float = from_schema("supervised", "lr")
    encoder_lr: float = from_schema("supervised", "encoder_lr")
    weight_decay: dict[str, float] = from_schema("supervised", "weight_decay")
    encoder_weight_decay: float = 0.01
    seed: int = 0
    checkpoint_every: int = 10
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.encoder not in ENCODER_MODES:
            raise ValueError(f"HeadConfig.encoder must be one of {ENCODER_MODES}, not {self.encoder!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("HeadConfig: epochs, batch_size and checkpoint_every must be positive")
        missing = set(DECODING_TARGETS) - set(self.weight_decay)
        if missing:
            raise ValueError(f"HeadConfig.weight_decay gives no value for {sorted(missing)}")
