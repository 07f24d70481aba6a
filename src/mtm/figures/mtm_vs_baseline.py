"""MtM against its backbone's baseline, session by session (MtM's Fig. 2C).

One panel per task: each point is one session, at (the baseline's value, MtM's value), for
models trained on that session alone; NDT1's baseline is temporal masking, NDT2's random-token
masking, and MtM is the prompted model. Points above the diagonal are sessions where MtM is
better; each panel says in how many.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

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
from mtm.vocabulary import BASELINE_SCHEMES, TARGET_METRICS, TASKS

MTM = "mtm-prompt"
TASK_METRICS = {**{task: "bps" for task in TASKS}, **TARGET_METRICS}
COLOURS = {"ndt1": "#2f6db5", "ndt2": "#d9822b"}
PAIR_COLUMNS = ("backbone", "task", "metric", "eid", "baseline", "mtm")


def paired_sessions(metrics: pd.DataFrame, *, setting: str = "single") -> pd.DataFrame:
    """Per backbone, task and session: the baseline's and MtM's value (PAIR_COLUMNS), for the
    sessions where both are finite."""
    m = metrics[(metrics["setting"] == setting) & (metrics["metric"] == metrics["task"].map(TASK_METRICS))]
    pairs = []
    for backbone, baseline in BASELINE_SCHEMES.items():
        mine = m[m["backbone"] == backbone]
        wide = mine.pivot_table(index=["task", "metric", "eid"], columns="scheme", values="value", aggfunc="mean")
        if baseline not in wide or MTM not in wide:
            continue
        both = wide[[baseline, MTM]].dropna().reset_index()
        pairs.append(both.rename(columns={baseline: "baseline", MTM: "mtm"}).assign(backbone=backbone))
    if not pairs:
        return pd.DataFrame(columns=list(PAIR_COLUMNS))
    return pd.concat(pairs, ignore_index=True)[list(PAIR_COLUMNS)]


def plot_mtm_vs_baseline(metrics_path: Path, *, png: Path, pdf: Path, caption: Path, demo: bool) -> None:
    """Draw the per-session comparison from the metrics table; write png, pdf and caption."""
    pairs = paired_sessions(pd.read_parquet(metrics_path))
    fig = new_figure(3.5 * max(len(TASKS), len(TARGET_METRICS)), 7.6)
    panels = task_axes(fig, [list(TASKS), list(TARGET_METRICS)])
    for task, ax in panels.items():
        here = pairs[pairs["task"] == task]
        ax.set_title(TASK_LABELS.get(task, task), fontweight="bold", fontsize=10)
        metric = METRIC_LABELS.get(TASK_METRICS[task], TASK_METRICS[task])
        ax.set_xlabel(f"baseline ({metric})", fontsize=9)
        ax.set_ylabel(f"MtM ({metric})", fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
        if here.empty:
            ax.text(0.5, 0.5, "no sessions", ha="center", va="center", transform=ax.transAxes)
            continue
        values = here[["baseline", "mtm"]].to_numpy()
        lo, hi = values.min(), values.max()
        pad = 0.08 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", linewidth=1, zorder=0)
        notes = []
        for backbone, group in here.groupby("backbone", sort=False):
            label = BACKBONE_LABELS.get(backbone, backbone)
            ax.scatter(group["baseline"], group["mtm"], s=28, color=COLOURS.get(backbone, "0.3"),
                       edgecolor="white", linewidth=0.5, label=label)  # fmt: skip
            notes.append(f"{label}: MtM better in {int((group['mtm'] > group['baseline']).sum())}/{len(group)}")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        ax.text(0.03, 0.97, "\n".join(notes), transform=ax.transAxes, va="top", fontsize=8)
    handles = [h for ax in panels.values() for h in ax.get_legend_handles_labels()[0]]
    labels = [lab for ax in panels.values() for lab in ax.get_legend_handles_labels()[1]]
    unique = dict(zip(labels, handles))
    if unique:
        fig.legend(unique.values(), unique.keys(), loc="outside lower center", ncol=len(unique), frameon=False)
    n_sessions = pairs["eid"].nunique()
    baselines = ", ".join(f"{BACKBONE_LABELS[b]}: {SCHEME_LABELS[s].lower()}" for b, s in BASELINE_SCHEMES.items())
    title(fig, f"MtM (prompted) against the baseline, per session ({n_sessions} sessions)", demo=demo)
    text = (
        f"MtM against its backbone's baseline per session (MtM Fig. 2C), for models trained on each of "
        f"{n_sessions} sessions alone. Each point is a session: x the baseline's ({baselines}), y the "
        "prompted MtM model's value, on the test trials; bits/spike for the activity tasks, accuracy (choice, "
        "block prior) or R² (wheel speed, whisker motion energy) of the decoders for behaviour. Above the "
        "diagonal, MtM is better; each panel counts those sessions."
    )
    save_figure(fig, png=png, pdf=pdf, caption=caption, text=text, demo=demo)
