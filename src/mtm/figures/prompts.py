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
from matplotlib.patches import Rectangle

from mtm.figures.ablation import ACTIVITY_TASKS, BEHAVIOUR_METRICS, CHANCE, ORACLE, ablation_table, heatmap, table_rows
from mtm.figures.output import BACKBONE_LABELS, new_figure, save_figure, title
from mtm.figures.scaling import pretrain_size
from mtm.evaluate import DECODING_PROMPTS
from mtm.heldout import TASK_PROMPTS
from mtm.io import write_text
from mtm.masking import MTM_SCHEMES

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
    backbones = [b for b in BACKBONE_LABELS if b in set(table["backbone"])]
    fig = new_figure(13.0, 1.2 + max(1, len(backbones)) * (0.42 * (len(MTM_SCHEMES) + 1) + 0.9))
    if not backbones:
        fig.text(0.5, 0.5, "no prompt ablation in this run (evaluation.prompt_ablation)", ha="center", va="center")
    grid = fig.add_gridspec(max(1, len(backbones)), 2)
    for i, backbone in enumerate(backbones):
        rows = table_rows(table, backbone, order=MTM_SCHEMES)
        labels = [PROMPT_LABELS.get(r, r) for r in rows]
        name = BACKBONE_LABELS.get(backbone, backbone)
        for j, (tasks, reference, what) in enumerate([
            (list(ACTIVITY_TASKS), ORACLE, "activity (bits/spike)"),
            (list(BEHAVIOUR_METRICS), CHANCE, "behaviour decoded (accuracy, R²)"),
        ]):  # fmt: skip
            ax = fig.add_subplot(grid[i, j])
            heatmap(ax, table, backbone, rows, labels, tasks, reference, f"{name} MtM (prompted): {what}",
                    show_rows=j == 0)  # fmt: skip
            for c, task in enumerate(tasks):
                own = OWN_PROMPTS.get(task)
                if own in rows:
                    ax.add_patch(Rectangle((c - 0.5, rows.index(own) - 0.5), 1, 1, fill=False, edgecolor="#d9822b",
                                           linewidth=2.2))  # fmt: skip
    n_sessions = int(table["n_sessions"].max()) if len(table) else 0
    if setting is None:
        which = "(none in this run)"
    elif setting == "single":
        which = "trained on each session alone"
    else:
        which = f"pretrained on {pretrain_size(setting)} sessions and finetuned on each held-out session"
    title(fig, f"Prompt tokens at inference ({n_sessions} sessions)", demo=demo)
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
