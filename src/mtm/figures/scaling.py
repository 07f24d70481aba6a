"""Multi-session scaling: each task's metric against the number of pretraining sessions.

On the held-out sessions only: a model trained on the session alone ("alone", the paper's
1-session point) and models pretrained on n other sessions then finetuned on it, for each
pretraining scheme of each backbone (MtM against the backbone's baseline). Points are means over
the held-out sessions with their standard errors; the grey dotted line is the oracle (activity,
synthetic data only) or the decoders' chance level (behaviour).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mtm.figures.mtm_vs_baseline import COLOURS, MTM, TASK_METRICS
from mtm.figures.output import (
    BACKBONE_LABELS,
    METRIC_LABELS,
    SCHEME_LABELS,
    TASK_LABELS,
    new_figure,
    save_figure,
    task_axes,
    title,
)
from mtm.vocabulary import TARGET_METRICS, TASKS

SCALING_COLUMNS = ("backbone", "scheme", "n_pretrain", "task", "metric", "mean", "sem", "n_sessions")


def pretrain_size(setting: str) -> int:
    """Sessions a model was pretrained on: 0 for "single" (the session alone), n for "pretrain-n"."""
    return 0 if setting == "single" else int(setting.removeprefix("pretrain-"))


def scaling_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """SCALING_COLUMNS over the held-out sessions (those with finetuned models), for the schemes
    each backbone was pretrained with; scheme "reference" holds the oracle or chance level."""
    finetuned = metrics["setting"].str.startswith("pretrain-")
    heldout = set(metrics.loc[finetuned, "eid"])
    pretrained = set(map(tuple, metrics.loc[finetuned, ["backbone", "scheme"]].drop_duplicates().to_numpy()))
    backbones = {backbone for backbone, _ in pretrained}
    m = metrics[metrics["eid"].isin(heldout) & metrics["backbone"].isin(backbones)].copy()
    m["pair"] = list(zip(m["backbone"], m["scheme"]))
    main = m["metric"] == m["task"].map(TASK_METRICS)
    reference_metric = {t: "oracle_bps" if metric == "bps" else f"chance_{metric}" for t, metric in TASK_METRICS.items()}
    reference = m["metric"] == m["task"].map(reference_metric)
    rows = pd.concat([
        m[main & m["pair"].isin(pretrained)],
        m[reference].assign(scheme="reference", metric=lambda t: t["task"].map(TASK_METRICS)),
    ])  # fmt: skip
    if rows.empty:
        return pd.DataFrame(columns=list(SCALING_COLUMNS))
    rows["n_pretrain"] = rows["setting"].map(pretrain_size)
    keys = ["backbone", "scheme", "n_pretrain", "task", "metric"]
    per_session = rows.groupby([*keys, "eid"])["value"].mean().dropna()
    grouped = per_session.groupby(keys)
    table = pd.DataFrame({"mean": grouped.mean(), "sem": grouped.sem(), "n_sessions": grouped.size()}).reset_index()
    return table[list(SCALING_COLUMNS)]


def plot_scaling(metrics_path: Path, *, png: Path, pdf: Path, caption: Path, demo: bool) -> None:
    """Draw the scaling figure from the metrics table; write png, pdf and caption."""
    table = scaling_table(pd.read_parquet(metrics_path))
    sizes = sorted(set(table["n_pretrain"]))
    x_of = {n: i for i, n in enumerate(sizes)}
    fig = new_figure(3.5 * max(len(TASKS), len(TARGET_METRICS)), 7.6)
    panels = task_axes(fig, [list(TASKS), list(TARGET_METRICS)])
    curves = table[table["scheme"] != "reference"]
    for task, ax in panels.items():
        ax.set_title(TASK_LABELS.get(task, task), fontweight="bold", fontsize=10)
        ax.set_ylabel(METRIC_LABELS.get(TASK_METRICS[task], TASK_METRICS[task]), fontsize=9)
        ax.set_xticks(range(len(sizes)), ["alone" if n == 0 else str(n) for n in sizes])
        ax.set_xlabel("pretraining sessions", fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
        if curves[curves["task"] == task].empty:
            ax.text(0.5, 0.5, "not evaluated in this run", ha="center", va="center", transform=ax.transAxes,
                    color="0.5", fontsize=9)  # fmt: skip
        reference = table[(table["scheme"] == "reference") & (table["task"] == task)]
        if len(reference):
            ax.axhline(reference["mean"].mean(), color="0.55", linestyle=":", linewidth=1.2)
        for (backbone, scheme), curve in curves[curves["task"] == task].groupby(["backbone", "scheme"]):
            curve = curve.sort_values("n_pretrain")
            ax.errorbar([x_of[n] for n in curve["n_pretrain"]], curve["mean"], yerr=curve["sem"].fillna(0.0),
                        color=COLOURS.get(backbone, "0.3"), linestyle="-" if scheme == MTM else "--",
                        marker="o" if scheme == MTM else "s", markersize=4, capsize=2, linewidth=1.4,
                        label=f"{BACKBONE_LABELS.get(backbone, backbone)} {SCHEME_LABELS.get(scheme, scheme)}")  # fmt: skip
    labels = {}
    for ax in panels.values():
        for handle, label in zip(*ax.get_legend_handles_labels()):
            labels.setdefault(label, handle)
    if labels:
        fig.legend(labels.values(), labels.keys(), loc="outside lower center", ncol=min(4, len(labels)), frameon=False)
    n_sessions = int(table["n_sessions"].max()) if len(table) else 0
    title(fig, f"Scaling with the number of pretraining sessions ({n_sessions} held-out sessions)", demo=demo)
    text = (
        f"Each task's test metric on the {n_sessions} held-out sessions against the number of sessions the model "
        "was pretrained on before finetuning on the held-out session ('alone': trained on that session only). "
        "Solid lines: MtM with prompts; dashed: the backbone's baseline (NDT1 temporal, NDT2 random-token); "
        "means with standard errors over the held-out sessions. Grey dotted line: the true rates' bits/spike "
        "(activity; synthetic data only) or the decoders' chance level (behaviour). "
        f"Pretraining sizes: {', '.join(str(n) for n in sizes if n)}."
    )
    save_figure(fig, png=png, pdf=pdf, caption=caption, text=text, demo=demo)
