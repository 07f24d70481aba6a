"""The MtM authors' NDT1 weights, imported: our model reproduces their outputs (tests/data/authors-ndt1,
made by their own code) in every mode."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import torch
import yaml
from torch import nn

from mtm.authors import AUTHORS_PROMPT_ROWS, AuthorsWeightsError, import_authors_ndt1, read_state_dict
from mtm.checkpoint import load_pretrained
from mtm.cli import main
from mtm.vocabulary import MTM_SCHEMES, TASK_PROMPTS, TASKS

FIXTURES = Path(__file__).parent / "data" / "authors-ndt1"
FIXTURE = json.loads((FIXTURES / "config.json").read_text())
SINGLE = {"single": FIXTURE["single"]["n_units"]}
STITCHED = FIXTURE["stitched"]["sessions"]
ROWS = FIXTURE["stitched"]["session_token_row"]
N_HEADS = FIXTURE["sizes"]["n_heads"]


def weights(name: str) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(FIXTURES / f"{name}.weights.safetensors")


def their_outputs(name: str, eid: str | None) -> dict[str, torch.Tensor]:
    """(input key, output key, mode) -> tensor, for one session of a fixture model."""
    io = safetensors.torch.load_file(FIXTURES / f"{name}.io.safetensors")
    prefix = f"{eid}." if eid else ""
    return {key[len(prefix) :]: value for key, value in io.items() if key.startswith(prefix)}


def our_log_rates(model, counts: torch.Tensor, mode: str, eid: str | None) -> torch.Tensor:
    with torch.no_grad():
        return model(counts, prompt=MTM_SCHEMES.index(mode), session=eid, causal=mode == "causal").log_rates


def cases():
    """(model name, sessions, eid or None): both fixture models, each stitched session."""
    yield "single", SINGLE, None
    for eid in STITCHED:
        yield "stitched", STITCHED, eid


@pytest.mark.parametrize(("name", "sessions", "eid"), list(cases()), ids=["single", *[e[:8] for e in STITCHED]])
def test_imported_weights_match_their_outputs_in_every_mode(name, sessions, eid):
    model = import_authors_ndt1(weights(name), sessions, n_heads=N_HEADS, session_rows=ROWS,
                                causal_context_sees_bins=True)  # fmt: skip
    io = their_outputs(name, eid)
    for mode in AUTHORS_PROMPT_ROWS:
        for counts, theirs in (("input", "log_rates"), ("input_forward", "log_rates_forward")):
            ours = our_log_rates(model, io[counts], mode, eid)
            assert torch.allclose(ours, io[f"{theirs}.{mode}"], atol=1e-5, rtol=0), (name, eid, mode, counts)


def test_without_their_causal_rule_only_the_causal_mode_differs():
    """Our default causal attention keeps the context tokens from the bins: the bidirectional
    modes still match theirs exactly, the causal one does not (their leak changes the output)."""
    eid = next(iter(STITCHED))
    model = import_authors_ndt1(weights("stitched"), STITCHED, n_heads=N_HEADS, session_rows=ROWS)
    io = their_outputs("stitched", eid)
    for mode in ("neuron", "inter-region", "intra-region"):
        assert torch.allclose(our_log_rates(model, io["input"], mode, eid), io[f"log_rates.{mode}"], atol=1e-5, rtol=0)
    leak = (our_log_rates(model, io["input"], "causal", eid) - io["log_rates.causal"]).abs().max()
    assert leak > 1e-3


def test_the_command_writes_a_checkpoint_that_loads_and_reproduces_them(tmp_path, capsys):
    """`mtm import-authors` from a .pt state_dict (weights_only) with their target-eid list for
    the session rows; `load_pretrained` rebuilds the model from config.json alone."""
    state = tmp_path / "model_best.pt"
    torch.save({"model": weights("stitched")}, state)
    target_eids = tmp_path / "target_eids.txt"
    listed = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(10)]
    for eid, row in ROWS.items():
        listed[row] = eid
    target_eids.write_text("\n".join(listed) + "\n")
    args = ["import-authors", str(state), "--out", str(tmp_path / "ours"), "--n-heads", str(N_HEADS),
            "--target-eids", str(target_eids), "--authors-causal-context"]  # fmt: skip
    for eid, n_units in STITCHED.items():
        args += ["--session", f"{eid}={n_units}"]
    main(args)
    assert "2 layers of 64" in capsys.readouterr().out
    model = load_pretrained(tmp_path / "ours").eval()
    for eid in STITCHED:
        io = their_outputs("stitched", eid)
        for mode in AUTHORS_PROMPT_ROWS:
            assert torch.allclose(our_log_rates(model, io["input"], mode, eid), io[f"log_rates.{mode}"], atol=1e-5, rtol=0)


def test_what_it_refuses(tmp_path):
    pickled = tmp_path / "module.pt"
    torch.save({"model": nn.Linear(2, 2)}, pickled)  # their checkpoints pickle whole modules
    with pytest.raises(AuthorsWeightsError, match="module.pt: not a state_dict of tensors"):
        read_state_dict(pickled)
    with pytest.raises(AuthorsWeightsError, match="no stitcher for 25 units"):
        import_authors_ndt1(weights("stitched"), {"x": 25}, n_heads=N_HEADS, session_rows={"x": 0})
    with pytest.raises(AuthorsWeightsError, match="give every session's row"):
        import_authors_ndt1(weights("stitched"), STITCHED, n_heads=N_HEADS)
    with pytest.raises(AuthorsWeightsError, match="takes one session"):
        import_authors_ndt1(weights("single"), {"a": 20, "b": 20}, n_heads=N_HEADS)
    with pytest.raises(AuthorsWeightsError, match="session a: 21 units, but the state_dict.s input takes 20"):
        import_authors_ndt1(weights("single"), {"a": 21}, n_heads=N_HEADS)
    with pytest.raises(AuthorsWeightsError, match="not the authors' NDT1"):
        import_authors_ndt1({"decoder.0.weight": torch.zeros(2, 2)}, {"a": 2}, n_heads=1)


@pytest.mark.slow
def test_an_imported_model_is_scored_by_the_workflows_evaluation(tmp_path):
    """A user holding the authors' checkpoint: bin a session with the workflow, import their
    single-session model into results/models/..., and the workflow's `evaluate` rule scores it
    on every task (and trains nothing)."""
    from test_workflow import copy_workflow, snakemake

    from mtm.demo import demo_sessions

    wd = copy_workflow(tmp_path)
    tiny = yaml.safe_load((wd / "tests/config/tiny.yaml").read_text())
    tiny["demo"].update(n_units=FIXTURE["single"]["n_units"], n_trials=100)  # the fixture model's 20 units
    (wd / "tests/config/tiny.yaml").write_text(yaml.safe_dump(tiny))
    eid = demo_sessions(1)[0].eid
    snakemake(wd, f"results/sessions/{eid}/binned.parquet")
    model_dir = wd / f"results/models/ndt1/mtm-prompt/single/{eid}/seed-0"
    weights_file = tmp_path / "model_best.safetensors"
    safetensors.torch.save_file(weights("single"), weights_file)
    main(["import-authors", str(weights_file), "--out", str(model_dir), "--n-heads", str(N_HEADS),
          "--session", f"{eid}={FIXTURE['single']['n_units']}"])  # fmt: skip
    target = f"results/eval/ndt1/mtm-prompt/single/{eid}/seed-0/metrics.parquet"
    result = snakemake(wd, target)
    assert "rule evaluate:" in result.stderr + result.stdout and "train_single" not in result.stderr + result.stdout
    table = pd.read_parquet(wd / target)
    bps = table[table["metric"] == "bps"].set_index("task")["value"]
    assert set(bps.index) == set(TASKS) and np.isfinite(bps).all()
    assert set(table["model"]) == {"ndt1/mtm-prompt/single"} and set(table["eid"]) == {eid}
    activity = table[table["task"].isin(TASKS)]
    assert (activity["prompt"] == activity["task"].map(TASK_PROMPTS)).all()
