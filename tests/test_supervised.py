"""Supervised heads on a trained encoder: they decode, a frozen encoder stays bit-identical, a
trained one is saved, a killed run resumes to the same head, and the files and rows are right."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import torch
from conftest import wait_for_saved_epoch

from mtm.checkpoint import load_pretrained, save_skipped
from mtm.results_table import METRIC_COLUMNS
from mtm.session import load_session
from mtm.supervised import (
    HeadConfig,
    encoder_stages,
    finetune_head,
    finetune_head_checkpoint,
    unfrozen_stages,
)
from mtm.jobs import train_session
from mtm.config.training import TrainConfig

TARGETS = ("choice", "block", "wheel-speed", "whisker-motion-energy")
HEAD_IN_SUBPROCESS = (
    "import json, logging, sys; from mtm.config.heads import HeadConfig; from mtm.supervised import finetune_head_checkpoint; "
    "logging.basicConfig(level=logging.INFO); "
    "finetune_head_checkpoint(sys.argv[1], sys.argv[2], sys.argv[3], 'choice', "
    "HeadConfig(**json.loads(sys.argv[4])), setting='single', threads=1)"
)
RESUMABLE = HeadConfig(encoder="gradual", epochs=6, checkpoint_every=1, seed=3)


@pytest.fixture(scope="module")
def session(binned):
    return load_session(binned["usable"])


@pytest.fixture(scope="module")
def model_dir(binned, tmp_path_factory) -> Path:
    """An MtM model with prompts trained briefly on the demo session."""
    out = tmp_path_factory.mktemp("encoder")
    train_session(binned["usable"], out, TrainConfig(scheme="mtm-prompt", epochs=8, lr=1e-3), threads=1)
    return out


# value > chance + margin. The block prior is tonic and weakly encoded in the demo: on this
# session's 42 usable test trials no decoder (the rate decoder included) is reliably above chance,
# so block is held to chance within noise (2 standard errors of an accuracy near 0.6)
MARGINS = {
    "frozen": {"choice": 0.15, "block": -0.15, "wheel-speed": 0.03, "whisker-motion-energy": 0.1},
    "full": {"choice": 0.2, "block": -0.15, "wheel-speed": 0.1, "whisker-motion-energy": 0.1},
}


def state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.science
def test_frozen_encoder_stays_bit_identical_and_its_heads_beat_chance(model_dir, session):
    torch.set_num_threads(1)
    model = load_pretrained(model_dir)
    before = state_dict(model)
    results = {target: finetune_head(model, session, target, HeadConfig(epochs=100)) for target in TARGETS}
    after = state_dict(model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # chance: the majority class or the per-bin mean of the train+val trials, on the test trials
    for target, result in results.items():
        assert result.value > result.chance + MARGINS["frozen"][target], (target, result.value, result.chance)
    for result in results.values():
        assert 1 <= result.best_epoch <= 100 and len(result.history) == 100
        assert result.n_train > result.n_val > 0 and result.n_test > 0


@pytest.mark.science
def test_trained_encoder_heads_beat_chance(model_dir, session):
    """The encoder trained with the head (gradual unfreezing is covered by its schedule's test
    and the resume test)."""
    torch.set_num_threads(1)
    encoder = "full"
    for target in TARGETS:
        model = load_pretrained(model_dir)
        before = state_dict(model)
        result = finetune_head(model, session, target, HeadConfig(encoder=encoder, epochs=12))
        assert result.value > result.chance + MARGINS[encoder][target], (encoder, target, result.value, result.chance)
        changed = [k for k, v in state_dict(model).items() if not torch.equal(v, before[k])]
        assert any(k.startswith("blocks.0.") for k in changed), "the bottom block trained"
        assert not any(k.startswith("readout") for k in changed), "the readout is not the head's"


def test_gradual_unfreezing_releases_the_encoder_from_the_top(model_dir):
    model = load_pretrained(model_dir)
    stages = encoder_stages(model)
    n_blocks = len(model.blocks)
    assert len(stages) == n_blocks
    assert {id(p) for p in model.blocks[-1].parameters()} <= {id(p) for p in stages[0]}
    assert {id(p) for p in model.blocks[0].parameters()} <= {id(p) for p in stages[-1]}
    covered = {id(p) for stage in stages for p in stage}
    assert covered == {id(p) for name, p in model.named_parameters() if not name.startswith("readout")}
    config = HeadConfig(encoder="gradual", epochs=60)
    schedule = [unfrozen_stages(epoch, config, n_blocks) for epoch in range(60)]
    assert schedule[0] == 0 and schedule[-1] == n_blocks and schedule == sorted(schedule)
    assert set(schedule) == set(range(n_blocks + 1))  # each stage gets its share of the epochs
    assert [unfrozen_stages(e, HeadConfig(encoder="full"), n_blocks) for e in (0, 99)] == [n_blocks] * 2
    assert unfrozen_stages(199, HeadConfig(), n_blocks) == 0


def test_checkpoint_files_and_metric_rows(model_dir, binned, tmp_path):
    out = tmp_path / "head"
    table = finetune_head_checkpoint(model_dir, binned["usable"], out, "whisker-motion-energy",
                                     HeadConfig(encoder="full", epochs=3), setting="single")  # fmt: skip
    assert list(table.columns) == list(METRIC_COLUMNS) and len(table) == 1
    row = table.iloc[0]
    assert (row["model"], row["task"], row["prompt"], row["metric"]) == (
        "ndt1/mtm-prompt/single", "whisker-motion-energy", "causal", "head_r2")
    assert np.isfinite(row["value"])
    pd.testing.assert_frame_equal(pd.read_parquet(out / "metrics.parquet"), table)
    weights = safetensors.torch.load_file(str(out / "model.safetensors"))
    encoder = load_pretrained(model_dir).state_dict()
    assert {k for k in weights if k.startswith("encoder.")} == {f"encoder.{k}" for k in encoder}
    assert weights["head.weight"].shape == (100, 100 * load_pretrained(model_dir).config.hidden)
    saved = json.loads((out / "config.json").read_text())
    assert saved["result"]["value"] == pytest.approx(row["value"]) and saved["head"]["encoder"] == "full"
    assert len(pd.read_csv(out / "log.csv")) == 3 and not (out / "state").exists()
    # a frozen encoder is not saved again: the head only
    frozen = finetune_head_checkpoint(model_dir, binned["usable"], tmp_path / "frozen", "choice", HeadConfig(epochs=2),
                                      setting="single")  # fmt: skip
    assert frozen["metric"].tolist() == ["head_accuracy"]
    assert set(safetensors.torch.load_file(str(tmp_path / "frozen/model.safetensors"))) == {"head.weight", "head.bias"}


def test_a_skipped_model_gives_an_empty_table(binned, tmp_path):
    skipped = tmp_path / "skipped"
    save_skipped(skipped, "12 units, need at least 20", {"eid": "x", "training": {"scheme": "temporal"}})
    table = finetune_head_checkpoint(skipped, binned["unusable"], tmp_path / "out", "choice", HeadConfig(), setting="single")
    assert table.empty and list(table.columns) == list(METRIC_COLUMNS)
    assert pd.read_parquet(tmp_path / "out/metrics.parquet").empty
    assert "skipped" in json.loads((tmp_path / "out/config.json").read_text())


def start_head(model_dir: Path, binned: Path, out: Path, stderr: Path) -> subprocess.Popen:
    config = json.dumps({k: v for k, v in RESUMABLE.__dict__.items()})
    with stderr.open("w") as log:
        return subprocess.Popen([sys.executable, "-c", HEAD_IN_SUBPROCESS, str(model_dir), str(binned), str(out), config],
                                stderr=log)  # fmt: skip


def test_a_killed_head_resumes_to_the_same_weights(model_dir, binned, tmp_path):
    """SIGKILL after epoch 2, SIGTERM after epoch 4, then run to the end: the same head and
    encoder (dropout, batch order and Adam's moments all restored) as an uninterrupted run."""
    reference = tmp_path / "reference"
    finetune_head_checkpoint(model_dir, binned["usable"], reference, "choice", RESUMABLE, setting="single", threads=1)

    out, stderr = tmp_path / "run", tmp_path / "stderr.txt"
    proc = start_head(model_dir, binned["usable"], out, stderr)
    wait_for_saved_epoch(proc, out / "state", 2, stderr)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL and not (out / "metrics.parquet").exists()
    proc = start_head(model_dir, binned["usable"], out, stderr)
    wait_for_saved_epoch(proc, out / "state", 4, stderr)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait() == 128 + signal.SIGTERM, stderr.read_text()
    proc = start_head(model_dir, binned["usable"], out, stderr)
    assert proc.wait() == 0, stderr.read_text()
    assert "resumed after epoch" in stderr.read_text()

    a = safetensors.torch.load_file(str(out / "model.safetensors"))
    b = safetensors.torch.load_file(str(reference / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(pd.read_csv(out / "log.csv"), pd.read_csv(reference / "log.csv"))
    pd.testing.assert_frame_equal(pd.read_parquet(out / "metrics.parquet"), pd.read_parquet(reference / "metrics.parquet"))


@pytest.mark.parametrize("backbone", ["ndt1", "ndt2"])
def test_encode_gives_one_latent_per_bin_from_the_same_pass_as_the_rates(backbone):
    from mtm.models import BACKBONES

    model_cls, config_cls = BACKBONES[backbone]
    extra = {"patch_size": 8} if backbone == "ndt2" else {}
    model = model_cls(config_cls.demo({"s": 20}, **extra)).eval()
    counts = torch.poisson(torch.full((3, 100, 20), 0.5))
    latents = model.encode(counts, session="s")
    assert latents.shape == (3, 100, model.config.hidden) and latents.dtype == torch.float32
    with torch.no_grad():
        log_rates = model(counts, session="s").log_rates
    if backbone == "ndt1":  # the readout of the latents is the model's output
        assert torch.allclose(model.readout["s"](latents), log_rates, atol=1e-5)
    # the latents of bin t depend on the whole trial (the encoder attends across bins)
    changed = counts.clone()
    changed[:, -1] += 3
    assert not torch.allclose(model.encode(changed, session="s")[:, 0], latents[:, 0])


def test_the_block_head_reads_only_the_pre_stimulus_bins(model_dir, session):
    """As the rate decoders: the encoder runs on the bins before stimulus onset for `block`, on
    every bin for `block-whole-trial`; the head's input is those bins' latents. A frozen encoder
    stays bit-identical; a trained one changes from the bottom block up, never its readout
    (make test-science holds the heads above chance)."""
    model = load_pretrained(model_dir)
    hidden, n_bins = model.config.hidden, session.shape[1]
    before = state_dict(model)
    widths = {
        target: finetune_head(model, session, target, HeadConfig(epochs=1)).weights["head.weight"].shape[1]
        for target in ("block", "block-whole-trial")
    }
    assert widths == {"block": session.pre_event_bins * hidden, "block-whole-trial": n_bins * hidden}
    assert 0 < session.pre_event_bins < n_bins
    assert all(torch.equal(v, before[k]) for k, v in state_dict(model).items())
    finetune_head(model, session, "block", HeadConfig(encoder="full", epochs=1))
    changed = [k for k, v in state_dict(model).items() if not torch.equal(v, before[k])]
    assert any(k.startswith("blocks.0.") for k in changed) and not any(k.startswith("readout") for k in changed)
