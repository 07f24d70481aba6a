"""What every figure shares: the demo notice, atomic PNG + PDF + caption output, model labels."""

from __future__ import annotations

import textwrap
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mtm.io import atomic_path, write_text

DEMO_NOTICE = "Synthetic demo data (IBL ALF layout; statistics from real IBL units)"
DEMO_COLOUR = "firebrick"
DPI = 150

BACKBONE_LABELS = {"ndt1": "NDT1", "ndt2": "NDT2"}
SCHEME_LABELS = {
    "temporal": "Temporal (baseline)",
    "random-token": "Random token (baseline)",
    "random": "Random entries",
    "neuron": "Neuron",
    "causal": "Causal",
    "intra-region": "Intra-region",
    "inter-region": "Inter-region",
    "mtm": "MtM (not prompted)",
    "mtm-prompt": "MtM (prompted)",
}
SCHEME_ORDER = tuple(SCHEME_LABELS)
TASK_LABELS = {
    "co-smoothing": "co-smoothing",
    "forward-prediction": "forward prediction",
    "intra-region": "intra-region",
    "inter-region": "inter-region",
    "choice": "choice",
    "block": "block prior (pre-stimulus)",
    "block-whole-trial": "block prior (whole trial)",
    "wheel-speed": "wheel speed",
    "whisker-motion-energy": "whisker motion energy",
}


def task_axes(fig: Figure, rows: list[list[str]]) -> dict:
    """One panel per task, a row of the grid per list in `rows` (e.g. activity tasks, then
    behaviour targets), as wide as the longest row; cells past a shorter row's end are hidden."""
    n_cols = max(len(row) for row in rows)
    grid = fig.subplots(len(rows), n_cols, squeeze=False)
    axes = {}
    for row, tasks in enumerate(rows):
        for col in range(n_cols):
            if col < len(tasks):
                axes[tasks[col]] = grid[row, col]
            else:
                grid[row, col].set_visible(False)
    return axes


def tick_label(task: str) -> str:
    """A task's label wrapped for a column of a panel with several tasks side by side."""
    return textwrap.fill(TASK_LABELS.get(task, task), 14)
METRIC_LABELS = {"bps": "bits/spike", "accuracy": "accuracy", "r2": "R²"}


def new_figure(width: float, height: float) -> Figure:
    """A figure drawn without pyplot (no global state, no display needed)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def title(fig: Figure, text: str, *, demo: bool) -> None:
    """The figure's title; demo figures say on their face that the data are synthetic."""
    if demo:
        fig.suptitle(f"{DEMO_NOTICE}\n{text}", color=DEMO_COLOUR, fontweight="bold", fontsize=12)
    else:
        fig.suptitle(text, fontweight="bold", fontsize=12)


def save_figure(fig: Figure, *, png: Path, pdf: Path, caption: Path, text: str, demo: bool) -> None:
    """Write `png`, `pdf` and the caption `text` (with the demo notice first), each atomically."""
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    with atomic_path(pdf) as tmp:
        fig.savefig(tmp, format="pdf", metadata={"CreationDate": None})  # reruns give identical bytes
    write_text(caption, (f"{DEMO_NOTICE}. " if demo else "") + text.strip() + "\n")
