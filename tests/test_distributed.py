"""Data-parallel training: two processes under torchrun (gloo, CPU) equal one process with
gradient accumulation over the same batches."""

import pandas as pd
import safetensors.torch
import torch

from mtm.jobs import run_training_job, train_session
from mtm.config.training import TrainConfig

CONFIG = dict(scheme="mtm-prompt", epochs=2, batch_size=8, lr=1e-3, dropout=0.0)


def test_two_processes_equal_one_with_accumulation(binned, tmp_path):
    # dropout draws differ between processes, so it is off for an exact comparison
    one = tmp_path / "one"
    train_session(binned["usable"], one, TrainConfig(**CONFIG, accumulation=2), threads=1)

    two = tmp_path / "two"
    run_training_job("train_session", [str(binned["usable"]), str(two)], TrainConfig(**CONFIG), gpus=2, threads=1)

    a = safetensors.torch.load_file(str(one / "model.safetensors"))
    b = safetensors.torch.load_file(str(two / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=2e-5, rtol=1e-4, msg=name)
    log_one, log_two = pd.read_csv(one / "log.csv"), pd.read_csv(two / "log.csv")
    for column in ("train_loss", "val_loss"):
        torch.testing.assert_close(torch.tensor(log_one[column]), torch.tensor(log_two[column]), atol=1e-5, rtol=1e-5)
    assert not (two / "state").exists()
