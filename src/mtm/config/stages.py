"""The typed config of each stage, built from a validated workflow config (`validate_config`).

    one_config(config)                                      -> sessions.OneConfig
    qc_config(config)                                       -> sessions.QcConfig
    binning_config(config)                                  -> sessions.BinningConfig
    train_config(config, stage=, backbone=, scheme=, seed=) -> training.TrainConfig
    eval_config(config, setting=)                           -> evaluation.EvalConfig
    glm_scoring(config)                                     -> evaluation.EvalConfig (the GLM's)
    glm_config(config)                                      -> evaluation.GlmConfig
    head_config(config, seed=)                              -> heads.HeadConfig

These modules of mtm.config import neither torch nor the stages that use them, so the workflow
builds its params at parse time in a fraction of a second.

A field takes the value of the config key of the same name in the stage's section; the keys
that are not fields (resources, the lists that expand the workflow) stay in the workflow. The
Snakemake rules pass `as_params(...)` of these to their jobs: plain data, so a changed value
reruns the job, which rebuilds the dataclass (`Dataclass(**params)`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mtm.config.evaluation import EvalConfig, GlmConfig
from mtm.config.heads import HeadConfig
from mtm.config.sessions import CREDENTIALS, BinningConfig, OneConfig, QcConfig
from mtm.config.training import TrainConfig

STAGES = ("single", "pretrain", "finetune")


def as_params(stage_config: Any) -> dict[str, Any]:
    """A stage config as a rule's params (a dict of plain values)."""
    return dataclasses.asdict(stage_config)


def _same_names(cls: type, section: dict[str, Any], *, leave: tuple[str, ...] = ()) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)} - set(leave)
    return {key: value for key, value in section.items() if key in names}


def one_config(config: dict[str, Any]) -> OneConfig:
    """Fetching, credentials included: for the fetch job itself, never for params (`one_params`)."""
    return OneConfig(**config["one"])


def one_params(config: dict[str, Any]) -> dict[str, Any]:
    """The fetch rule's params: the `one` section without the credentials (params are stored in
    .snakemake/metadata)."""
    return {key: value for key, value in as_params(one_config(config)).items() if key not in CREDENTIALS}


def qc_config(config: dict[str, Any]) -> QcConfig:
    units, trials = config["units"], config["trials"]
    return QcConfig(
        unit_rule=units["rule"], min_firing_rate_hz=units["min_firing_rate_hz"], min_units=units["min_units"],
        **_same_names(QcConfig, trials), align_event=config["binning"]["align_event"],
    )  # fmt: skip


def binning_config(config: dict[str, Any]) -> BinningConfig:
    binning, splits = config["binning"], config["splits"]
    return BinningConfig(**binning, split_seed=splits["seed"], split_fractions=splits["fractions"])


def train_config(config: dict[str, Any], *, stage: str, backbone: str, scheme: str, seed: int) -> TrainConfig:
    """Training of `backbone` with `scheme` and `seed` at `stage`: "single" (one session alone;
    the `training` section), "pretrain" or "finetune" (the same, with `multisession`'s epochs,
    trainable weights and session sampling). patch_size is NDT2's alone."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
    fields = _same_names(TrainConfig, config["training"], leave=() if backbone == "ndt2" else ("patch_size",))
    if stage != "single":
        multi = config["multisession"]
        fields |= {
            "epochs": multi["epochs"] if stage == "pretrain" else multi["finetune_epochs"],
            "trainable": multi["trainable"] if stage == "finetune" else "all",
            "session_sampling": multi["session_sampling"],
        }
    return TrainConfig(scheme=scheme, backbone=backbone, seed=int(seed), **fields)


def eval_config(config: dict[str, Any], *, setting: str) -> EvalConfig:
    """Evaluation of a model of `setting` ("single", "pretrain-<n>"): the `evaluation` section;
    the prompt ablation where `prompt_ablation` asks for it (all models, or the finetuned ones)."""
    evaluation = config["evaluation"]
    ablation = evaluation["prompt_ablation"]
    return EvalConfig(
        **_same_names(EvalConfig, evaluation, leave=("prompt_ablation",)),
        prompt_ablation=ablation == "all" or (ablation == "finetuned" and setting != "single"),
    )


def glm_scoring(config: dict[str, Any]) -> EvalConfig:
    """How the GLM baseline is scored: the tasks, units and seed of `evaluation` (the others do
    not apply to it, and changing them does not rerun it)."""
    evaluation = config["evaluation"]
    return EvalConfig(tasks=evaluation["tasks"], max_units=evaluation["max_units"], seed=evaluation["seed"])


def glm_config(config: dict[str, Any]) -> GlmConfig:
    """The GLM baseline's fits: the `glm` section."""
    return GlmConfig(**_same_names(GlmConfig, config["glm"]))


def head_config(config: dict[str, Any], *, seed: int) -> HeadConfig:
    """A supervised head (the `supervised` section), trained with `seed`."""
    return HeadConfig(**_same_names(HeadConfig, config["supervised"]), seed=int(seed))
