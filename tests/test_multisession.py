"""Pretraining on several sessions and finetuning on an unseen one."""

import dataclasses

import pytest
import torch
from test_claims import demo_recipe

from mtm.checkpoint import load_pretrained
from mtm.data import SessionTensors
from mtm.evaluate import evaluate_model
from mtm.config.evaluation import EvalConfig
from mtm.session import load_session
from mtm.jobs import finetune_session, pretrain_sessions
from mtm.results_table import ModelLabels
from mtm.train import TrainingRun, train
from mtm.config.training import TrainConfig

# Forward prediction causal for these neuron-masked models, which met neither causal attention nor
# hidden bins in training: as-trained (bidirectional, the last bins zeroed) scored the finetuned one
# 0.035 against 0.053 alone, causal 0.052 against 0.053 (the numbers below).
SCORE = EvalConfig(tasks=("co-smoothing", "forward-prediction", "inter-region"), decoding=(), max_units=32,
                   forward_attention="causal")  # fmt: skip
LABELS = ModelLabels(backbone="ndt1", scheme="neuron", setting="test")


@pytest.fixture(scope="module")
def tensors(four_sessions):
    return [SessionTensors.from_session(load_session(path)) for path in four_sessions]


def test_every_batch_comes_from_one_session_in_proportion(tensors):
    sessions = [tensors[0], SessionTensors(**{**tensors[1].__dict__, "splits": {
        **tensors[1].splits, "train": tensors[1].splits["train"][:40]}})]  # fmt: skip
    config = TrainConfig(scheme="neuron", batch_size=16)
    run = TrainingRun(sessions, config, torch.device("cpu"), None)
    batches = run.epoch_batches(torch.Generator().manual_seed(0))
    per_session = {data.eid: 0 for data in sessions}
    for data, trials in batches:
        assert set(trials.tolist()) <= set(data.splits["train"].tolist())
        per_session[data.eid] += 1
    assert list(per_session.values()) == [data.n_batches("train", batch_size=16) for data in sessions]
    assert [d.eid for d, _ in batches] != sorted(d.eid for d, _ in batches)  # interleaved, not blocked
    balanced = TrainingRun(sessions, TrainConfig(scheme="neuron", batch_size=16, session_sampling="balanced"), torch.device("cpu"), None)
    counts = {}
    for data, _ in balanced.epoch_batches(torch.Generator().manual_seed(0)):
        counts[data.eid] = counts.get(data.eid, 0) + 1
    assert len(set(counts.values())) == 1 and balanced.steps_per_epoch == 2 * max(per_session.values())


def bits_per_spike(model, path) -> dict[str, float]:
    table = evaluate_model(model, load_session(path), SCORE, labels=LABELS).metrics
    return table[table["metric"] == "bps"].set_index("task")["value"].to_dict()


@pytest.mark.science
def test_pretraining_helps_an_unseen_session(four_sessions, tensors, tmp_path):
    """Pretrain on 3 sessions, finetune every weight on the 4th; against training on the 4th
    alone, each with the demo's recipe (capped at 40 epochs). Seen on this demo, finetuned vs
    alone: co-smoothing 0.079 vs 0.072 bits/spike, inter-region 0.051 vs 0.035, forward
    prediction 0.052 vs 0.053. At short fixed budgets (6 or 12 epochs) the model trained alone
    is ahead: the new session's input layer starts from scratch under a trained transformer."""
    recipe = dataclasses.replace(demo_recipe("neuron"), epochs=40)
    pre = pretrain_sessions(four_sessions[:3], tmp_path / "pre", recipe)
    assert set(pre.model.config.sessions) == {t.eid for t in tensors[:3]}
    finetuned = finetune_session(tmp_path / "pre", four_sessions[3], tmp_path / "fine", recipe)
    alone = train(tensors[3], recipe, tmp_path / "alone")
    fine, scratch = bits_per_spike(finetuned.model, four_sessions[3]), bits_per_spike(alone.model, four_sessions[3])
    gains = {task: fine[task] - scratch[task] for task in fine}
    assert gains["inter-region"] > 0.005 and gains["co-smoothing"] > 0, (fine, scratch)
    assert min(gains.values()) > -0.01, (fine, scratch)
    assert load_pretrained(tmp_path / "fine").config.sessions == {tensors[3].eid: tensors[3].n_units}


def test_finetuning_the_new_layers_only_leaves_the_rest_bit_identical(four_sessions, tmp_path):
    pretrain_sessions(four_sessions[:2], tmp_path / "pre", TrainConfig(scheme="temporal", epochs=1))
    before = load_pretrained(tmp_path / "pre").state_dict()
    result = finetune_session(
        tmp_path / "pre", four_sessions[3], tmp_path / "fine", TrainConfig(scheme="temporal", epochs=2, trainable="session")
    )
    after = result.model.state_dict()
    new_eid = load_session(four_sessions[3]).eid
    shared = [name for name in after if new_eid not in name]
    assert shared and all(torch.equal(after[name], before[name]) for name in shared)
    new = [name for name in after if name not in before]
    assert new and all(new_eid in name for name in new)
    assert any(not torch.equal(after[name], 0 * after[name]) for name in new)


def test_finetuning_needs_matching_prompts(four_sessions, tmp_path):
    pretrain_sessions(four_sessions[:1], tmp_path / "pre", TrainConfig(scheme="temporal", epochs=1))
    with pytest.raises(ValueError, match="prompt tokens"):
        finetune_session(tmp_path / "pre", four_sessions[3], tmp_path / "fine", TrainConfig(scheme="mtm-prompt", epochs=1))


def test_ndt2_pretrains_and_finetunes_through_padding_and_session_tokens(four_sessions, tensors, tmp_path):
    """NDT2 shares every layer across sessions; finetuning adds the new session's token and unit
    offsets, and refuses a checkpoint of another backbone."""
    config = TrainConfig(scheme="mtm-prompt", backbone="ndt2", epochs=1, patch_size=24)
    pre = pretrain_sessions(four_sessions[:2], tmp_path / "pre", config)
    assert set(pre.model.config.sessions) == {t.eid for t in tensors[:2]}
    assert pre.model.config.max_patches == max(-(-t.n_units // 24) for t in tensors[:2])
    before = load_pretrained(tmp_path / "pre").state_dict()
    result = finetune_session(
        tmp_path / "pre", four_sessions[3], tmp_path / "fine", dataclasses.replace(config, trainable="session")
    )
    new_eid = tensors[3].eid
    assert set(result.model.config.sessions) == {new_eid}
    after = result.model.state_dict()
    own = {f"session_token.{new_eid}", f"unit_offset.{new_eid}"}
    assert {k for k in after if k.startswith(("session_token.", "unit_offset."))} == own
    assert all(torch.equal(after[k], before[k]) for k in set(after) - own), "only the new session's layers trained"
    with pytest.raises(ValueError, match="not the configured ndt1"):
        finetune_session(tmp_path / "pre", four_sessions[3], tmp_path / "other", TrainConfig(scheme="mtm-prompt", epochs=1))
