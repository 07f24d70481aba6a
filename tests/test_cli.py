"""The `mtm` command: finetune a pretrained model on a new session, outside the workflow."""

import subprocess
import sys
from pathlib import Path

import pandas as pd

from mtm.checkpoint import load_pretrained, read_config
from mtm.session import load_session
from mtm.jobs import pretrain_sessions
from mtm.config.training import TrainConfig


def test_mtm_finetune_takes_a_pretrained_model_to_a_new_session(four_sessions, tmp_path):
    pretrain_sessions(four_sessions[:2], tmp_path / "pre", TrainConfig(scheme="mtm-prompt", epochs=1, lr=1e-3))
    command = Path(sys.executable).with_name("mtm")  # the console script of the installed package
    out = tmp_path / "fine"
    result = subprocess.run(
        [str(command), "finetune", "--checkpoint", str(tmp_path / "pre"), "--session", str(four_sessions[3]),
         "--out", str(out), "--epochs", "2", "--max-units", "8", "--threads", "1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    eid = load_session(four_sessions[3]).eid
    model = load_pretrained(out)
    assert eid in model.config.sessions and model.config.use_prompt
    saved = read_config(out)["metadata"]
    assert saved["training"]["scheme"] == "mtm-prompt" and saved["training"]["epochs"] == 2
    assert len(pd.read_csv(out / "log.csv")) == 2
    metrics = pd.read_parquet(out / "eval/metrics.parquet")
    assert set(metrics["setting"]) == {"finetuned"} and (metrics[metrics["metric"] == "bps"]["n_units"] == 8).all()
    for task in ("co-smoothing", "forward-prediction", "intra-region", "inter-region", "choice"):
        assert task in result.stdout  # the printed summary


def test_mtm_finetune_explains_a_bad_checkpoint(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mtm.cli", "finetune", "--checkpoint", str(tmp_path), "--session", "x", "--out", "y"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0 and "no config.json there" in result.stderr and "Traceback" not in result.stderr
