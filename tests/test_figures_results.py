"""The results figures, drawn from a small synthetic metrics table of both backbones."""

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from mtm.evaluate import METRIC_COLUMNS
from mtm.figures.ablation import ablation_table, plot_ablation

EIDS = ("e1", "e2", "e3")
SCHEMES = {"ndt1": ("temporal", "mtm-prompt"), "ndt2": ("random-token", "mtm-prompt")}


def fake_metrics(seed: int = 0) -> pd.DataFrame:
    """Every (backbone, scheme, session) of SCHEMES x EIDS with activity and behaviour rows; the
    oracle and chance values depend on the session only (as in a real table)."""
    rng = np.random.default_rng(seed)
    rows = []
    for backbone, schemes in SCHEMES.items():
        for scheme in schemes:
            for i, eid in enumerate(EIDS):
                model = f"{backbone}/{scheme}/single"
                def row(task, metric, value):
                    rows.append((model, backbone, scheme, "single", eid, task, "none", metric, value, 32, 80))
                for task in ("co-smoothing", "forward-prediction", "intra-region", "inter-region"):
                    row(task, "bps", rng.uniform(0.0, 0.1))
                    row(task, "oracle_bps", 0.2 + 0.01 * i)
                    row(task, "psth_r2", rng.uniform())
                for task, metric in (("choice", "accuracy"), ("block", "accuracy"), ("wheel-speed", "r2"),
                                     ("whisker-motion-energy", "r2")):  # fmt: skip
                    row(task, metric, rng.uniform(0.5, 0.9))
                    row(task, f"chance_{metric}", 0.5 + 0.01 * i)
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS))


def test_ablation_table_means_over_sessions_and_counts_references_once():
    metrics = fake_metrics()
    table = ablation_table(metrics).set_index(["backbone", "row", "task"])
    bps = metrics[(metrics["metric"] == "bps") & (metrics["scheme"] == "mtm-prompt") & (metrics["backbone"] == "ndt2")]
    cosmooth = bps[bps["task"] == "co-smoothing"]["value"]
    got = table.loc[("ndt2", "mtm-prompt", "co-smoothing")]
    assert got["mean"] == pytest.approx(cosmooth.mean()) and got["n_sessions"] == 3
    assert got["sem"] == pytest.approx(cosmooth.std(ddof=1) / np.sqrt(3))
    oracle = table.loc[("ndt1", "oracle", "inter-region")]
    assert oracle["mean"] == pytest.approx(0.21) and oracle["n_sessions"] == 3  # once per session, not per model
    chance = table.loc[("ndt2", "chance", "choice")]
    assert chance["mean"] == pytest.approx(0.51) and chance["metric"] == "accuracy"
    assert set(table.loc["ndt1"].index.get_level_values("row")) == {"temporal", "mtm-prompt", "oracle", "chance"}
    assert "psth_r2" not in set(table["metric"])
    # a NaN (e.g. block not decodable) leaves the session out of that cell's mean
    metrics.loc[(metrics["task"] == "block") & (metrics["eid"] == "e1"), "value"] = np.nan
    block = ablation_table(metrics).set_index(["backbone", "row", "task"]).loc[("ndt1", "temporal", "block")]
    assert block["n_sessions"] == 2


def test_ablation_figure_shows_both_backbones(tmp_path):
    metrics = fake_metrics()
    metrics.to_parquet(tmp_path / "metrics.parquet")
    out = {k: tmp_path / f"ablation.{k}" for k in ("png", "pdf")}
    plot_ablation(tmp_path / "metrics.parquet", png=out["png"], pdf=out["pdf"], caption=tmp_path / "ablation.txt",
                  table_csv=tmp_path / "ablation.csv", demo=True)  # fmt: skip
    image = matplotlib.image.imread(out["png"])
    assert image.shape[0] > 600 and image.shape[1] > 1500
    assert out["pdf"].read_bytes().startswith(b"%PDF")
    assert (tmp_path / "ablation.txt").read_text().startswith("Synthetic demo data")
    csv = pd.read_csv(tmp_path / "ablation.csv")
    assert set(csv["backbone"]) == {"ndt1", "ndt2"} and len(csv) == 2 * (2 * 8 + 8)
    assert not list(tmp_path.glob(".*.tmp"))
