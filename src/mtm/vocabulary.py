"""The names the package, the workflow and the figures share, defined once.

Masking schemes, the activity tasks, the behaviour targets and how they relate (the prompt a task
or target is scored under, a target's metric). Snakemake's wildcard constraints are built from
these tuples (`wildcard`), the config schema's enums are held to them by a test
(tests/test_vocabulary.py), and the figures read their order from here. This module imports
nothing from the package: every other module may import it.

To add a scheme, a task or a target, add it here first; the test then names the schema enums and
the code that must learn it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

BACKBONES = ("ndt1", "ndt2")
# each backbone's own baseline scheme, the paper's comparison for MtM
BASELINE_SCHEMES = {"ndt1": "temporal", "ndt2": "random-token"}

# single masking schemes (mtm.masking draws each)
MASKING_SCHEMES = ("temporal", "neuron", "causal", "intra-region", "inter-region", "random", "random-token")
# MtM's schedule; its order is the model's prompt-token vocabulary
MTM_SCHEMES = ("neuron", "causal", "intra-region", "inter-region")
# what a model is trained with: a single scheme, or MtM's schedule without or with prompt tokens
TRAIN_SCHEMES = (*MASKING_SCHEMES, "mtm", "mtm-prompt")

# MtM's activity tasks (mtm.heldout), each scored under the prompt of the scheme it matches
TASKS = ("co-smoothing", "forward-prediction", "intra-region", "inter-region")
TASK_PROMPTS = {"co-smoothing": "neuron", "forward-prediction": "causal", "intra-region": "intra-region",
                "inter-region": "inter-region"}  # fmt: skip

# behaviour targets (mtm.decoding, mtm.supervised) and the metric each is scored by
TARGET_METRICS = {"choice": "accuracy", "block": "accuracy", "block-whole-trial": "accuracy", "wheel-speed": "r2",
                  "whisker-motion-energy": "r2"}  # fmt: skip
DECODING_TARGETS = tuple(TARGET_METRICS)
CLASSIFICATION_TARGETS = tuple(t for t, metric in TARGET_METRICS.items() if metric == "accuracy")
PRE_EVENT_TARGETS = ("block",)  # decoded from the bins before the alignment event
# the prompts of the paper's tables: choice under the neuron prompt, whisker energy under the causal one
DECODING_PROMPTS = {"choice": "neuron", "block": "neuron", "block-whole-trial": "neuron", "wheel-speed": "causal",
                    "whisker-motion-energy": "causal"}  # fmt: skip


# the choices of the config's switches (mtm.config), the schema's enums held to them by a test
REGION_LEVELS = ("allen", "beryl", "cosmos")  # IBL's region parcellations (iblatlas), finest first
MODEL_SIZES = ("demo", "paper")
PRECISIONS = ("auto", "fp32", "bf16")
LOSSES = ("mean", "sum")
LR_SCHEDULES = ("one-cycle", "plateau")
SELECTIONS = ("val-loss", "psth-r2")
SESSION_SAMPLING = ("proportional", "balanced")
TRAINABLE = ("all", "session")
STACKING = ("scheme", "none")  # training.stack: a job per (backbone, session, seed), or per model
FORWARD_ATTENTION = ("causal", "as-trained")
DECODING_ATTENTION = ("bidirectional", "as-prompted")
DECODER_PROTOCOLS = ("ours", "authors")
ENCODER_MODES = ("frozen", "full", "gradual")


def prompt_index(scheme: str) -> int:
    """The prompt token of an MtM scheme: its place in MTM_SCHEMES."""
    if scheme not in MTM_SCHEMES:
        raise ValueError(f"{scheme!r} has no prompt token; the prompts are {MTM_SCHEMES}")
    return MTM_SCHEMES.index(scheme)


def wildcard(names: Iterable[str]) -> str:
    """A Snakemake wildcard constraint matching exactly one of `names`."""
    return "|".join(re.escape(name) for name in names)
