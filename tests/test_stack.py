"""Stacked training (mtm.stack) against training each model alone: same outputs, same layout."""

import dataclasses
import re
import shutil

import pandas as pd
import pytest
import safetensors.torch
import torch

from mtm.checkpoint import read_config
from mtm.data import SessionTensors
from mtm.session import load_session
from mtm.stack import stack_groups, train_stack
from mtm.train import train
from mtm.config.training import TrainConfig

# a mix the stack must handle: causal and non-causal attention in one stack, MtM's per-batch
# schemes, a prompted model (its own stack), and dropout (drawn once, shared)
BASE = TrainConfig(scheme="temporal", epochs=2, lr=1e-3, seed=5, batch_size=32, dropout=0.2)
SCHEMES = ("temporal", "causal", "mtm", "mtm-prompt")
# the K models' matmuls run as one batched matmul, whose summation order is not the single
# matmul's: equal to float tolerance, not bit for bit (two epochs of AdamW at lr 1e-3)
TOLERANCE = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def data(binned) -> SessionTensors:
    """The demo session with 64 train and 32 val trials: two batches an epoch."""
    full = SessionTensors.from_session(load_session(binned["usable"]))
    return dataclasses.replace(full, splits={"train": full.splits["train"][:64], "val": full.splits["val"][:32]})


# NDT2 of demo size costs five times NDT1 per step on the CPU: fewer schemes, one epoch
STACKS = {"ndt1": (SCHEMES, 2), "ndt2": (("random-token", "causal"), 1)}


@pytest.fixture(scope="module", params=list(STACKS))
def runs(request, data, tmp_path_factory):
    """(configs, folders trained alone, folders trained stacked) for one backbone."""
    schemes, epochs = STACKS[request.param]
    configs = [dataclasses.replace(BASE, scheme=s, backbone=request.param, epochs=epochs) for s in schemes]
    alone = tmp_path_factory.mktemp(f"alone-{request.param}")
    stacked = tmp_path_factory.mktemp(f"stacked-{request.param}")
    for config in configs:
        train(data, config, alone / config.scheme, threads=1)
    train_stack(data, configs, [stacked / c.scheme for c in configs], threads=1)
    return configs, alone, stacked


def test_stacks_are_configs_equal_but_for_the_scheme_and_of_one_shape():
    configs = [dataclasses.replace(BASE, scheme=s) for s in SCHEMES]
    assert stack_groups(configs) == [[0, 1, 2], [3]]
    configs.append(dataclasses.replace(BASE, scheme="neuron", seed=6))
    assert stack_groups(configs) == [[0, 1, 2], [3], [4]]


def test_stacked_models_equal_models_trained_alone(runs):
    configs, alone, stacked = runs
    for config in configs:
        a = safetensors.torch.load_file(str(alone / config.scheme / "model.safetensors"))
        b = safetensors.torch.load_file(str(stacked / config.scheme / "model.safetensors"))
        assert a.keys() == b.keys()
        for name in a:
            torch.testing.assert_close(b[name], a[name], **TOLERANCE, msg=f"{config.scheme}: {name}")
        log_a = pd.read_csv(alone / config.scheme / "log.csv")
        log_b = pd.read_csv(stacked / config.scheme / "log.csv")
        assert list(log_a.columns) == list(log_b.columns)
        columns = [c for c in log_a.columns if c != "seconds"]
        pd.testing.assert_frame_equal(log_b[columns], log_a[columns], rtol=1e-4)
        assert read_config(stacked / config.scheme)["metadata"]["best_epoch"] == read_config(alone / config.scheme)["metadata"]["best_epoch"]


def test_stacked_outputs_have_the_layout_of_separate_runs(runs):
    configs, alone, stacked = runs
    for config in configs:
        assert sorted(p.name for p in (stacked / config.scheme).iterdir()) == sorted(
            p.name for p in (alone / config.scheme).iterdir()
        )
    stacked_config = read_config(stacked / "causal")["metadata"]
    unprompted = [c.scheme for c in configs if not c.use_prompt]  # a prompted model is a stack of its own
    assert stacked_config["stacked_with"] == unprompted and stacked_config["training"]["scheme"] == "causal"


def test_runs_resumed_from_different_epochs_train_alone_and_end_as_stacked(data, tmp_path, monkeypatch):
    """One model's job was killed after its last epoch, before its outputs (its state is at
    epoch 2); the other has not started: the stack trains them one after the other."""
    import mtm.train

    configs = [dataclasses.replace(BASE, scheme=s, epochs=2) for s in ("temporal", "neuron")]
    train_stack(data, configs, [tmp_path / "stacked" / c.scheme for c in configs], threads=1)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(mtm.train, "finish", killed)
        with pytest.raises(KeyboardInterrupt):
            train(data, configs[0], tmp_path / "resumed" / "temporal", threads=1)
    assert (tmp_path / "resumed" / "temporal" / "state").is_dir()
    train_stack(data, configs, [tmp_path / "resumed" / c.scheme for c in configs], threads=1)
    for config in configs:
        a = safetensors.torch.load_file(str(tmp_path / "stacked" / config.scheme / "model.safetensors"))
        b = safetensors.torch.load_file(str(tmp_path / "resumed" / config.scheme / "model.safetensors"))
        for name in a:
            torch.testing.assert_close(b[name], a[name], **TOLERANCE)
        assert "stacked_with" not in read_config(tmp_path / "resumed" / config.scheme)["metadata"]


def test_the_workflow_trains_a_sessions_models_in_one_stack_job_and_reruns_one(tmp_path):
    """training.stack: scheme on the tiny config: one job per (backbone, session, seed) writes
    every scheme's folder; a model deleted is made again, the same."""
    from test_workflow import copy_workflow, snakemake

    wd = copy_workflow(tmp_path)
    eid = "d57df551-6dcb-4242-9c72-b806cff5613a"
    stack = ["--config", "training={stack: scheme, schemes: {ndt1: [temporal, neuron], ndt2: [mtm-prompt]}}"]
    targets = [f"results/models/ndt1/{s}/single/{eid}/seed-0/config.json" for s in ("temporal", "neuron")]
    result = snakemake(wd, *targets, *stack, "--quiet", "rules")
    assert re.search(r"train_stack_ndt1\s+1\b", result.stderr) and "train_single" not in result.stderr, result.stderr
    for scheme in ("temporal", "neuron"):
        folder = wd / f"results/models/ndt1/{scheme}/single/{eid}/seed-0"
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "log.csv", "model.safetensors"]
    stacked = wd / f"results/models/ndt1/neuron/single/{eid}/seed-0"
    first = safetensors.torch.load_file(str(stacked / "model.safetensors"))
    shutil.rmtree(stacked)
    snakemake(wd, *targets, *stack)
    again = safetensors.torch.load_file(str(stacked / "model.safetensors"))
    assert all(torch.equal(first[name], again[name]) for name in first)  # the CPU is deterministic
