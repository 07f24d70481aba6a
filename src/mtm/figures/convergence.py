"""Did training converge? Every trained model's validation loss by epoch, and why it stopped.

One panel per stage (trained on a session alone, pretrained, finetuned). Each line is one model
(one session and seed): its validation loss (Poisson NLL per masked entry) minus its lowest,
so curves of sessions with different rates share an axis; the dot marks the kept epoch (the
lowest loss) and the line ends where training stopped, on the convergence criterion
(`mtm.config.training.TrainConfig.patience`) or at the epoch cap.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mtm.figures.output import BACKBONE_LABELS, SCHEME_LABELS, new_figure, save_figure, title
from mtm.io import write_text

STAGES = {"single": "trained on one session alone", "pretrain": "pretrained", "finetune": "finetuned"}
COLOURS = {"temporal": "#7f7f7f", "random-token": "#7f7f7f", "mtm-prompt": "#2f6db5", "mtm": "#17becf"}
RUN_COLUMNS = ("stage", "backbone", "scheme", "model", "epochs_run", "epoch_cap", "best_epoch", "converged", "stop_reason")


def read_runs(model_dirs: list[Path]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """(RUN_COLUMNS per trained model, model -> its log.csv); skipped models are left out.
    model_dirs: folders holding config.json and log.csv."""
    runs, logs = [], {}
    for folder in map(Path, model_dirs):
        saved = json.loads((folder / "config.json").read_text())
        if "skipped" in saved:
            continue
        meta = saved["metadata"]
        training = meta["training"]
        stage = meta["stage"]
        name = str(folder)
        logs[name] = pd.read_csv(folder / "log.csv")
        runs.append((stage, training.get("backbone", "ndt1"), training["scheme"], name, meta.get("epochs_run", len(logs[name])),
                     training["epochs"], meta["best_epoch"], bool(meta.get("converged", False)),
                     meta.get("stop_reason", "epoch cap")))  # fmt: skip
    return pd.DataFrame(runs, columns=list(RUN_COLUMNS)), logs


def plot_convergence(model_dirs: list[Path], *, png: Path, pdf: Path, caption: Path, table_csv: Path, demo: bool) -> None:
    """Draw every model's validation curve by stage; write the figure, caption and the runs table."""
    runs, logs = read_runs(model_dirs)
    write_text(table_csv, runs.to_csv(index=False))
    stages = [s for s in STAGES if s in set(runs["stage"])] or list(STAGES)[:1]
    fig = new_figure(4.6 * len(stages) + 0.6, 4.2)
    axes = np.atleast_1d(fig.subplots(1, len(stages)))
    for ax, stage in zip(axes, stages):
        mine = runs[runs["stage"] == stage]
        for run in mine.itertuples():
            curve = logs[run.model]
            excess = curve["val_loss"] - curve["val_loss"].min()
            colour = COLOURS.get(run.scheme, "0.3")
            ax.plot(curve["epoch"], excess, color=colour, linewidth=0.9, alpha=0.75)
            ax.plot([run.best_epoch], [0.0], "o", color=colour, markersize=3)
        ax.set_yscale("symlog", linthresh=1e-4)
        ax.set_xlabel("epoch", fontsize=9)
        ax.set_ylabel("validation loss − its minimum (nats per entry)", fontsize=8)
        converged = int(mine["converged"].sum())
        ax.set_title(f"{STAGES[stage]}: {converged}/{len(mine)} converged", fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
    for scheme, colour in COLOURS.items():
        if scheme in set(runs["scheme"]):
            axes[0].plot([], [], color=colour, label=SCHEME_LABELS.get(scheme, scheme))
    if len(runs):
        axes[0].legend(fontsize=8, frameon=False)
    title(fig, "Training to convergence: validation loss by epoch", demo=demo)
    lines = [
        f"{STAGES[stage]}, {BACKBONE_LABELS.get(b, b)} {SCHEME_LABELS.get(s, s)}: {int(g['converged'].sum())}/{len(g)} "
        f"converged, {int(g['epochs_run'].min())}-{int(g['epochs_run'].max())} epochs (cap {int(g['epoch_cap'].max())}), "
        f"kept epochs {int(g['best_epoch'].min())}-{int(g['best_epoch'].max())}"
        for (stage, b, s), g in runs.groupby(["stage", "backbone", "scheme"], sort=False)
    ]
    text = (
        "Every trained model's validation loss (Poisson NLL per masked entry, on fixed validation masks) by epoch, "
        "minus its lowest value; the dot is the kept epoch. A run converged when its validation loss had not gone "
        "lower for `patience` epochs (with the plateau schedule: after the last cut of the learning rate); else it "
        "stopped at the epoch cap.\n" + "\n".join(lines)
    )
    save_figure(fig, png=png, pdf=pdf, caption=caption, text=text, demo=demo)
