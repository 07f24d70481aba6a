"""One config route (mtm.config): the schema's defaults are the dataclasses' defaults, and each
stage's typed config is built from a validated config, without Snakemake."""

import dataclasses

import pytest

from mtm.config import stages
from mtm.config.checks import ConfigError
from mtm.config.evaluation import EvalConfig, GlmConfig
from mtm.config.heads import HeadConfig
from mtm.config.schema import schema_default
from mtm.config.validate import validate_config
from mtm.config.sessions import BinningConfig, OneConfig, QcConfig
from mtm.config.training import TrainConfig


def test_a_validated_empty_config_builds_the_dataclasses_defaults():
    """Defaults live in the schema alone: a config of nothing gives each stage the dataclass's own
    defaults (the fields the config does not set, e.g. the device, are the code's)."""
    config = validate_config({})
    assert stages.one_config(config) == OneConfig()
    assert stages.qc_config(config) == QcConfig()
    assert stages.binning_config(config) == BinningConfig()
    assert stages.head_config(config, seed=0) == HeadConfig()
    assert stages.eval_config(config, setting="single") == EvalConfig()
    assert stages.glm_config(config) == GlmConfig()
    assert stages.glm_scoring(config) == EvalConfig()
    built = stages.train_config(config, stage="single", backbone="ndt1", scheme="temporal", seed=0)
    assert built == TrainConfig(scheme="temporal")
    assert (TrainConfig(scheme="mtm").epochs, TrainConfig(scheme="mtm").lr) == (
        schema_default("training", "epochs"), schema_default("training", "lr"))


def test_each_stage_reads_its_section():
    config = validate_config({
        "training": {"epochs": 7, "lr": 3e-3, "patch_size": 8, "threads": 4},
        "multisession": {"epochs": 11, "finetune_epochs": 5, "trainable": "session", "session_sampling": "balanced"},
        "evaluation": {"prompt_ablation": "finetuned", "max_units": 9},
        "supervised": {"epochs": 3},
        "units": {"min_units": 3}, "binning": {"bin_size": 0.05}, "splits": {"seed": 1},
    })  # fmt: skip
    single = stages.train_config(config, stage="single", backbone="ndt1", scheme="temporal", seed="2")
    assert (single.epochs, single.lr, single.patch_size, single.seed, single.trainable) == (7, 3e-3, None, 2, "all")
    assert stages.train_config(config, stage="single", backbone="ndt2", scheme="temporal", seed=0).patch_size == 8
    pretrain = stages.train_config(config, stage="pretrain", backbone="ndt1", scheme="mtm", seed=0)
    assert (pretrain.epochs, pretrain.trainable, pretrain.session_sampling) == (11, "all", "balanced")
    finetune = stages.train_config(config, stage="finetune", backbone="ndt1", scheme="mtm", seed=0)
    assert (finetune.epochs, finetune.trainable, finetune.lr) == (5, "session", 3e-3)
    assert not stages.eval_config(config, setting="single").prompt_ablation
    assert stages.eval_config(config, setting="pretrain-2").prompt_ablation
    assert stages.eval_config(config, setting="single").max_units == 9
    assert stages.head_config(config, seed="1") == HeadConfig(epochs=3, seed=1)
    assert stages.qc_config(config).min_units == 3
    assert (stages.binning_config(config).bin_size, stages.binning_config(config).split_seed) == (0.05, 1)
    # params are plain data that rebuild the same config
    assert TrainConfig(**stages.as_params(finetune)) == finetune
    assert EvalConfig(**stages.as_params(stages.eval_config(config, setting="single"))) == stages.eval_config(config, setting="single")
    with pytest.raises(ValueError, match="stage must be one of"):
        stages.train_config(config, stage="other", backbone="ndt1", scheme="mtm", seed=0)


def test_a_bad_config_names_its_key():
    with pytest.raises(ConfigError, match=r"config: training: .*'epoch' was unexpected"):
        validate_config({"training": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"config: evaluation.forward_attention: 'causally' is not one of"):
        validate_config({"evaluation": {"forward_attention": "causally"}})
    with pytest.raises(ConfigError, match="binning.window"):
        validate_config({"binning": {"window": [1.0, -1.0]}})


def test_every_schema_key_reaches_a_stage_or_the_workflow():
    """A key of a stage's section is either a field of its dataclass or one the workflow reads
    itself (the lists that expand it, the resources): none is silently dropped."""
    workflow_keys = {"backbones", "schemes", "sessions", "seeds", "gpus", "threads", "mem_mb", "runtime", "stack",
                     "prompt_ablation", "settings", "targets", "enabled"}  # fmt: skip
    sections = {"training": TrainConfig, "evaluation": EvalConfig, "supervised": HeadConfig, "glm": GlmConfig}
    for section, cls in sections.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        keys = set(validate_config({})[section])
        assert keys - fields <= workflow_keys, (section, keys - fields - workflow_keys)


def test_credentials_stay_out_of_params_and_come_from_the_environment(monkeypatch):
    config = validate_config({"one": {"mode": "remote", "username": "me", "password": "s3cret", "retries": 2}})
    params = stages.one_params(config)
    assert "s3cret" not in str(params) and not {"username", "password", "token"} & set(params)
    assert params["retries"] == 2 and params["mode"] == "remote"
    one = stages.one_config(config)
    assert (one.username, one.password) == ("me", "s3cret") and "s3cret" not in repr(one)
    monkeypatch.setenv("ALYX_TOKEN", "t0ken")
    assert one.with_credentials().token == "t0ken" and one.with_credentials().password == "s3cret"
