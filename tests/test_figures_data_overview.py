"""The data-overview figure, drawn from three small fake QC folders (one unusable)."""

import json

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from mtm.figures.data_overview import DEMO_NOTICE, MAX_REGIONS, plot_data_overview

# (Beryl, Cosmos) pairs; session one spreads over more regions than the heatmap shows.
REGIONS = [(f"CTX{i}", "Isocortex") for i in range(20)] + [(f"TH{i}", "TH") for i in range(8)]
REGIONS += [("CA1", "HPF"), ("root", "root")]
UNUSABLE_REASON = "0 selected units < min_units 10"


def _write_session(folder, eid, units, reasons, usable, reason=""):
    folder.mkdir(parents=True)
    units.to_parquet(folder / "units.parquet")
    reasons = np.asarray(reasons, dtype=object)
    trials = pd.DataFrame({"trial_index": np.arange(len(reasons)), "exclusion_reason": reasons, "keep": reasons == ""})
    trials.to_parquet(folder / "trials.parquet")
    qc = {"eid": eid, "usable": usable, "reason": reason, "n_units_total": len(units), "n_trials_total": len(trials)}
    (folder / "qc.json").write_text(json.dumps(qc))
    return units, trials


def _units(regions, rates, selected):
    return pd.DataFrame(
        {
            "uuid": [f"u{i}" for i in range(len(regions))],
            "probe": "probe00",
            "cluster_id": np.arange(len(regions)),
            "beryl": [b for b, _ in regions],
            "cosmos": [c for _, c in regions],
            "firing_rate": np.asarray(rates, dtype=np.float32),
            "label": 1.0,
            "selected": np.asarray(selected, dtype=bool),
        }
    )


@pytest.fixture
def sessions(tmp_path):
    rng = np.random.default_rng(0)
    specs = [
        # every region once plus 10 more CA1 units; a silent unit first, the last one not selected
        ("aaaaaaaa-0000-0000-0000-000000000001",
         _units(REGIONS + [("CA1", "HPF")] * 10, np.r_[0.0, rng.lognormal(1, 1, 39)], [True] * 39 + [False]),
         [""] * 80 + ["no_choice"] * 7 + ["rt_too_long"] * 3, True),
        ("bbbbbbbb-0000-0000-0000-000000000002",
         _units([("CA1", "HPF")] * 6 + [("TH0", "TH")] * 6, rng.lognormal(2, 1, 12), [True] * 10 + [False] * 2),
         [""] * 60 + ["missing_event"] * 2 + ["rt_too_short"] * 4 + ["trial_too_long"], True),
        ("cccccccc-0000-0000-0000-000000000003",  # unusable: nothing selected, too few trials
         _units([("CA1", "HPF")] * 3, [1.0, 2.0, 3.0], [False] * 3),
         [""] * 4 + ["no_choice"] * 20, False),
    ]
    written = [
        _write_session(tmp_path / "sessions" / eid, eid, units, reasons, usable, "" if usable else UNUSABLE_REASON)
        for eid, units, reasons, usable in specs
    ]
    return [tmp_path / "sessions" / eid for eid, *_ in specs], written


@pytest.mark.parametrize("demo", [False, True])
def test_figure_and_caption(tmp_path, sessions, demo):
    dirs, written = sessions
    out = tmp_path / "figures"
    png, pdf, caption = out / "overview.png", out / "overview.pdf", out / "overview.txt"
    plot_data_overview(dirs, png=png, pdf=pdf, caption=caption, demo=demo)

    image = matplotlib.image.imread(png)
    height, width = image.shape[:2]
    assert 1000 < width < 4000 and 500 < height < 3000
    assert image[..., :3].std() > 0.05  # drawn on, not a blank canvas
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 10_000
    assert sorted(p.name for p in out.iterdir()) == ["overview.pdf", "overview.png", "overview.txt"]  # no temp files left

    text = caption.read_text()
    n_selected = sum(int(units["selected"].sum()) for units, _ in written)
    n_recorded = sum(len(units) for units, _ in written)
    n_kept = sum(int(trials["keep"].sum()) for _, trials in written)
    n_trials = sum(len(trials) for _, trials in written)
    assert (n_selected, n_kept, n_trials) == (49, 144, 181)
    assert f"{n_selected} units used of {n_recorded} recorded" in text
    assert f"{n_kept} of {n_trials} trials kept" in text
    assert "3 sessions (2 usable, 1 unusable)" in text
    assert f"Unusable: cccccccc-0000-0000-0000-000000000003 ({UNUSABLE_REASON})" in text
    assert f"the {MAX_REGIONS} most common shown" in text and "the other 5 pooled as 'other'" in text
    assert "no choice 27" in text
    assert "1 units with zero or unknown rate not shown" in text
    assert (DEMO_NOTICE in text) == demo


def test_no_sessions_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        plot_data_overview([], png=tmp_path / "f.png", pdf=tmp_path / "f.pdf", caption=tmp_path / "f.txt", demo=False)
