"""How to score a model (`EvalConfig`) and the GLM baseline (`GlmConfig`); defaults: the config
schema's `evaluation` and `glm` sections."""

from __future__ import annotations

from dataclasses import dataclass, field

from mtm.config.schema import from_schema
from mtm.vocabulary import (
    DECODER_PROTOCOLS,
    DECODING_ATTENTION,
    DECODING_PROMPTS,
    DECODING_TARGETS,
    FORWARD_ATTENTION,
    TASKS,
)


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """How to score a model; defaults: the config schema's `evaluation` section.
    tasks: activity tasks (vocabulary.TASKS); decoding: behaviour targets (vocabulary.DECODING_TARGETS)
    max_units: score a seeded subset of this many units per session (the same for every model);
        None scores every unit
    batch_size: samples per forward pass; forward_bins: bins hidden for forward prediction
    precision: "fp32" or "bf16" (autocast); device: "auto" (CUDA if available) or a device string
    seed: draws the unit subset and the decoders' cross-validation folds
    decoding_prompts: behaviour target -> the MtM scheme whose prompt makes its features
    prompt_ablation: for a prompted model, also score every task and target under every prompt
    forward_attention: "causal" (every model) or "as-trained" (the authors': causal only for
        models trained with causal attention; heldout.forward_causal)
    decoding_attention: the attention of the decoders' features, "bidirectional" (every target)
        or "as-prompted" (the authors': causal for targets decoded under the causal prompt,
        e.g. whisker motion energy, for every model)
    decoders: the decoders' fitting protocol, "ours" or "authors" (mtm.decoding)
    """

    tasks: tuple[str, ...] = from_schema("evaluation", "tasks")
    decoding: tuple[str, ...] = from_schema("evaluation", "decoding")
    max_units: int | None = from_schema("evaluation", "max_units")
    batch_size: int = from_schema("evaluation", "batch_size")
    forward_bins: int = from_schema("evaluation", "forward_bins")
    precision: str = from_schema("evaluation", "precision")
    device: str = "auto"
    seed: int = from_schema("evaluation", "seed")
    decoding_prompts: dict[str, str] = field(default_factory=lambda: dict(DECODING_PROMPTS))
    prompt_ablation: bool = False
    forward_attention: str = from_schema("evaluation", "forward_attention")
    decoding_attention: str = from_schema("evaluation", "decoding_attention")
    decoders: str = from_schema("evaluation", "decoders")

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))  # lists from a config file
        object.__setattr__(self, "decoding", tuple(self.decoding))
        unknown = (set(self.tasks) - set(TASKS)) | (set(self.decoding) - set(DECODING_TARGETS))
        if unknown:
            raise ValueError(f"EvalConfig: unknown tasks {sorted(unknown)}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"EvalConfig.precision must be fp32 or bf16, not {self.precision!r}")
        if self.max_units is not None and self.max_units < 1:
            raise ValueError("EvalConfig.max_units must be positive or None")
        choices = {"forward_attention": FORWARD_ATTENTION, "decoding_attention": DECODING_ATTENTION,
                   "decoders": DECODER_PROTOCOLS}  # fmt: skip
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"EvalConfig.{name} must be one of {allowed}, not {getattr(self, name)!r}")


@dataclass(frozen=True, kw_only=True)
class GlmConfig:
    """kernel_sds: Gaussian smoothing widths tried (s); alphas: L2 penalties tried (per unit);
    max_iter: L-BFGS iterations per fit."""

    kernel_sds: tuple[float, ...] = from_schema("glm", "kernel_sds")
    alphas: tuple[float, ...] = from_schema("glm", "alphas")
    max_iter: int = 50

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernel_sds", tuple(float(k) for k in self.kernel_sds))
        object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))
        if not self.kernel_sds or min(self.kernel_sds) <= 0 or not self.alphas or min(self.alphas) < 0:
            raise ValueError(f"GlmConfig: need positive kernel widths and non-negative penalties: {self}")
