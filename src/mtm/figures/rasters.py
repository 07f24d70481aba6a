"""Trial-averaged activity of one region, true and predicted, under region masking (MtM Fig. 2A-B).

For one session and one brain region: each unit's test-trial average (Hz) as observed, as
predicted by MtM (prompted) and by the temporal baseline, when the whole region is hidden
(inter-region: predicted from the other regions) and when the unit is hidden within its region
(intra-region: predicted from the region's other units). Rows are units, sorted by the time of
their observed peak; a last column overlays the region's mean. The models are NDT1 trained on
that session alone; their units tables (`mtm.evaluate`) hold the averages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mtm.figures.output import SCHEME_LABELS, new_figure, save_figure, title

RASTER_TASKS = {"inter-region": "inter-region: the region hidden", "intra-region": "intra-region: each unit hidden in its region"}
UNLABELLED = ("unknown", "root", "void")
COLOURS = {"observed": "black", "mtm": "#d9822b", "baseline": "#2f6db5"}


def choose_region(units: pd.DataFrame, preferred: str | None, *, min_units: int = 3) -> str | None:
    """`preferred` if at least `min_units` of its units were scored in both region tasks, else
    the labelled region with the most such units; None if there is none."""
    scored = units[units["task"].isin(RASTER_TASKS)].groupby("region")["task"].nunique()
    both = units[units["region"].isin(scored[scored == len(RASTER_TASKS)].index) & (units["task"] == "inter-region")]
    counts = both[~both["region"].isin(UNLABELLED)]["region"].value_counts()
    if preferred in counts and counts[preferred] >= min_units:
        return preferred
    return str(counts.index[0]) if len(counts) else None


def region_averages(units: pd.DataFrame, region: str, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(unit ids (U,), observed (U, bins), predicted (U, bins) in Hz, mean bits/spike) of
    `region`'s units under `task`, ordered by unit id."""
    rows = units[(units["region"] == region) & (units["task"] == task)].sort_values("unit")
    observed = np.array([np.asarray(v, dtype=float) for v in rows["psth_observed"]]).reshape(len(rows), -1)
    predicted = np.array([np.asarray(v, dtype=float) for v in rows["psth_predicted"]]).reshape(len(rows), -1)
    bps = rows["bps"].to_numpy(dtype=float)
    return rows["unit"].to_numpy(), observed, predicted, float(np.nanmean(bps)) if np.isfinite(bps).any() else np.nan


def plot_rasters(mtm_units: Path, baseline_units: Path, *, png: Path, pdf: Path, caption: Path, demo: bool,
                 preferred_region: str | None, window_start: float, bin_size: float, baseline: str = "temporal") -> None:  # fmt: skip
    """Draw the figure from the units tables of the MtM and the baseline model of one session."""
    mtm, base = pd.read_parquet(mtm_units), pd.read_parquet(baseline_units)
    region = choose_region(mtm, preferred_region) if len(mtm) and len(base) else None
    eid = str(mtm["eid"].iloc[0]) if len(mtm) else "?"
    fig = new_figure(14.0, 7.5)
    if region is None:
        fig.text(0.5, 0.5, f"session {eid}: no region with units scored by both models", ha="center", va="center")
        title(fig, "Trial-averaged activity under region masking", demo=demo)
        save_figure(fig, png=png, pdf=pdf, caption=caption, demo=demo,
                    text=f"No region of session {eid} had units scored by both models in both region tasks.")  # fmt: skip
        return
    axes = fig.subplots(len(RASTER_TASKS), 4, gridspec_kw={"width_ratios": [1, 1, 1, 1.25]})
    notes = []
    for row, (task, heading) in enumerate(RASTER_TASKS.items()):
        ids, observed, predicted_mtm, bps_mtm = region_averages(mtm, region, task)
        base_ids, _, predicted_base, bps_base = region_averages(base, region, task)
        if not np.array_equal(ids, base_ids):
            raise ValueError(f"session {eid}: the two models scored different units of {region} under {task}")
        order = np.argsort(observed.argmax(axis=1), kind="stable")  # by the time of the observed peak
        n_bins = observed.shape[1]
        extent = (window_start, window_start + n_bins * bin_size, len(ids) - 0.5, -0.5)
        top = max(np.percentile(observed, 99), np.percentile(predicted_mtm, 99), 1e-9)
        panels = [
            ("observed", observed),
            (f"MtM (prompted), {bps_mtm:.3f} bits/spike", predicted_mtm),
            (f"{SCHEME_LABELS.get(baseline, baseline)}, {bps_base:.3f} bits/spike", predicted_base),
        ]
        for col, (name, image) in enumerate(panels):
            ax = axes[row, col]
            shown = ax.imshow(image[order], aspect="auto", cmap="magma", vmin=0, vmax=top, extent=extent,
                              interpolation="nearest")  # fmt: skip
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("time from stimulus onset (s)", fontsize=8)
            ax.set_ylabel(f"{heading}\n{len(ids)} {region} units" if col == 0 else "", fontsize=9)
            ax.set_yticks([])
        fig.colorbar(shown, ax=axes[row, 2], label="Hz", fraction=0.08, pad=0.03)
        time = window_start + (np.arange(n_bins) + 0.5) * bin_size
        ax = axes[row, 3]
        for name, image, colour in (("observed", observed, COLOURS["observed"]), ("MtM", predicted_mtm, COLOURS["mtm"]),
                                    ("baseline", predicted_base, COLOURS["baseline"])):  # fmt: skip
            ax.plot(time, image.mean(axis=0), color=colour, linewidth=1.5, label=name)
        ax.axvline(0.0, color="0.7", linewidth=0.8)
        ax.set_title(f"{region} mean over {len(ids)} units", fontsize=9)
        ax.set_xlabel("time from stimulus onset (s)", fontsize=8)
        ax.set_ylabel("Hz", fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(fontsize=8, frameon=False)
        notes.append(f"{task}: {len(ids)} units, MtM {bps_mtm:.3f} vs baseline {bps_base:.3f} bits/spike")
    title(fig, f"Trial-averaged activity of {region} under region masking, session {eid[:8]}", demo=demo)
    text = (
        f"Test-trial averages of the units of {region} in session {eid} (MtM Fig. 2A-B), as observed and as "
        f"predicted by NDT1 trained on this session alone with MtM (prompted) and with "
        f"{SCHEME_LABELS.get(baseline, baseline).lower()} masking. Top: inter-region, the whole region hidden and "
        "predicted from the other regions; bottom: intra-region, each unit hidden and predicted from the rest of "
        "its region (other regions hidden). Rows are units sorted by the time of their observed peak; colour "
        "scale shared within a row. Right: the region's mean. " + "; ".join(notes) + "."
    )
    save_figure(fig, png=png, pdf=pdf, caption=caption, text=text, demo=demo)
