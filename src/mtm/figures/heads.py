"""Supervised heads against the rate-based decoders, per behaviour target: MtM's two decoding
protocols side by side.

One panel per target. For each model that has heads (by default NDT1's temporal baseline and
prompted MtM, trained on each session alone), two bars: the rate-based decoder (a linear decoder
of the predicted rates, its regularisation cross-validated on the train+val trials;
mtm.decoding) and the supervised head on the encoder's latents (trained on the train trials,
selected on val; mtm.supervised). Bars are means over sessions with their standard errors; each
session is a pair of dots joined by a line; the dashed line is chance on the same test trials.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mtm.figures.output import (
    BACKBONE_LABELS,
    METRIC_LABELS,
    SCHEME_LABELS,
    SCHEME_ORDER,
    TASK_LABELS,
    new_figure,
    save_figure,
    title,
)
from mtm.io import write_text
from mtm.vocabulary import TARGET_METRICS

PROTOCOLS = {"rates": "rate decoder", "head": "supervised head"}
COLOURS = {"rates": "#9aa5b1", "head": "#2f6db5"}
PAIR_COLUMNS = ("backbone", "scheme", "setting", "task", "eid", "rates", "head", "chance")
TABLE_COLUMNS = ("backbone", "scheme", "setting", "task", "protocol", "mean", "sem", "n_sessions", "chance")


def head_pairs(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per model (backbone, scheme, setting), target and session with a head: the rate decoder's,
    the head's and chance's values (PAIR_COLUMNS); NaN where a protocol could not decode."""
    m = metrics[metrics["task"].isin(list(TARGET_METRICS))]
    metric = m["task"].map(TARGET_METRICS)
    protocol = np.select(
        [m["metric"] == metric, m["metric"] == "head_" + metric, m["metric"] == "chance_" + metric],
        ["rates", "head", "chance"],
        default="",
    )
    keys = ["backbone", "scheme", "setting", "task", "eid"]
    wide = m.assign(protocol=protocol)[protocol != ""].pivot_table(
        index=keys, columns="protocol", values="value", aggfunc="mean", dropna=False
    )
    if "head" not in wide:
        return pd.DataFrame(columns=list(PAIR_COLUMNS))
    wide = wide.reindex(columns=["rates", "head", "chance"])
    has_head = m[m["metric"] == "head_" + metric].set_index(keys).index.unique()
    return wide.loc[wide.index.isin(has_head)].reset_index()[list(PAIR_COLUMNS)]


def heads_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard error and sessions of each protocol per model and target (TABLE_COLUMNS)."""
    rows = []
    for (backbone, scheme, setting, task), group in pairs.groupby(["backbone", "scheme", "setting", "task"], sort=False):
        for protocol in PROTOCOLS:
            values = group[protocol].dropna()
            rows.append((backbone, scheme, setting, task, protocol, values.mean(), values.sem(), len(values),
                         group["chance"].mean()))  # fmt: skip
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def _model_label(backbone: str, scheme: str, setting: str, settings: int) -> str:
    label = f"{BACKBONE_LABELS.get(backbone, backbone)}\n{SCHEME_LABELS.get(scheme, scheme)}"
    return label + (f"\n{setting}" if settings > 1 else "")


def plot_heads(metrics_path: Path, *, png: Path, pdf: Path, caption: Path, table_csv: Path, demo: bool) -> None:
    """Draw the comparison from the metrics table; write png, pdf, caption and the table as CSV."""
    pairs = head_pairs(pd.read_parquet(metrics_path))
    order = {scheme: i for i, scheme in enumerate(SCHEME_ORDER)}
    models = sorted(
        pairs[["backbone", "scheme", "setting"]].drop_duplicates().itertuples(index=False),
        key=lambda m: (m.setting != "single", m.setting, m.backbone, order.get(m.scheme, len(order))),
    )
    n_settings = pairs["setting"].nunique()
    tasks = [task for task in TARGET_METRICS if task in set(pairs["task"])] or list(TARGET_METRICS)
    fig = new_figure(3.6 * len(tasks), 4.6)
    axes = np.atleast_1d(fig.subplots(1, len(tasks)))
    width = 0.38
    for ax, task in zip(axes, tasks):
        ax.set_title(TASK_LABELS.get(task, task), fontweight="bold", fontsize=10)
        ax.set_ylabel(METRIC_LABELS[TARGET_METRICS[task]], fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
        here = pairs[pairs["task"] == task]
        if here.empty:
            ax.text(0.5, 0.5, "no heads", ha="center", va="center", transform=ax.transAxes)
            continue
        for i, model in enumerate(models):
            group = here[(here["backbone"] == model.backbone) & (here["scheme"] == model.scheme)
                         & (here["setting"] == model.setting)]  # fmt: skip
            for j, protocol in enumerate(PROTOCOLS):
                values = group[protocol].dropna()
                x = i + (j - 0.5) * width
                ax.bar(x, values.mean() if len(values) else np.nan, width * 0.9, yerr=values.sem() if len(values) > 1 else None,
                       color=COLOURS[protocol], label=PROTOCOLS[protocol], capsize=2, error_kw={"linewidth": 0.8})  # fmt: skip
            for _, session in group.iterrows():
                ax.plot([i - width / 2, i + width / 2], [session["rates"], session["head"]], color="0.25",
                        linewidth=0.6, marker="o", markersize=2.5, alpha=0.7)  # fmt: skip
            chance = group["chance"].mean()
            ax.hlines(chance, i - width, i + width, colors="0.3", linestyles="dashed", linewidth=1,
                      label="chance")  # fmt: skip
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels([_model_label(*m, n_settings) for m in models], fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        fig.legend(unique.values(), unique.keys(), loc="outside lower center", ncol=len(unique), frameon=False)
    table = heads_table(pairs)
    write_text(table_csv, table.to_csv(index=False))
    n_sessions = pairs["eid"].nunique()
    title(fig, f"Supervised heads against rate decoders ({n_sessions} sessions)", demo=demo)
    summary = "; ".join(
        f"{BACKBONE_LABELS.get(r.backbone, r.backbone)} {r.scheme} {r.setting} {TASK_LABELS.get(r.task, r.task)} "
        f"{PROTOCOLS[r.protocol]} {r.mean:.3f} ± {r.sem:.3f} (chance {r.chance:.3f}, n={r.n_sessions})"
        for r in table.itertuples()
    )
    text = (
        "Behaviour decoding by MtM's two protocols, on the test trials of each session. Rate decoder: a "
        "linear decoder of the model's predicted rates, its regularisation cross-validated on the train+val "
        "trials. Supervised head: a linear map from the encoder's latents of all bins, trained on the train "
        "trials and selected on the val trials (the encoder frozen, trained, or unfrozen gradually, as "
        "configured). Accuracy for choice and block prior, R² over trials x bins for wheel speed and whisker "
        "motion energy; bars are means over sessions ± standard error, dots and lines single sessions, dashed "
        f"lines chance. {summary}."
    )
    save_figure(fig, png=png, pdf=pdf, caption=caption, text=text, demo=demo)
