"""Training to convergence: the patience criterion, the plateau schedule, what a run records."""

import json
import signal

import pandas as pd
import pytest
import torch
from conftest import wait_for_saved_epoch
from test_train import assert_same_weights, start_training

from mtm.data import SessionTensors
from mtm.schedules import PlateauSchedule
from mtm.session import load_session
from mtm.jobs import train_session
from mtm.train import PLATEAU_CUTS, train
from mtm.config.training import TrainConfig


@pytest.fixture(scope="module")
def data(binned) -> SessionTensors:
    return SessionTensors.from_session(load_session(binned["usable"]))


def test_plateau_schedule_warms_up_cuts_and_resumes():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = PlateauSchedule(optimizer, lr=2.0, warmup_steps=4, factor=0.5, max_cuts=2)
    lrs = [schedule.get_last_lr()[0]]
    for _ in range(5):
        schedule.step()
        lrs.append(schedule.get_last_lr()[0])
    assert lrs == pytest.approx([0.2, 0.65, 1.1, 1.55, 2.0, 2.0])
    assert schedule.cut() and schedule.get_last_lr()[0] == pytest.approx(1.0)
    state = schedule.state_dict()
    assert schedule.cut() and not schedule.cut() and schedule.get_last_lr()[0] == pytest.approx(0.5)
    again = PlateauSchedule(optimizer, lr=2.0, warmup_steps=4, factor=0.5, max_cuts=2)
    again.load_state_dict(state)
    assert again.get_last_lr()[0] == pytest.approx(1.0) and again.steps == 5


def test_a_run_that_stops_learning_converges_after_patience_epochs(data, tmp_path):
    """lr 0: the validation loss never moves after the first epoch, so the run is converged
    after `patience` more epochs, far below its cap, and says so."""
    result = train(data, TrainConfig(scheme="temporal", epochs=50, patience=3, lr=0.0), tmp_path, threads=1)
    assert len(result.history) == 1 + 3 and result.best_epoch == 1
    meta = json.loads((tmp_path / "config.json").read_text())["metadata"]
    assert meta["converged"] and meta["epochs_run"] == 4 and meta["stop_reason"].startswith("converged")
    assert len(pd.read_csv(tmp_path / "log.csv")) == 4


def test_plateau_cuts_the_rate_before_it_stops(data, tmp_path):
    config = TrainConfig(scheme="temporal", epochs=50, patience=2, lr=0.0, lr_schedule="plateau")
    result = train(data, config, tmp_path, threads=1)
    assert len(result.history) == 1 + 2 * (PLATEAU_CUTS + 1)


def test_without_patience_a_run_takes_every_epoch_and_says_it_hit_the_cap(data, tmp_path):
    result = train(data, TrainConfig(scheme="temporal", epochs=3, lr=0.0), tmp_path, threads=1)
    meta = json.loads((tmp_path / "config.json").read_text())["metadata"]
    assert len(result.history) == 3 and not meta["converged"] and meta["stop_reason"] == "epoch cap (3)"


def test_the_plateau_schedule_needs_patience():
    with pytest.raises(ValueError, match="patience"):
        TrainConfig(scheme="temporal", lr_schedule="plateau")
    with pytest.raises(ValueError, match="patience"):
        TrainConfig(scheme="temporal", patience=0)


def test_a_killed_plateau_run_resumes_its_schedule_bit_identical(binned, tmp_path):
    """Patience 1: the rate is cut after most epochs, so a resumed run must restore the cuts,
    the stall count and the warm-up position to end where an uninterrupted run ends."""
    config = TrainConfig(scheme="mtm-prompt", epochs=8, patience=1, lr_schedule="plateau", lr=1e-3, seed=7)
    reference = train(SessionTensors.from_session(load_session(binned["usable"])), config, tmp_path / "ref", threads=1)
    out, stderr = tmp_path / "run", tmp_path / "stderr.txt"
    proc = start_training(binned["usable"], out, config, stderr)
    wait_for_saved_epoch(proc, out / "state", 2, stderr)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    result = train_session(binned["usable"], out, config, threads=1)
    assert_same_weights(out / "model.safetensors", tmp_path / "ref" / "model.safetensors")
    assert [row["lr"] for row in result.history] == [row["lr"] for row in reference.history]
    assert len(result.history) == len(reference.history)
