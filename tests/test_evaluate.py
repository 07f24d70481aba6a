"""Evaluation of a trained model on a demo session: the table, its sanity, determinism, bf16, files."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from mtm import heldout, metrics
from mtm.checkpoint import save_skipped
from mtm.decoding import decode_behaviour
from mtm.config.evaluation import EvalConfig
from mtm.evaluate import evaluate_checkpoint, evaluate_model, evaluation_units, score_rates
from mtm.results_table import METRIC_COLUMNS, ModelLabels, write_metrics_table
from mtm.session import load_session
from mtm.jobs import train_session
from mtm.config.training import TrainConfig
from mtm.vocabulary import DECODING_TARGETS, MTM_SCHEMES, TASK_PROMPTS, TASKS

LABELS = ModelLabels(backbone="ndt1", scheme="mtm-prompt", setting="single")
QUICK = EvalConfig(max_units=24, seed=0, decoding=DECODING_TARGETS)  # every target, beyond the default four
ACTIVITY_METRICS = {"bps", "bps_pooled", "poisson_d2", "psth_r2", "single_trial_r2", "oracle_bps", "oracle_bps_pooled"}


@pytest.fixture(scope="module")
def session(binned):
    return load_session(binned["usable"])


@pytest.fixture(scope="module")
def trained(binned, tmp_path_factory):
    """An MtM model with prompts, trained briefly on the demo session: (its folder, the model)."""
    out = tmp_path_factory.mktemp("mtm-prompt")
    result = train_session(binned["usable"], out, TrainConfig(scheme="mtm-prompt", epochs=8, lr=1e-3), threads=1)
    return out, result.model


@pytest.fixture(scope="module")
def evaluation(trained, session):
    return evaluate_model(trained[1], session, QUICK, labels=LABELS)


def values(table: pd.DataFrame) -> dict[tuple[str, str], float]:
    return {(r.task, r.metric): r.value for r in table.itertuples()}


def test_table_is_tidy_and_complete(evaluation, session):
    table = evaluation.metrics
    assert tuple(table.columns) == METRIC_COLUMNS
    for task in TASKS:
        rows = table[table["task"] == task]
        assert set(rows["metric"]) == ACTIVITY_METRICS
        assert set(rows["prompt"]) == {TASK_PROMPTS[task]}
        assert (rows["n_units"] == 24).all() and (rows["n_trials"] == (session.split == "test").sum()).all()
    for target in DECODING_TARGETS:
        assert set(table[table["task"] == target]["metric"]) in ({"accuracy", "chance_accuracy"}, {"r2", "chance_r2"})
    assert np.isfinite(table["value"]).all()
    assert (table["model"] == "ndt1/mtm-prompt/single").all() and (table["eid"] == session.eid).all()
    units = evaluation.units
    assert len(units) == 24 * len(TASKS) and set(units["region"]) <= set(session.units["beryl"].fillna("unknown"))
    assert len(evaluation.prompts) == 0


def test_units_keep_observed_and_predicted_trial_averages(evaluation, session):
    """The per-unit PSTHs (Hz) over the scored bins: observed equals the test trials' mean count."""
    units = evaluation.units
    test = session.split == "test"
    co = units[units["task"] == "co-smoothing"].iloc[0]
    observed = session.counts[test][:, :, co["unit"]].mean(axis=0) / session.bin_size
    np.testing.assert_allclose(co["psth_observed"], observed, rtol=1e-6)
    assert len(co["psth_predicted"]) == session.counts.shape[1] and (np.asarray(co["psth_predicted"]) > 0).all()
    forward = units[units["task"] == "forward-prediction"].iloc[0]
    assert len(forward["psth_observed"]) == heldout.FORWARD_BINS


def test_prompt_ablation_scores_every_task_under_every_prompt(trained, session, evaluation):
    config = EvalConfig(max_units=24, seed=0, decoding=DECODING_TARGETS, prompt_ablation=True)
    ablated = evaluate_model(trained[1], session, config, labels=LABELS)
    pd.testing.assert_frame_equal(ablated.metrics, evaluation.metrics)  # the main table is unchanged
    prompts = ablated.prompts
    assert tuple(prompts.columns) == METRIC_COLUMNS
    for task in (*TASKS, *DECODING_TARGETS):
        assert set(prompts[prompts["task"] == task]["prompt"]) == set(MTM_SCHEMES), task
    bps = prompts[prompts["metric"] == "bps"].set_index(["task", "prompt"])["value"]
    main = values(evaluation.metrics)
    for task in TASKS:
        assert bps[(task, TASK_PROMPTS[task])] == main[(task, "bps")], "its own prompt: the main value"
    assert bps.loc["co-smoothing"].nunique() > 1, "the prompt changes the prediction"


def test_trained_model_beats_the_null_and_not_the_truth(evaluation):
    """Held-out units are predicted better than by their own mean rate, and worse than by the
    demo's true rates (the oracle, which is 0.2 bits/spike here)."""
    v = values(evaluation.metrics)
    for task in ("co-smoothing", "inter-region"):
        assert 0 < v[(task, "bps")] < v[(task, "oracle_bps")], task
        assert 0 < v[(task, "bps_pooled")] < v[(task, "oracle_bps_pooled")], task
    assert v[("co-smoothing", "oracle_bps")] > 0.1


def test_same_config_same_numbers(trained, session, evaluation):
    again = evaluate_model(trained[1], session, QUICK, labels=LABELS)
    pd.testing.assert_frame_equal(again.metrics, evaluation.metrics)
    other_units = evaluate_model(trained[1], session, EvalConfig(max_units=24, seed=1, decoding=()), labels=LABELS)
    assert not np.array_equal(other_units.units["unit"], evaluation.units["unit"])


def test_unit_subset_is_seeded_per_session():
    a = evaluation_units(100, "eid-a", EvalConfig(max_units=10, seed=0))
    assert np.array_equal(a, evaluation_units(100, "eid-a", EvalConfig(max_units=10, seed=0)))
    assert not np.array_equal(a, evaluation_units(100, "eid-b", EvalConfig(max_units=10, seed=0)))
    assert np.array_equal(evaluation_units(100, "eid-a", EvalConfig(max_units=None)), np.arange(100))


def test_bf16_moves_bits_per_spike_by_less_than_0_005(trained, session, evaluation):
    bf16 = evaluate_model(trained[1], session, EvalConfig(max_units=24, precision="bf16", decoding=()), labels=LABELS)
    fp32, low = values(evaluation.metrics), values(bf16.metrics)
    for task in TASKS:
        assert abs(low[(task, "bps")] - fp32[(task, "bps")]) < 0.005, task


def test_perfect_model_scores_the_oracle_and_the_null_zero(session):
    test = session.split == "test"
    counts = session.counts[test].astype(float)
    truth = session.true_rate[test] * session.bin_size
    conditions = session.trials["choice"].to_numpy()[test]
    perfect, _ = score_rates(truth, counts, conditions, oracle=truth)
    assert perfect["bps"] == perfect["oracle_bps"] and perfect["bps_pooled"] == perfect["oracle_bps_pooled"]
    null, per_unit = score_rates(metrics.null_rates(counts), counts, conditions)
    assert null["bps"] == pytest.approx(0, abs=1e-12) and null["poisson_d2"] == pytest.approx(0, abs=1e-12)
    assert "oracle_bps" not in null and np.isnan(per_unit["oracle_bps"]).all()


def test_decoding_the_demo_beats_chance_for_every_target(session):
    """The demo's behaviour is in its neural activity: decoders of the true rates beat chance."""
    features = np.log(session.true_rate * session.bin_size).reshape(len(session.counts), -1)
    behaviour = {"wheel-speed": session.wheel_speed, "whisker-motion-energy": session.whisker_motion_energy}
    for result in decode_behaviour(features, session.trials, behaviour):
        assert result.value > result.chance + 0.05, result


def test_checkpoint_files_and_skipped_models(trained, binned, tmp_path):
    folder, _ = trained
    evaluation = evaluate_checkpoint(folder, binned["usable"], tmp_path / "a", EvalConfig(max_units=4), setting="single")
    on_disk = pd.read_parquet(tmp_path / "a/metrics.parquet")
    pd.testing.assert_frame_equal(on_disk, evaluation.metrics)
    assert len(pd.read_csv(tmp_path / "a/metrics.csv")) == len(on_disk)
    assert len(pd.read_parquet(tmp_path / "a/units.parquet")) == 4 * len(TASKS)

    save_skipped(tmp_path / "skipped", "too few units", {"eid": "x", "training": {"scheme": "temporal"}})
    empty = evaluate_checkpoint(tmp_path / "skipped", binned["unusable"], tmp_path / "b", QUICK, setting="single")
    assert len(empty.metrics) == 0 and len(pd.read_parquet(tmp_path / "b/metrics.parquet")) == 0

    write_metrics_table(
        [tmp_path / "a/metrics.parquet", tmp_path / "b/metrics.parquet"],
        tmp_path / "all.parquet", tmp_path / "all.csv", tmp_path / "summary.csv", tmp_path / "prompts.parquet",
    )  # fmt: skip
    assert len(pd.read_parquet(tmp_path / "prompts.parquet")) == 0, "no prompt ablation asked for"
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert len(summary) == len(on_disk) and (summary["n_sessions"] == 1).all()
    row = summary[(summary.task == "co-smoothing") & (summary.metric == "bps")].iloc[0]
    assert row["mean"] == pytest.approx(values(on_disk)[("co-smoothing", "bps")])


def test_a_model_of_another_session_is_refused(trained, binned, tmp_path):
    folder, _ = trained
    config = json.loads((folder / "config.json").read_text())
    config["metadata"]["eid"] = "00000000-0000-0000-0000-000000000000"
    config["metadata"]["eids"] = ["00000000-0000-0000-0000-000000000000"]
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "config.json").write_text(json.dumps(config))
    (moved / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match=r"holds the sessions \['00000000"):
        evaluate_checkpoint(moved, binned["usable"], tmp_path / "c", QUICK, setting="single")
    assert not (tmp_path / "c").exists()


def test_block_is_decoded_from_a_model_that_sees_only_the_pre_stimulus_bins(trained, session, monkeypatch):
    """`block`: the model runs on the bins before stimulus onset alone (the demo's window starts
    0.5 s before it: 25 bins of 20 ms), so neither the stimulus nor the choice reaches its
    features; `block-whole-trial` runs it on every bin."""
    model = trained[1]
    seen, forward = [], model.forward
    monkeypatch.setattr(model, "forward", lambda counts, **kw: (seen.append(counts.shape[1]), forward(counts, **kw))[1])
    config = EvalConfig(tasks=(), decoding=("block", "block-whole-trial"), max_units=24)
    table = evaluate_model(model, session, config, labels=LABELS).metrics
    assert session.pre_event_bins == 25 and set(seen) == {25, session.shape[1]}
    assert set(table["task"]) == {"block", "block-whole-trial"}
    no_pre = dataclasses.replace(session, meta={**session.meta, "binning": {**session.meta["binning"], "window": [0.0, 2.0]}})
    with pytest.raises(ValueError, match=rf"session {session.eid}: 'block' is decoded from the bins before stimOn_times"):
        evaluate_model(model, no_pre, config, labels=LABELS)


class Recorded(torch.nn.Module):
    """`model`, recording the (prompt, causal) of every forward pass; prompted=False makes it act
    as a model without prompts (passes get no prompt and run under its first prompt token)."""

    def __init__(self, model, *, prompted: bool):
        super().__init__()
        self.model, self.calls = model, []
        self.config = dataclasses.replace(model.config, use_prompt=prompted)

    def forward(self, counts, **kw):
        self.calls.append((kw["prompt"], kw["causal"]))
        return self.model(counts, **{**kw, "prompt": 0 if kw["prompt"] is None else kw["prompt"]})


@pytest.mark.parametrize("prompted", [True, False], ids=["prompted", "without-prompts"])
def test_decoding_attention_switch(trained, session, prompted):
    """"as-prompted" (the authors'): whisker motion energy, decoded under the causal prompt,
    gets its features under causal attention, for a prompted model and for one without prompts
    alike; choice (neuron prompt) stays bidirectional. The switch changes the whisker score."""
    model = Recorded(trained[1], prompted=prompted)
    calls = model.calls
    labels = LABELS if prompted else dataclasses.replace(LABELS, scheme="temporal")
    scores = {}
    for attention in ("bidirectional", "as-prompted"):
        calls.clear()
        config = EvalConfig(tasks=(), decoding=("choice", "whisker-motion-energy"), decoding_attention=attention, max_units=24)
        scores[attention] = values(evaluate_model(model, session, config, labels=labels).metrics)
        expected = {False, True} if attention == "as-prompted" else {False}
        assert {causal for _, causal in calls} == expected, attention
        if prompted:
            assert {c for p, c in calls if p == MTM_SCHEMES.index("neuron")} == {False}
            assert {c for p, c in calls if p == MTM_SCHEMES.index("causal")} == {attention == "as-prompted"}
    assert scores["bidirectional"][("choice", "accuracy")] == scores["as-prompted"][("choice", "accuracy")]
    assert scores["bidirectional"][("whisker-motion-energy", "r2")] != scores["as-prompted"][("whisker-motion-energy", "r2")]


def test_forward_attention_switch_runs_a_bidirectional_model_bidirectionally(trained, session):
    """"as-trained": a model trained without causal attention (here: the weights seen as a
    temporal-masking model) predicts the hidden last bins bidirectionally; "causal" runs it
    causally. A prompted model is causal under both."""
    for scheme, attention, causal in [("temporal", "as-trained", False), ("temporal", "causal", True),
                                      ("mtm-prompt", "as-trained", True)]:  # fmt: skip
        model = Recorded(trained[1], prompted=scheme == "mtm-prompt")
        config = EvalConfig(tasks=("forward-prediction",), decoding=(), forward_attention=attention, max_units=24)
        evaluate_model(model, session, config, labels=dataclasses.replace(LABELS, scheme=scheme))
        assert {c for _, c in model.calls} == {causal}, (scheme, attention)
