"""One vocabulary: the config schema's enums, the workflow's wildcards, the models, the masks and
the figures all hold to mtm.vocabulary."""

import re
from pathlib import Path

import pytest

from mtm import vocabulary as v
from mtm.config.schema import schema
from mtm.figures.output import SCHEME_LABELS, TASK_LABELS
from mtm.masking import DEFAULT_RATIO
from mtm.models import BACKBONES


REPO = Path(__file__).resolve().parents[1]
SCHEMA = schema()


def enum(*path: str) -> list:
    node = SCHEMA
    for key in path:
        node = node[key]
    return node["enum"]


def test_the_schema_enums_are_the_vocabulary():
    properties = SCHEMA["properties"]
    assert enum("$defs", "schemes", "items") == list(v.TRAIN_SCHEMES)
    assert enum("properties", "training", "properties", "backbones", "items") == list(v.BACKBONES)
    assert enum("properties", "evaluation", "properties", "tasks", "items") == list(v.TASKS)
    for section in ("evaluation", "supervised"):
        key = "decoding" if section == "evaluation" else "targets"
        assert enum("properties", section, "properties", key, "items") == list(v.DECODING_TARGETS), section
    assert list(properties["supervised"]["properties"]["weight_decay"]["properties"]) == list(v.DECODING_TARGETS)
    # the switches' choices: the schema offers what the stage configs accept (allen and beryl
    # of the region levels: cosmos is too coarse for region masking)
    choices = {
        ("training", "model"): v.MODEL_SIZES, ("training", "precision"): v.PRECISIONS, ("training", "loss"): v.LOSSES,
        ("training", "lr_schedule"): v.LR_SCHEDULES, ("training", "selection"): v.SELECTIONS, ("training", "stack"): v.STACKING,
        ("multisession", "session_sampling"): v.SESSION_SAMPLING, ("multisession", "trainable"): v.TRAINABLE,
        ("evaluation", "forward_attention"): v.FORWARD_ATTENTION,
        ("evaluation", "decoding_attention"): v.DECODING_ATTENTION, ("evaluation", "decoders"): v.DECODER_PROTOCOLS,
        ("supervised", "encoder"): v.ENCODER_MODES,
    }  # fmt: skip
    for (section, key), allowed in choices.items():
        assert enum("properties", section, "properties", key) == list(allowed), f"{section}.{key}"
    assert set(enum("properties", "training", "properties", "region_level")) <= set(v.REGION_LEVELS)


def test_the_package_holds_to_it():
    assert list(BACKBONES) == list(v.BACKBONES)
    assert set(DEFAULT_RATIO) == set(v.MASKING_SCHEMES) and set(v.MTM_SCHEMES) <= set(v.MASKING_SCHEMES)
    assert list(v.TASK_PROMPTS) == list(v.TASKS) and set(v.TASK_PROMPTS.values()) <= set(v.MTM_SCHEMES)
    assert list(v.DECODING_PROMPTS) == list(v.DECODING_TARGETS) and set(v.DECODING_PROMPTS.values()) <= set(v.MTM_SCHEMES)
    assert set(v.PRE_EVENT_TARGETS) <= set(v.CLASSIFICATION_TARGETS) <= set(v.DECODING_TARGETS)
    assert set(SCHEMA["properties"]["supervised"]["properties"]["weight_decay"]["default"]) == set(v.DECODING_TARGETS)
    assert set(v.BASELINE_SCHEMES) == set(v.BACKBONES) and set(v.BASELINE_SCHEMES.values()) <= set(v.TRAIN_SCHEMES)
    assert set(SCHEME_LABELS) == set(v.TRAIN_SCHEMES) and set(TASK_LABELS) == {*v.TASKS, *v.DECODING_TARGETS}
    assert [v.prompt_index(s) for s in v.MTM_SCHEMES] == list(range(len(v.MTM_SCHEMES)))
    with pytest.raises(ValueError, match="has no prompt token"):
        v.prompt_index("temporal")


@pytest.mark.parametrize("names", [v.TRAIN_SCHEMES, v.DECODING_TARGETS, v.BACKBONES])
def test_a_wildcard_matches_exactly_its_names(names):
    pattern = re.compile(f"(?:{v.wildcard(names)})/")  # as Snakemake places it, before the next path part
    assert all(pattern.fullmatch(f"{name}/") for name in names)
    # no prefix of a longer name, no other name: "mtm" must not stop at "mtm-prompt"'s dash
    assert not any(pattern.fullmatch(f"{name}x/") for name in names)
    assert not pattern.fullmatch("unknown/")


def test_the_workflow_reads_its_wildcards_from_it():
    rules = {path.name: path.read_text() for path in (REPO / "workflow/rules").glob("*.smk")}
    constraints = "".join(re.findall(r"wildcard_constraints:\n((?:    .*\n)+)", "".join(rules.values())))
    assert "vocabulary.wildcard(vocabulary.TRAIN_SCHEMES)" in rules["train.smk"]
    assert "vocabulary.wildcard(vocabulary.DECODING_TARGETS)" in rules["supervised.smk"]
    spelled_out = [name for name in (*v.TRAIN_SCHEMES, *v.DECODING_TARGETS, *v.BACKBONES) if f'"{name}|' in constraints]
    assert not spelled_out, "a wildcard of the vocabulary spelled out by hand"
