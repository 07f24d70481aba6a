"""The data-overview figure: which units and trials the model sees, per session.

Reads each session's QC outputs (units.parquet, trials.parquet, qc.json; see mtm.ibl.qc) and
draws one three-panel figure:
    A  selected units per Beryl region per session (heatmap, counts annotated)
    B  trials kept and the reason each other trial was excluded (stacked bars per session)
    C  firing rates of the selected units (log-spaced histogram, Hz)
with a caption text file stating the totals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from mtm.ibl.trials import EXCLUSION_REASONS
from mtm.figures.output import DEMO_NOTICE
from mtm.io import atomic_path, write_text

MAX_REGIONS = 25  # heatmap columns; rarer regions are pooled into one 'other' column
DPI = 150
CELL_W, ROW_H = 0.34, 0.3  # in, heatmap cell width and per-session row height

KEPT = "kept"
OUTCOME_LABELS = {
    KEPT: "kept",
    "missing_event": "missing event",
    "no_choice": "no choice",
    "rt_too_short": "reaction time too short",
    "rt_too_long": "reaction time too long",
    "trial_too_long": "trial too long",
}
# Fixed colours so a reason looks the same in every figure, whichever reasons occur.
OUTCOME_COLOURS = {
    KEPT: "#4a7ab5",
    "missing_event": "#b0b0b0",
    "no_choice": "#e6a03c",
    "rt_too_short": "#c94f4f",
    "rt_too_long": "#8e6bb8",
    "trial_too_long": "#7a5a3a",
}
UNUSABLE_COLOUR = "firebrick"
UNASSIGNED = ("root", "void")  # Cosmos labels of units without a brain region


@dataclass
class SessionSummary:
    """What the figure needs from one session's QC outputs.

    units: selected units only, columns beryl, cosmos (str), firing_rate (float, Hz)
    outcomes: trial counts indexed by 'kept' and exclusion reason (int, zero-count reasons absent)
    """

    eid: str
    usable: bool
    reason: str
    units: pd.DataFrame
    n_units_total: int
    outcomes: pd.Series

    @property
    def label(self) -> str:
        return self.eid[:8] + ("" if self.usable else " (unusable)")

    @property
    def n_trials(self) -> int:
        return int(self.outcomes.sum())

    @property
    def n_kept(self) -> int:
        return int(self.outcomes.get(KEPT, 0))


def read_session(folder: Path) -> SessionSummary:
    """Summarise `folder`/{qc.json, units.parquet, trials.parquet}."""
    qc = json.loads((folder / "qc.json").read_text())
    units = pd.read_parquet(folder / "units.parquet", columns=["beryl", "cosmos", "firing_rate", "selected"])
    reasons = pd.read_parquet(folder / "trials.parquet", columns=["exclusion_reason"])["exclusion_reason"]
    return SessionSummary(
        eid=str(qc.get("eid") or folder.name),
        usable=bool(qc["usable"]),
        reason=str(qc.get("reason", "")),
        units=units.loc[units["selected"].astype(bool), ["beryl", "cosmos", "firing_rate"]].reset_index(drop=True),
        n_units_total=len(units),
        outcomes=reasons.replace("", KEPT).value_counts(),
    )


@dataclass
class RegionTable:
    """Selected-unit counts per session and region, the heatmap's content.

    counts: (n_sessions, n_columns) int; columns are Beryl acronyms grouped by Cosmos division,
        then 'other' (the pooled rarer regions) when there are more than MAX_REGIONS regions
    divisions: (n_columns,) Cosmos acronym of each column ('' for 'other')
    n_regions: regions with at least one selected unit, shown or not
    """

    counts: pd.DataFrame
    divisions: list[str]
    n_regions: int

    @classmethod
    def build(cls, sessions: list[SessionSummary]) -> "RegionTable":
        units = pd.concat([s.units.assign(row=i) for i, s in enumerate(sessions)], ignore_index=True)
        counts = pd.crosstab(units["row"], units["beryl"]).reindex(range(len(sessions)), fill_value=0)
        totals = counts.sum().sort_values(ascending=False, kind="stable")
        shown = totals.index[:MAX_REGIONS]
        # A Beryl region lies in one Cosmos division; take the most frequent label to be safe.
        division = units.groupby("beryl")["cosmos"].agg(lambda c: c.mode().iloc[0])
        division_size = totals[shown].groupby(division[shown]).sum()
        # Larger divisions first; units outside the brain atlas ('root', 'void') last.
        order = sorted(
            shown, key=lambda r: (division[r] in UNASSIGNED, -division_size[division[r]], division[r], -totals[r], r)
        )
        table = counts[order]
        divisions = [str(division[r]) for r in order]
        if len(totals) > MAX_REGIONS:
            table = table.assign(other=counts[totals.index[MAX_REGIONS:]].sum(axis=1))
            divisions.append("")
        return cls(counts=table, divisions=divisions, n_regions=len(totals))


def plot_data_overview(session_dirs: list[Path], *, png: Path, pdf: Path, caption: Path, demo: bool) -> None:
    """Draw the data-overview figure of the sessions in `session_dirs` (in that order).

    Writes `png` (DPI dots per inch), `pdf` and the `caption` text, each atomically. `demo` puts
    DEMO_NOTICE on the figure and in the caption.
    """
    if not session_dirs:
        raise ValueError("plot_data_overview needs at least one session folder")
    sessions = [read_session(Path(d)) for d in session_dirs]
    regions = RegionTable.build(sessions)
    n = len(sessions)

    # Sizes in inches. Panels A and B share the session rows; C and B's legend sit below them.
    heat_w, bars_w = max(6.0, CELL_W * regions.counts.shape[1]), 4.5  # 6 in: panel A's title
    top_h, bottom_h = 1.6 + n * ROW_H, 3.2  # rows plus the division names above and region names below
    fig = Figure(figsize=(heat_w + bars_w + 3.5, 1.0 + top_h + bottom_h), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 2, height_ratios=[top_h, bottom_h], width_ratios=[heat_w, bars_w])
    heat = fig.add_subplot(grid[0, 0])
    bars = fig.add_subplot(grid[0, 1], sharey=heat)
    _plot_regions(heat, sessions, regions)
    _plot_trials(bars, sessions)
    _plot_rates(fig.add_subplot(grid[1, 0]), sessions)
    key = fig.add_subplot(grid[1, 1])
    key.axis("off")
    key.legend(*bars.get_legend_handles_labels(), title="B: trial outcome", loc="upper left", frameon=False)
    n_units, n_kept = sum(len(s.units) for s in sessions), sum(s.n_kept for s in sessions)
    title = f"Data overview: {n} sessions, {n_units:,} units, {n_kept:,} trials"
    if demo:
        fig.suptitle(f"{DEMO_NOTICE}\n{title}", color=UNUSABLE_COLOUR, fontweight="bold", fontsize=13)
    else:
        fig.suptitle(title, fontweight="bold", fontsize=13)

    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    with atomic_path(pdf) as tmp:
        fig.savefig(tmp, format="pdf", metadata={"CreationDate": None})  # reruns give identical bytes
    write_text(caption, _caption(sessions, regions, demo))


def _plot_regions(ax, sessions: list[SessionSummary], regions: RegionTable) -> None:
    counts = regions.counts.to_numpy()
    n_rows, n_cols = counts.shape
    title = "A   Units used per brain region (Beryl atlas), per session"
    _label_sessions(ax, sessions)
    if n_cols == 0:
        ax.set_title(title, loc="left", fontweight="bold")
        ax.text(0.5, 0.5, "no selected units", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        return
    # Log colour scale: region sizes span 1 to hundreds of units; zero cells stay white (masked).
    norm = LogNorm(vmin=0.7, vmax=max(2, counts.max()))
    ax.imshow(np.ma.masked_equal(counts, 0), cmap="Blues", norm=norm, aspect="auto", interpolation="nearest")
    for (i, j), value in np.ndenumerate(counts):
        if value:
            colour = "white" if norm(value) > 0.6 else "black"
            ax.text(j, i, str(value), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(n_cols), regions.counts.columns, rotation=90, fontsize=8)
    ax.set_xticks(np.arange(n_cols + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n_rows + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="0.88", linewidth=0.6)
    ax.tick_params(which="minor", length=0)

    # Cosmos divisions: a line between groups, the division's name above it (slanted if too long).
    above = blended_transform_factory(ax.transData, ax.transAxes)
    start, slanted = 0, False
    for end in range(1, n_cols + 1):
        if end < n_cols and regions.divisions[end] == regions.divisions[start]:
            continue
        if start:
            ax.axvline(start - 0.5, color="0.3", linewidth=1.2)
        name = regions.divisions[start]
        fits = (end - start) * CELL_W >= 0.075 * len(name)  # ~0.075 in per character at 8 pt
        slanted |= not fits
        ax.annotate(name, ((start + end - 1) / 2, 1), xycoords=above, xytext=(0, 3), textcoords="offset points",
                    fontsize=8, color="0.3", ha="center" if fits else "left", va="bottom", rotation=0 if fits else 45)
        start = end
    ax.set_title(title, loc="left", fontweight="bold", pad=45 if slanted else 16)  # pad (pt): room for the names

    # Row totals on the right: units used out of units recorded.
    right = ax.secondary_yaxis("right")
    right.set_yticks(range(n_rows), [f"{len(s.units)}/{s.n_units_total}" for s in sessions], fontsize=8)
    right.tick_params(length=0)
    ax.annotate("units used/\nrecorded", (1, 1), xycoords="axes fraction", xytext=(4, 3), textcoords="offset points",
                fontsize=8, ha="left", va="bottom")


def _plot_trials(ax, sessions: list[SessionSummary]) -> None:
    rows = np.arange(len(sessions))
    left = np.zeros(len(sessions))
    for outcome in _outcome_order({o for s in sessions for o in s.outcomes.index}):
        widths = np.array([s.outcomes.get(outcome, 0) for s in sessions], dtype=float)
        if outcome != KEPT and not widths.any():
            continue  # a reason that excluded nothing would only clutter the legend
        ax.barh(rows, widths, left=left, height=0.7, label=_outcome_label(outcome),
                color=OUTCOME_COLOURS.get(outcome, "0.5"), edgecolor="white", linewidth=0.4)
        left += widths
    for row, s in zip(rows, sessions):
        ax.text(left[row], row, f" {s.n_kept}/{s.n_trials}", va="center", fontsize=8)
    ax.set_xlim(0, max(1.0, left.max()) * 1.25)  # room for the kept/total labels
    ax.set_ylim(len(sessions) - 0.5, -0.5)  # the rows of panel A, first session on top
    ax.tick_params(axis="y", labelleft=False)
    ax.set_xlabel("trials (label: kept / total)")
    ax.set_title("B   Trials kept and excluded", loc="left", fontweight="bold")
    ax.spines[["top", "right"]].set_visible(False)


def _plot_rates(ax, sessions: list[SessionSummary]) -> None:
    ax.set_title("C   Firing rates of the units used", loc="left", fontweight="bold")
    per_session = [rates for rates in map(_positive_rates, sessions) if rates.size]
    pooled = np.concatenate(per_session) if per_session else np.zeros(0)
    ax.set_xlabel("firing rate (Hz, log scale)")
    ax.set_ylabel("fraction of units per bin")
    ax.spines[["top", "right"]].set_visible(False)
    if not pooled.size:
        ax.text(0.5, 0.5, "no selected units with a positive rate", ha="center", va="center", transform=ax.transAxes)
        return
    lo, hi = np.floor(np.log10(pooled.min())), np.ceil(np.log10(pooled.max()))
    hi = max(hi, lo + 1)
    bins = np.logspace(lo, hi, int(hi - lo) * 10 + 1)  # 10 bins per decade
    # Fractions, not counts, so that single sessions and the pool share one scale.
    ax.hist(pooled, bins=bins, weights=np.full(pooled.size, 1 / pooled.size), color=OUTCOME_COLOURS[KEPT], alpha=0.45,
            label=f"all sessions ({pooled.size:,} units)")
    if len(per_session) > 1:
        for i, rates in enumerate(per_session):
            ax.hist(rates, bins=bins, weights=np.full(rates.size, 1 / rates.size), histtype="step", color="0.25",
                    linewidth=0.8, alpha=min(0.6, 6 / len(per_session)),  # fainter as the lines crowd
                    label="single sessions" if i == 0 else None)
    median = float(np.median(pooled))
    ax.axvline(median, color="black", linestyle="--", linewidth=1, label=f"median {median:.2g} Hz")
    ax.set_xscale("log")
    ax.legend(fontsize=8, frameon=False, loc="upper left")


def _outcome_order(outcomes: set[str]) -> list[str]:
    """'kept', then the exclusion reasons in the order the filter tests them, then any others."""
    known = [KEPT, *EXCLUSION_REASONS]
    return known + sorted(outcomes - set(known))


def _outcome_label(outcome: str) -> str:
    return OUTCOME_LABELS.get(outcome, outcome.replace("_", " "))


def _positive_rates(session: SessionSummary) -> np.ndarray:
    """(n,) float Hz: the finite, positive firing rates (a log axis cannot show zero)."""
    rates = session.units["firing_rate"].to_numpy(dtype=float)
    return rates[np.isfinite(rates) & (rates > 0)]


def _label_sessions(ax, sessions: list[SessionSummary]) -> None:
    ax.set_yticks(range(len(sessions)), [s.label for s in sessions], fontsize=8)
    for tick, s in zip(ax.get_yticklabels(), sessions):
        if not s.usable:
            tick.set_color(UNUSABLE_COLOUR)
    ax.set_ylabel("session (eid, first 8 characters)", fontsize=8)


def _caption(sessions: list[SessionSummary], regions: RegionTable, demo: bool) -> str:
    n_units = sum(len(s.units) for s in sessions)
    n_kept, n_trials = sum(s.n_kept for s in sessions), sum(s.n_trials for s in sessions)
    unusable = [s for s in sessions if not s.usable]
    n_hidden = max(0, regions.n_regions - MAX_REGIONS)
    outcomes = pd.concat([s.outcomes for s in sessions]).groupby(level=0).sum()
    excluded = outcomes.reindex(_outcome_order(set(outcomes.index))[1:], fill_value=0)
    n_not_shown = n_units - sum(_positive_rates(s).size for s in sessions)

    lines = [f"{DEMO_NOTICE}."] if demo else []
    lines.append("Data overview.")
    lines.append(
        f"{len(sessions)} sessions ({len(sessions) - len(unusable)} usable, {len(unusable)} unusable); "
        f"{n_units:,} units used of {sum(s.n_units_total for s in sessions):,} recorded; "
        f"{n_kept:,} of {n_trials:,} trials kept."
    )
    region_note = f"Units used per Beryl region and session, in {regions.n_regions} regions"
    if n_hidden:
        region_note += (
            f" (the {MAX_REGIONS} most common shown, grouped by Cosmos division; the other {n_hidden} pooled as 'other')"
        )
    else:
        region_note += " (grouped by Cosmos division)"
    if set(UNASSIGNED) & set(regions.counts.columns):
        region_note += "; 'root' and 'void': units outside any labelled region"
    lines.append(f"(A) {region_note}; right: units used / recorded.")
    reasons = ", ".join(f"{_outcome_label(r)} {int(c):,}" for r, c in excluded.items() if c)
    lines.append(
        f"(B) Trials kept and excluded per session, by the first exclusion rule that applies ({reasons or 'none excluded'})."
    )
    rate_note = f"(C) Firing rates of the {n_units:,} units used, 10 log-spaced bins per decade; dashed line: median."
    if n_not_shown:
        rate_note += f" {n_not_shown:,} units with zero or unknown rate not shown."
    lines.append(rate_note)
    for s in unusable:
        lines.append(f"Unusable: {s.eid} ({s.reason or 'no reason given'}).")
    return "\n".join(lines) + "\n"
