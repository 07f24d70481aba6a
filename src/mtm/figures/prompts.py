"""The prompt ablation (MtM's appendix table): each prompt token at inference, for each task.

Prompted MtM models were scored on every task and behaviour target under each of the four
prompt tokens (`mtm.evaluate`, `prompt_ablation`), by default the finetuned models of the
held-out sessions. For each backbone, one row per prompt; cells are means over the held-out
sessions of the models pretrained on the most sessions. A task's own prompt (the one the
evaluation uses) is outlined.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mtm.figures.ablation import ablation_table, draw_tables
from mtm.figures.output import save_figure, title
from mtm.figures.scaling import pretrain_size
from mtm.io import write_text
from mtm.vocabulary import DECODING_PROMPTS, MTM_SCHEMES, TASK_PROMPTS

PROMPT_LABELS = {prompt: f"{prompt} prompt" for prompt in MTM_SCHEMES}
OWN_PROMPTS = {**DECODING_PROMPTS, **TASK_PROMPTS}  # the prompt each task is evaluated with


def prompt_setting(prompts: pd.DataFrame) -> str | None:
    """The setting the figure shows: the finetuned models pretrained on the most sessions, else
    the single-session ones; None for an empty table."""
    settings = set(prompts["setting"])
    return max(settings, key=pretrain_size) if settings else None


def prompt_table(prompts: pd.DataFrame) -> pd.DataFrame:
    """The ablation table (mtm.figures.ablation.TABLE_COLUMNS) of `prompt_setting`, rows = prompts."""
    setting = prompt_setting(prompts)
    if setting is None:
        return ablation_table(prompts)
    return ablation_table(prompts, setting=setting, rows="prompt")


def plot_prompt_ablation(prompts_path: Path, *, png: Path, pdf: Path, caption: Path, table_csv: Path, demo: bool) -> None:
    """Draw the prompt ablation from the joined prompts table; write the figure, its caption and
    the table in numbers, each atomically."""
    prompts = pd.read_parquet(prompts_path)
    setting = prompt_setting(prompts)
    table = prompt_table(prompts)
    fig = draw_tables(table, order=MTM_SCHEMES, row_labels=PROMPT_LABELS, outline=OWN_PROMPTS)
    n_sessions = int(table["n_sessions"].max()) if len(table) else 0
    if setting is None:
        which = "(none in this run)"
    elif setting == "single":
        which = "trained on each session alone"
    else:
        which = f"pretrained on {pretrain_size(setting)} sessions and finetuned on each held-out session"
    title(fig, f"Prompt tokens at inference, MtM (prompted) models ({n_sessions} sessions)", demo=demo)
    text = (
        f"Prompt ablation (MtM appendix): the prompted MtM model, {which}, evaluated on every task with each of "
        f"the four prompt tokens (rows); means over {n_sessions} sessions of the test trials' bits/spike (activity) "
        "and of the decoders' accuracy or R² (behaviour, decoded from the rates predicted under that prompt). "
        "Outlined: the prompt each task is evaluated with elsewhere (co-smoothing: neuron; forward prediction: "
        "causal; intra- and inter-region: their own; choice and block: neuron; wheel and whisker: causal). "
        f"Grey rows: oracle and chance. Numbers: {table_csv.name}."
    )
    save_figure(fig, png=png, pdf=pdf, caption=caption, text=text, demo=demo)
    write_text(table_csv, table.to_csv(index=False))
