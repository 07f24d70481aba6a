"""The single-session ablation, MtM's Table 1: every masking scheme x every task, per backbone.

For each backbone, one row of two heatmaps: the activity tasks in bits/spike (co-smoothing,
forward prediction, intra-region, inter-region) and behaviour decoding from the predicted rates
(choice and block accuracy, wheel speed and whisker motion energy R²). Each cell is the mean over
sessions of the models trained on one session alone. Below the schemes, a reference row: the
true rates' bits/spike (oracle, where the data have true rates) and the decoders' chance level.
Colour ranks the schemes within each column (the tasks' scales differ); the best is in bold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from mtm.figures.output import (
    BACKBONE_LABELS,
    SCHEME_LABELS,
    SCHEME_ORDER,
    new_figure,
    save_figure,
    tick_label,
    title,
)
from mtm.io import write_text
from mtm.vocabulary import TARGET_METRICS, TASKS

ORACLE, CHANCE, GLM = "oracle", "chance", "glm"
REFERENCE_LABELS = {GLM: "smoothing + GLM", ORACLE: "oracle", CHANCE: "chance"}
TABLE_COLUMNS = ("backbone", "row", "task", "metric", "mean", "sem", "n_sessions")


def ablation_table(metrics: pd.DataFrame, *, setting: str = "single", rows: str = "scheme") -> pd.DataFrame:
    """Table 1 in numbers (TABLE_COLUMNS): per backbone, row and task, the mean, standard error
    and number of sessions with a finite value. A row is a value of the `rows` column (a scheme;
    or a prompt, for a prompt ablation), or ORACLE (activity tasks: the true rates' bits/spike)
    or CHANCE (behaviour: the decoders' chance level), or GLM (the smoothing + Poisson GLM,
    mtm.glm, on the same sessions); a session's reference value is the same for every model of
    it, and counts once."""
    m = metrics[(metrics["setting"] == setting) & (metrics["backbone"] != "glm")]
    glm = metrics[(metrics["backbone"] == "glm") & metrics["eid"].isin(set(m["eid"])) & (metrics["metric"] == "bps")]
    glm = pd.concat([glm.assign(backbone=backbone) for backbone in m["backbone"].unique()] or [glm])
    activity = m[m["task"].isin(TASKS)]
    behaviour = m[m["task"].isin(TARGET_METRICS)]
    wanted = behaviour["metric"] == behaviour["task"].map(TARGET_METRICS)
    chance = behaviour["metric"] == "chance_" + behaviour["task"].map(TARGET_METRICS)
    parts = [
        activity[activity["metric"] == "bps"].assign(row=lambda t: t[rows]),
        behaviour[wanted].assign(row=lambda t: t[rows]),
        activity[activity["metric"] == "oracle_bps"].assign(row=ORACLE, metric="bps"),
        glm.assign(row=GLM),
        behaviour[chance].assign(row=CHANCE, metric=lambda t: t["metric"].str.removeprefix("chance_")),
    ]
    table = pd.concat(parts, ignore_index=True)
    if table.empty:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    keys = ["backbone", "row", "task", "metric"]
    per_session = table.groupby([*keys, "eid"])["value"].mean().dropna()  # references: once per session
    grouped = per_session.groupby(keys)
    table = pd.DataFrame({"mean": grouped.mean(), "sem": grouped.sem(), "n_sessions": grouped.size()}).reset_index()
    return table[list(TABLE_COLUMNS)]


def plot_ablation(
    metrics_path: Path, *, png: Path, pdf: Path, caption: Path, table_csv: Path, demo: bool, setting: str = "single"
) -> None:
    """Draw the ablation figure of `setting` from the metrics table at `metrics_path`; write the
    figure (`png`, `pdf`), its `caption` and the table in numbers (`table_csv`), each atomically.
    setting "single" is MtM's Table 1; "pretrain-{n}" (the held-out sessions, finetuned after
    pretraining on n others) its Table 2."""
    table = ablation_table(pd.read_parquet(metrics_path), setting=setting)
    fig = draw_tables(table, order=SCHEME_ORDER, row_labels=SCHEME_LABELS)
    n_sessions = int(table["n_sessions"].max()) if len(table) else 0
    if setting == "single":
        heading = f"Single-session masking ablation (MtM Table 1), mean over {n_sessions} sessions"
        what = (
            "Single-session ablation (MtM, Table 1): a model trained on each session alone with each masking "
            "scheme (rows), per backbone"
        )
    else:
        n = setting.removeprefix("pretrain-")
        heading = f"Pretrained on {n} sessions, finetuned on each held-out session (MtM Table 2), {n_sessions} sessions"
        what = (
            f"Multi-session models (MtM, Table 2): pretrained on {n} sessions with each scheme (rows), then "
            f"finetuned on each of {n_sessions} held-out sessions, per backbone"
        )
    title(fig, heading, demo=demo)
    text = (
        f"{what}; cells are means over up to {n_sessions} sessions of the test trials' "
        "bits/spike for the four activity tasks (co-smoothing with the neuron prompt, forward prediction of the "
        "last 200 ms, intra- and inter-region prediction), and of the accuracy (choice, "
        "block prior, from the pre-stimulus bins or the whole trial) or R² (wheel speed, whisker motion energy; per bin over test trials) of a decoder fitted "
        "on the predicted rates of the train and validation trials. Grey rows: the bits/spike of the true "
        "rates (oracle; synthetic data only) and the decoders' chance level. Colour ranks the schemes within "
        f"each column, the best in bold. Numbers: {table_csv.name}."
    )
    save_figure(fig, png=png, pdf=pdf, caption=caption, text=text, demo=demo)
    write_text(table_csv, table.to_csv(index=False))


PANELS = (  # the two heatmaps of a backbone: (tasks, reference rows, heading)
    (list(TASKS), (GLM, ORACLE), "activity (bits/spike)"),
    (list(TARGET_METRICS), (CHANCE,), "behaviour decoded from predicted rates (accuracy, R²)"),
)


def draw_tables(
    table: pd.DataFrame, *, order: tuple[str, ...], row_labels: dict[str, str], outline: dict[str, str] | None = None
) -> Figure:
    """A figure of `table` (TABLE_COLUMNS): per backbone, one row of the PANELS heatmaps, the
    table's rows in `order` and named by `row_labels`. outline: task -> the row to outline in
    its column (e.g. the prompt a task is evaluated with)."""
    backbones = [b for b in BACKBONE_LABELS if b in set(table["backbone"])]
    n_rows = {b: len(table_rows(table, b, order)) + len(references(table, b, PANELS[0][1])) for b in backbones}
    fig = new_figure(13.0, 1.2 + sum(0.42 * n + 0.9 for n in n_rows.values()) if backbones else 2.5)
    if not backbones:
        fig.text(0.5, 0.5, "no results of this kind in this run", ha="center", va="center")
        return fig
    grid = fig.add_gridspec(len(backbones), len(PANELS), height_ratios=[n_rows[b] for b in backbones])
    for i, backbone in enumerate(backbones):
        rows = table_rows(table, backbone, order)
        labels = [row_labels.get(r, r) for r in rows]
        for j, (tasks, reference_rows, what) in enumerate(PANELS):
            ax = fig.add_subplot(grid[i, j])
            heatmap(ax, table, backbone, rows, labels, tasks, references(table, backbone, reference_rows),
                    f"{BACKBONE_LABELS[backbone]}: {what}", show_rows=j == 0)  # fmt: skip
            for c, task in enumerate(tasks):
                if (outline or {}).get(task) in rows:
                    ax.add_patch(Rectangle((c - 0.5, rows.index(outline[task]) - 0.5), 1, 1, fill=False,
                                           edgecolor="#d9822b", linewidth=2.2))  # fmt: skip
    return fig


def table_rows(table: pd.DataFrame, backbone: str, order: tuple[str, ...] = SCHEME_ORDER) -> list[str]:
    """The rows of `backbone` other than the references, in `order` (then any others, sorted)."""
    present = set(table.loc[table["backbone"] == backbone, "row"]) - set(REFERENCE_LABELS)
    return [s for s in order if s in present] + sorted(present - set(order))


def references(table: pd.DataFrame, backbone: str, candidates: tuple[str, ...]) -> list[str]:
    """The reference rows among `candidates` that `backbone` has (the oracle and chance always)."""
    present = set(table.loc[table["backbone"] == backbone, "row"])
    return [r for r in candidates if r in present or r != GLM]


def heatmap(ax, table: pd.DataFrame, backbone: str, schemes: list[str], labels: list[str], tasks: list[str],
            reference_rows: list[str], heading: str, *, show_rows: bool) -> None:  # fmt: skip
    """Rows: `schemes` (named `labels`), then the grey reference rows; columns: tasks. Colours
    rank each column's schemes; the best is in bold."""
    cells = table[table["backbone"] == backbone].set_index(["row", "task"])["mean"]
    rows = [*schemes, *reference_rows]
    values = np.array([[cells.get((row, task), np.nan) for task in tasks] for row in rows])
    model = values[: len(schemes)]
    lo, hi = np.nanmin(model, axis=0, initial=np.inf), np.nanmax(model, axis=0, initial=-np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        rank = np.where(hi > lo, (model - lo) / (hi - lo), 0.5)
    shade = np.vstack([rank, np.full((len(reference_rows), len(tasks)), np.nan)])
    ax.imshow(np.ma.masked_invalid(shade), cmap="Blues", vmin=-0.15, vmax=1.15, aspect="auto")
    ax.axhspan(len(schemes) - 0.5, len(rows) - 0.5, color="0.88")
    ax.axhline(len(schemes) - 0.5, color="0.3", linewidth=1.2)
    best = np.nanargmax(np.where(np.isnan(model), -np.inf, model), axis=0)
    for r in range(values.shape[0]):
        for c in range(values.shape[1]):
            v = values[r, c]
            dark = r < len(schemes) and np.isfinite(shade[r, c]) and shade[r, c] > 0.6
            ax.text(c, r, "n/a" if np.isnan(v) else f"{v:.3f}", ha="center", va="center", fontsize=9,
                    color="white" if dark else "black",
                    fontweight="bold" if r == best[c] and np.isfinite(v) and r < len(schemes) else "normal")  # fmt: skip
    ax.set_xticks(range(len(tasks)), [tick_label(t) for t in tasks], fontsize=9)
    ax.xaxis.tick_top()
    shown = labels if show_rows else [""] * len(labels)
    ax.set_yticks(range(len(rows)), [*shown, *(REFERENCE_LABELS[r] if show_rows else "" for r in reference_rows)],
                  fontsize=9)  # fmt: skip
    ax.tick_params(length=0)
    ax.set_title(heading, loc="left", fontweight="bold", fontsize=10)
    for spine in ax.spines.values():
        spine.set_visible(False)
