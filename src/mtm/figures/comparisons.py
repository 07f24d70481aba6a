"""The paper's claims as paired comparisons, each with a confidence interval over sessions.

Each comparison pairs two models session by session (a session's value: the mean over its
seeds) and shows, per task, every session's difference and the mean difference with its 95%
t-interval over sessions (`mtm.stats.paired_difference`); above zero, the first model is better.
Which comparisons exist follows from the metrics table:

    MtM vs baseline, alone         the prompted MtM against the backbone's baseline (NDT1
                                   temporal, NDT2 random-token), both trained on each session alone
    MtM vs baseline, pretrained    the same after pretraining on the most sessions and finetuning,
                                   on the held-out sessions
    more vs fewer sessions         pretrained on the most sessions against the fewest, finetuned,
                                   per pretraining scheme, on the held-out sessions
    pretrained vs alone            pretrained on the most sessions and finetuned, against
                                   trained on the held-out session alone
    MtM vs GLM                     the prompted MtM alone against the smoothing + Poisson GLM
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mtm.figures.output import BACKBONE_LABELS, SCHEME_LABELS, new_figure, save_figure, tick_label, title
from mtm.io import write_text
from mtm.stats import CONFIDENCE, paired_difference
from mtm.vocabulary import BASELINE_SCHEMES, TARGET_METRICS, TASKS

MTM = "mtm-prompt"
TASK_METRICS = {**{task: "bps" for task in TASKS}, **TARGET_METRICS}
GLM = {"backbone": "glm", "scheme": "smoothing", "setting": "single"}
COMPARISON_COLUMNS = (
    "comparison", "a", "b", "task", "metric", "n_sessions", "n_seeds", "mean", "ci_low", "ci_high", "n_better",
    "verdict",
)  # fmt: skip


def verdict(diff) -> str:
    """How a paired difference reads: which model is better, and how surely."""
    unsure = ", one session: no interval" if np.isnan(diff.low) else ", interval includes 0"
    if diff.n_better == diff.n_sessions:
        return "a better in every session" + ("" if diff.low > 0 else unsure)
    if diff.n_better == 0:
        return "b better in every session" + ("" if diff.high < 0 else unsure)
    if diff.low > 0:
        return "a better on average"
    if diff.high < 0:
        return "b better on average"
    return "no clear difference"


@dataclass(frozen=True)
class Comparison:
    """Model a against model b: selectors (backbone, scheme, setting) of the metrics table."""

    name: str
    a: dict[str, str]
    b: dict[str, str]


def model_label(selector: dict[str, str]) -> str:
    if selector["backbone"] == "glm":
        return "GLM"
    setting = selector["setting"]
    n = setting.removeprefix("pretrain-")
    where = "alone" if setting == "single" else f"pretrained on {n} session{'' if n == '1' else 's'}"
    scheme = SCHEME_LABELS.get(selector["scheme"], selector["scheme"]).removesuffix(" (baseline)")
    return f"{BACKBONE_LABELS.get(selector['backbone'], selector['backbone'])} {scheme}, {where}"


def pretrain_sizes(metrics: pd.DataFrame, backbone: str, scheme: str) -> list[int]:
    """The pretraining sizes with finetuned models of (backbone, scheme), ascending."""
    rows = metrics[(metrics["backbone"] == backbone) & (metrics["scheme"] == scheme)]
    settings = rows.loc[rows["setting"].str.startswith("pretrain-"), "setting"].unique()
    return sorted(int(s.removeprefix("pretrain-")) for s in settings)


def comparisons(metrics: pd.DataFrame) -> list[Comparison]:
    """The comparisons (module docstring) that the models in `metrics` allow."""
    found = []
    models = set(map(tuple, metrics[["backbone", "scheme", "setting"]].drop_duplicates().to_numpy()))

    def model(backbone: str, scheme: str, setting: str) -> dict[str, str] | None:
        return {"backbone": backbone, "scheme": scheme, "setting": setting} if (backbone, scheme, setting) in models else None

    for backbone, baseline in BASELINE_SCHEMES.items():
        pairs = [("alone", "single")]
        sizes = sorted(set(pretrain_sizes(metrics, backbone, MTM)) & set(pretrain_sizes(metrics, backbone, baseline)))
        if sizes:
            pairs.append((f"pretrained on {sizes[-1]}", f"pretrain-{sizes[-1]}"))
        for where, setting in pairs:
            a, b = model(backbone, MTM, setting), model(backbone, baseline, setting)
            if a and b:
                found.append(Comparison(f"MtM vs baseline, {where}", a, b))
    for backbone in BASELINE_SCHEMES:
        for scheme in (MTM, BASELINE_SCHEMES[backbone]):
            sizes = pretrain_sizes(metrics, backbone, scheme)
            if len(sizes) > 1:
                found.append(Comparison(
                    f"{sizes[-1]} vs {sizes[0]} pretraining sessions", model(backbone, scheme, f"pretrain-{sizes[-1]}"),
                    model(backbone, scheme, f"pretrain-{sizes[0]}"),
                ))  # fmt: skip
            alone = model(backbone, scheme, "single")
            if sizes and alone:
                found.append(Comparison(f"pretrained on {sizes[-1]} vs alone", model(backbone, scheme, f"pretrain-{sizes[-1]}"), alone))
    for backbone in BASELINE_SCHEMES:
        mtm = model(backbone, MTM, "single")
        if mtm and model(**GLM):
            found.append(Comparison("MtM vs GLM", mtm, GLM))
    return found


def comparison_table(metrics: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(COMPARISON_COLUMNS, one row per comparison and task; the per-session differences:
    comparison, task, eid, difference). Sessions are those where both models have a value;
    a pretrained model is compared on the held-out sessions only, where it exists."""
    rows, sessions = [], []
    wanted = metrics[metrics["metric"] == metrics["task"].map(TASK_METRICS)]
    for comparison in comparisons(metrics):
        values = [_per_session(wanted, selector) for selector in (comparison.a, comparison.b)]
        both = pd.concat(values, axis=1, keys=["a", "b"], join="inner")
        for task in TASK_METRICS:
            if task not in both.index.get_level_values("task"):
                continue
            here = both.loc[task]
            diff = paired_difference(here["a"]["value"].to_numpy(), here["b"]["value"].to_numpy())
            if diff.n_sessions == 0:
                continue
            n_seeds = int(max(here["a"]["n_seeds"].max(), here["b"]["n_seeds"].max()))
            rows.append((comparison.name, model_label(comparison.a), model_label(comparison.b), task, TASK_METRICS[task],
                         diff.n_sessions, n_seeds, diff.mean, diff.low, diff.high, diff.n_better, verdict(diff)))  # fmt: skip
            finite = here.dropna()
            for eid, d in zip(finite.index, finite["a"]["value"] - finite["b"]["value"]):
                sessions.append((comparison.name, model_label(comparison.a), task, eid, float(d)))
    table = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    per_session = pd.DataFrame(sessions, columns=["comparison", "a", "task", "eid", "difference"])
    return table, per_session


def _per_session(metrics: pd.DataFrame, selector: dict[str, str]) -> pd.DataFrame:
    """value (mean over seeds) and n_seeds per (task, eid) of one model."""
    rows = metrics
    for column, value in selector.items():
        rows = rows[rows[column] == value]
    return rows.groupby(["task", "eid"])["value"].agg(value="mean", n_seeds="count")


def plot_comparisons(metrics_path: Path, *, png: Path, pdf: Path, caption: Path, table_csv: Path, demo: bool) -> None:
    """Draw the comparisons from the metrics table; write the figure, caption and table."""
    table, per_session = comparison_table(pd.read_parquet(metrics_path))
    write_text(table_csv, table.to_csv(index=False))
    groups = list(dict.fromkeys(zip(table["comparison"], table["a"], table["b"])))
    fig = new_figure(14.0, 1.0 + 2.3 * max(len(groups), 1))
    axes = np.atleast_2d(fig.subplots(max(len(groups), 1), 2, squeeze=False))
    percent = round(100 * CONFIDENCE)
    for row, (name, a, b) in enumerate(groups):
        mine = table[(table["comparison"] == name) & (table["a"] == a)]
        dots = per_session[(per_session["comparison"] == name) & (per_session["a"] == a)]
        for ax, kind in zip(axes[row], ("activity", "behaviour")):
            tasks = [t for t in TASK_METRICS if (t in TASKS) == (kind == "activity") and t in set(mine["task"])]
            if not tasks:  # e.g. the GLM decodes no behaviour
                ax.set_axis_off()
                continue
            _draw_differences(ax, mine, dots, tasks)
            unit = "bits/spike" if kind == "activity" else "accuracy / R²"
            ax.set_ylabel(f"difference ({unit})", fontsize=8)
            ax.set_title(f"{a}  −  {b}", fontsize=9, loc="left")
    if not groups:
        axes[0, 0].text(0.5, 0.5, "no comparisons: the models of a pair are missing", ha="center", va="center")
    title(fig, f"The paper's comparisons: paired differences over sessions, mean and {percent}% CI", demo=demo)
    lines = [
        f"{name}: {a} minus {b} on {task} ({metric}): {mean:+.4f} [{low:+.4f}, {high:+.4f}], "
        f"better in {better}/{n} sessions ({seeds} seed{'s' if seeds > 1 else ''} each): "
        + said.replace("a better", "the first better").replace("b better", "the second better")
        for name, a, b, task, metric, n, seeds, mean, low, high, better, said in table.itertuples(index=False)
    ]
    text = (
        "The paper's comparisons, each as the paired difference of two models session by session (a session's "
        "value is the mean over its seeds): dots are sessions, the black marker the mean difference with its "
        f"{percent}% t-interval over sessions (none with one session). Above zero, the first model is better. "
        "Pretrained models are finetuned on, and compared on, the held-out sessions.\n" + "\n".join(lines)
    )
    save_figure(fig, png=png, pdf=pdf, caption=caption, text=text, demo=demo)


def _draw_differences(ax, table: pd.DataFrame, dots: pd.DataFrame, tasks: list[str]) -> None:
    ax.axhline(0.0, color="0.6", linewidth=1, zorder=0)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_xticks(range(len(tasks)), [tick_label(t) for t in tasks], fontsize=8)
    ax.set_xlim(-0.6, max(len(tasks), 1) - 0.4)
    for x, task in enumerate(tasks):
        values = dots.loc[dots["task"] == task, "difference"].to_numpy()
        jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(len(values))
        colours = np.where(values > 0, "#2f6db5", "#c0392b")
        ax.scatter(x + jitter, values, s=14, c=colours, alpha=0.7, linewidth=0)
        row = table[table["task"] == task].iloc[0]
        yerr = None if np.isnan(row["ci_low"]) else [[row["mean"] - row["ci_low"]], [row["ci_high"] - row["mean"]]]
        ax.errorbar([x + 0.3], [row["mean"]], yerr=yerr, fmt="o", color="black", markersize=4, capsize=3, linewidth=1.2)
        ax.annotate(f"{row['n_better']}/{row['n_sessions']}", (x, 1.0), xycoords=("data", "axes fraction"),
                    ha="center", va="top", fontsize=7, color="0.3")  # fmt: skip
