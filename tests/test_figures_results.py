"""The results figures, drawn from a small synthetic metrics table of both backbones."""

import json

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mtm.results_table import METRIC_COLUMNS
from mtm.figures.ablation import ablation_table, plot_ablation
from mtm.figures.comparisons import comparison_table, plot_comparisons
from mtm.figures.convergence import plot_convergence, read_runs
from mtm.figures.mtm_vs_baseline import paired_sessions, plot_mtm_vs_baseline
from mtm.figures.output import new_figure, task_axes
from mtm.figures.prompts import plot_prompt_ablation, prompt_table
from mtm.figures.scaling import plot_scaling, pretrain_size, scaling_table
from mtm.vocabulary import MTM_SCHEMES

EIDS = ("e1", "e2", "e3")
SCHEMES = {"ndt1": ("temporal", "mtm-prompt"), "ndt2": ("random-token", "mtm-prompt")}
FINETUNED = {"ndt1": ("pretrain-1", "pretrain-4")}  # NDT1 pretrained, finetuned on e1 and e2
HELDOUT = ("e1", "e2")


def fake_metrics(seed: int = 0) -> pd.DataFrame:
    """Every (backbone, scheme, session) of SCHEMES x EIDS with activity and behaviour rows, and
    NDT1's finetuned models of the HELDOUT sessions; the oracle and chance values depend on the
    session only (as in a real table)."""
    rng = np.random.default_rng(seed)
    models = [(b, s, "single", e) for b, schemes in SCHEMES.items() for s in schemes for e in EIDS]
    models += [(b, s, setting, e) for b, settings in FINETUNED.items() for s in SCHEMES[b] for setting in settings
               for e in HELDOUT]  # fmt: skip
    rows = []
    for backbone, scheme, setting, eid in models:
        i = EIDS.index(eid)

        def row(task, metric, value):
            rows.append((f"{backbone}/{scheme}/{setting}", backbone, scheme, setting, 0, eid, task, "none", metric,
                         value, 32, 80))  # fmt: skip

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


def test_mtm_is_paired_with_its_own_baseline_per_session(tmp_path):
    metrics = fake_metrics()
    pairs = paired_sessions(metrics)
    assert len(pairs) == 2 * 8 * 3  # backbones x tasks x sessions
    got = pairs.set_index(["backbone", "task", "eid"]).loc[("ndt2", "choice", "e2")]
    value = metrics[metrics["setting"] == "single"].set_index(["backbone", "scheme", "task", "metric", "eid"])["value"]
    assert got["baseline"] == value[("ndt2", "random-token", "choice", "accuracy", "e2")]
    assert got["mtm"] == value[("ndt2", "mtm-prompt", "choice", "accuracy", "e2")]
    # a session without one of the two is left out, not paired with NaN
    metrics.loc[(metrics["eid"] == "e3") & (metrics["scheme"] == "temporal"), "value"] = np.nan
    assert set(paired_sessions(metrics).query("backbone == 'ndt1'")["eid"]) == {"e1", "e2"}
    metrics.to_parquet(tmp_path / "metrics.parquet")
    plot_mtm_vs_baseline(tmp_path / "metrics.parquet", png=tmp_path / "f.png", pdf=tmp_path / "f.pdf",
                         caption=tmp_path / "f.txt", demo=False)  # fmt: skip
    assert matplotlib.image.imread(tmp_path / "f.png").shape[1] > 1500
    assert "3 sessions" in (tmp_path / "f.txt").read_text()


def test_scaling_table_follows_the_held_out_sessions(tmp_path):
    metrics = fake_metrics()
    table = scaling_table(metrics)
    assert set(table["backbone"]) == {"ndt1"}, "only backbones that were pretrained"
    assert set(table["n_pretrain"]) == {0, 1, 4} and set(table["n_sessions"]) == {2}
    alone = table.set_index(["scheme", "n_pretrain", "task"]).loc[("mtm-prompt", 0, "co-smoothing")]
    expected = metrics.query("backbone == 'ndt1' and scheme == 'mtm-prompt' and setting == 'single' and "
                             "task == 'co-smoothing' and metric == 'bps' and eid in @HELDOUT")["value"].mean()  # fmt: skip
    assert alone["mean"] == pytest.approx(expected)
    reference = table.set_index(["scheme", "n_pretrain", "task"]).loc[("reference", 4, "choice")]
    assert reference["mean"] == pytest.approx(0.505) and reference["metric"] == "accuracy"
    assert pretrain_size("single") == 0 and pretrain_size("pretrain-34") == 34
    metrics.to_parquet(tmp_path / "metrics.parquet")
    plot_scaling(tmp_path / "metrics.parquet", png=tmp_path / "s.png", pdf=tmp_path / "s.pdf",
                 caption=tmp_path / "s.txt", demo=True)  # fmt: skip
    assert "Pretraining sizes: 1, 4." in (tmp_path / "s.txt").read_text()
    plot_ablation(tmp_path / "metrics.parquet", png=tmp_path / "t.png", pdf=tmp_path / "t.pdf", caption=tmp_path / "t.txt",
                  table_csv=tmp_path / "t.csv", demo=True, setting="pretrain-4")  # fmt: skip
    finetuned = pd.read_csv(tmp_path / "t.csv")
    assert set(finetuned["backbone"]) == {"ndt1"} and set(finetuned["n_sessions"]) == {2}
    assert "Table 2" in (tmp_path / "t.txt").read_text()


def fake_prompts() -> pd.DataFrame:
    """A prompt ablation of NDT1's finetuned MtM models: every task under every prompt."""
    metrics = fake_metrics()
    finetuned = metrics[(metrics["setting"] != "single") & (metrics["scheme"] == "mtm-prompt")]
    tables = [finetuned.assign(prompt=p, value=finetuned["value"] + 0.01 * i) for i, p in enumerate(MTM_SCHEMES)]
    return pd.concat(tables, ignore_index=True)


def test_prompt_table_shows_the_largest_pretraining_by_prompt(tmp_path):
    prompts = fake_prompts()
    table = prompt_table(prompts).set_index(["backbone", "row", "task"])
    assert set(table.index.get_level_values("row")) == {*MTM_SCHEMES, "oracle", "chance"}
    chosen = prompts.query("setting == 'pretrain-4' and prompt == 'causal' and task == 'choice' and metric == 'accuracy'")
    assert table.loc[("ndt1", "causal", "choice"), "mean"] == pytest.approx(chosen["value"].mean())
    assert table.loc[("ndt1", "causal", "choice"), "n_sessions"] == len(HELDOUT)
    prompts.to_parquet(tmp_path / "prompts.parquet")
    plot_prompt_ablation(tmp_path / "prompts.parquet", png=tmp_path / "p.png", pdf=tmp_path / "p.pdf",
                         caption=tmp_path / "p.txt", table_csv=tmp_path / "p.csv", demo=False)  # fmt: skip
    assert "pretrained on 4 sessions" in (tmp_path / "p.txt").read_text()
    empty = prompts.iloc[:0]
    empty.to_parquet(tmp_path / "none.parquet")
    plot_prompt_ablation(tmp_path / "none.parquet", png=tmp_path / "n.png", pdf=tmp_path / "n.pdf",
                         caption=tmp_path / "n.txt", table_csv=tmp_path / "n.csv", demo=False)  # fmt: skip
    assert (tmp_path / "n.png").stat().st_size > 1000, "an empty ablation still gives a figure that says so"


def fake_units(scheme: str, seed: int) -> pd.DataFrame:
    """A units table of one model: CA1 (4 units), DG (2), unlabelled (5), under both region tasks."""
    rng = np.random.default_rng(seed)
    regions = ["CA1"] * 4 + ["DG"] * 2 + ["root"] * 5
    rows = []
    for task in ("inter-region", "intra-region", "co-smoothing"):
        for unit, region in enumerate(regions):
            observed = rng.gamma(2.0, 2.0, size=100)
            rows.append({"model": f"ndt1/{scheme}/single", "eid": "e1", "task": task, "unit": unit, "region": region,
                         "bps": rng.uniform(0, 0.1), "psth_observed": observed,
                         "psth_predicted": observed * rng.uniform(0.8, 1.2, size=100)})  # fmt: skip
    return pd.DataFrame(rows)


def test_rasters_pick_a_region_and_draw_it(tmp_path):
    from mtm.figures.rasters import choose_region, plot_rasters, region_averages

    mtm, base = fake_units("mtm-prompt", 0), fake_units("temporal", 1)
    assert choose_region(mtm, "CA1") == "CA1"
    assert choose_region(mtm, "LP") == "CA1", "the labelled region with the most units"
    assert choose_region(mtm, "DG") == "CA1", "DG has too few units"
    assert choose_region(mtm[mtm["region"] == "root"], "CA1") is None
    ids, observed, predicted, bps = region_averages(mtm, "DG", "intra-region")
    assert list(ids) == [4, 5] and observed.shape == predicted.shape == (2, 100)
    mtm.to_parquet(tmp_path / "mtm.parquet")
    base.to_parquet(tmp_path / "base.parquet")
    plot_rasters(tmp_path / "mtm.parquet", tmp_path / "base.parquet", png=tmp_path / "r.png", pdf=tmp_path / "r.pdf",
                 caption=tmp_path / "r.txt", demo=True, preferred_region="CA1", window_start=-0.5, bin_size=0.02)  # fmt: skip
    text = (tmp_path / "r.txt").read_text()
    assert "CA1" in text and "inter-region: 4 units" in text
    base[base["unit"] != 0].to_parquet(tmp_path / "fewer.parquet")
    with pytest.raises(ValueError, match="different units of CA1"):
        plot_rasters(tmp_path / "mtm.parquet", tmp_path / "fewer.parquet", png=tmp_path / "x.png", pdf=tmp_path / "x.pdf",
                     caption=tmp_path / "x.txt", demo=True, preferred_region="CA1", window_start=-0.5, bin_size=0.02)  # fmt: skip


def with_heads(metrics: pd.DataFrame) -> pd.DataFrame:
    """`metrics` plus supervised-head rows for NDT1's single-session models, block left out of e3
    (a target that could not be decoded has no row)."""
    rows = metrics[(metrics["backbone"] == "ndt1") & (metrics["setting"] == "single")
                   & metrics["metric"].isin(["accuracy", "r2"])].copy()  # fmt: skip
    rows = rows[~((rows["task"] == "block") & (rows["eid"] == "e3"))]
    rows["metric"] = "head_" + rows["metric"]
    rows["value"] = rows["value"] + 0.05
    return pd.concat([metrics, rows], ignore_index=True)


def test_head_pairs_join_each_head_with_its_rate_decoder_and_chance(tmp_path):
    from mtm.figures.heads import head_pairs, heads_table, plot_heads

    metrics = with_heads(fake_metrics())
    pairs = head_pairs(metrics)
    assert set(zip(pairs["backbone"], pairs["scheme"], pairs["setting"])) == {
        ("ndt1", "temporal", "single"), ("ndt1", "mtm-prompt", "single")}  # fmt: skip
    assert len(pairs) == 2 * (4 * 3 - 1)  # no head, no pair: block of e3
    assert np.allclose(pairs["head"] - pairs["rates"], 0.05)
    assert np.allclose(pairs["chance"], 0.5 + 0.01 * pairs["eid"].map({"e1": 0, "e2": 1, "e3": 2}))
    table = heads_table(pairs).set_index(["scheme", "task", "protocol"])
    assert table.loc[("temporal", "block", "head"), "n_sessions"] == 2
    assert table.loc[("mtm-prompt", "choice", "head"), "mean"] == pytest.approx(
        table.loc[("mtm-prompt", "choice", "rates"), "mean"] + 0.05)  # fmt: skip
    assert head_pairs(fake_metrics()).empty  # a table without heads
    path = tmp_path / "metrics.parquet"
    metrics.to_parquet(path)
    out = {k: tmp_path / f"heads.{k}" for k in ("png", "pdf", "txt", "csv")}
    plot_heads(path, png=out["png"], pdf=out["pdf"], caption=out["txt"], table_csv=out["csv"], demo=True)
    assert matplotlib.image.imread(out["png"]).shape[1] > 1000
    assert out["txt"].read_text().startswith("Synthetic demo data") and "supervised head" in out["txt"].read_text()
    assert len(pd.read_csv(out["csv"])) == 2 * 4 * 2


def with_glm_and_seeds(metrics: pd.DataFrame) -> pd.DataFrame:
    """`metrics` with a second seed of every model (values shifted by 0.01) and the GLM's rows."""
    second = metrics.assign(seed=1, value=metrics["value"] + 0.01)
    glm = metrics[(metrics["model"] == "ndt1/temporal/single") & metrics["task"].isin(["co-smoothing", "inter-region"])]
    glm = glm[glm["metric"].isin(["bps", "oracle_bps"])].assign(model="glm/smoothing/single", backbone="glm",
                                                                 scheme="smoothing", value=lambda t: t["value"] / 2)  # fmt: skip
    return pd.concat([metrics, second, glm], ignore_index=True)


def test_comparisons_pair_sessions_average_seeds_and_give_intervals(tmp_path):
    metrics = with_glm_and_seeds(fake_metrics())
    table, per_session = comparison_table(metrics)
    names = set(table["comparison"])
    assert {"MtM vs baseline, alone", "MtM vs baseline, pretrained on 4", "4 vs 1 pretraining sessions",
            "pretrained on 4 vs alone", "MtM vs GLM"} <= names  # fmt: skip
    row = table[(table["comparison"] == "MtM vs baseline, alone") & (table["a"].str.startswith("NDT2"))]
    row = row.set_index("task").loc["co-smoothing"]
    single = metrics[(metrics["setting"] == "single") & (metrics["metric"] == "bps") & (metrics["backbone"] == "ndt2")
                     & (metrics["task"] == "co-smoothing")]  # fmt: skip
    by = single.groupby(["scheme", "eid"])["value"].mean()
    diff = (by["mtm-prompt"] - by["random-token"]).to_numpy()
    expected = stats.ttest_rel(by["mtm-prompt"], by["random-token"]).confidence_interval(0.95)
    assert row["mean"] == pytest.approx(diff.mean()) and row["n_sessions"] == 3 and row["n_seeds"] == 2
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((expected.low, expected.high))
    pretrained = table[table["comparison"] == "pretrained on 4 vs alone"]
    assert set(pretrained["n_sessions"]) == {2}, "pretrained models are compared on the held-out sessions"
    glm = table[table["comparison"] == "MtM vs GLM"]
    assert set(glm["task"]) == {"co-smoothing", "inter-region"}
    assert len(per_session[per_session["comparison"] == "MtM vs GLM"]) == 2 * 2 * 3  # backbones x tasks x sessions
    metrics.to_parquet(tmp_path / "metrics.parquet")
    plot_comparisons(tmp_path / "metrics.parquet", png=tmp_path / "c.png", pdf=tmp_path / "c.pdf",
                     caption=tmp_path / "c.txt", table_csv=tmp_path / "c.csv", demo=True)  # fmt: skip
    assert len(pd.read_csv(tmp_path / "c.csv")) == len(table)
    assert "better in" in (tmp_path / "c.txt").read_text()
    assert matplotlib.image.imread(tmp_path / "c.png").shape[0] > 1000


def test_the_ablation_table_adds_the_glm_as_a_reference_row(tmp_path):
    metrics = with_glm_and_seeds(fake_metrics())
    table = ablation_table(metrics).set_index(["backbone", "row", "task"])
    glm = table.loc[("ndt2", "glm", "co-smoothing")]
    expected = fake_metrics().query("model == 'ndt1/temporal/single' and task == 'co-smoothing' and metric == 'bps'")
    assert glm["mean"] == pytest.approx(expected["value"].mean() / 2) and glm["n_sessions"] == 3
    # a session's value is the mean of its seeds
    temporal = table.loc[("ndt1", "temporal", "co-smoothing"), "mean"]
    assert temporal == pytest.approx(expected["value"].mean() + 0.005)
    metrics.to_parquet(tmp_path / "metrics.parquet")
    plot_ablation(tmp_path / "metrics.parquet", png=tmp_path / "a.png", pdf=tmp_path / "a.pdf", caption=tmp_path / "a.txt",
                  table_csv=tmp_path / "a.csv", demo=True)  # fmt: skip
    assert "glm" in set(pd.read_csv(tmp_path / "a.csv")["row"])


def test_convergence_figure_reads_every_run_and_how_it_stopped(tmp_path):
    dirs = []
    for i, (stage, converged) in enumerate([("single", True), ("single", False), ("pretrain", True), ("finetune", True)]):
        folder = tmp_path / f"m{i}"
        folder.mkdir()
        epochs = 12 if converged else 20
        meta = {"stage": stage, "training": {"backbone": "ndt1", "scheme": "mtm-prompt", "epochs": 20},
                "epochs_run": epochs, "best_epoch": epochs - 4, "converged": converged,
                "stop_reason": "converged" if converged else "epoch cap (20)"}  # fmt: skip
        (folder / "config.json").write_text(json.dumps({"metadata": meta}))
        pd.DataFrame({"epoch": range(1, epochs + 1), "val_loss": np.linspace(0.4, 0.3, epochs)}).to_csv(folder / "log.csv")
        dirs.append(folder)
    skipped = tmp_path / "skipped"
    skipped.mkdir()
    (skipped / "config.json").write_text(json.dumps({"skipped": "unusable", "metadata": {}}))
    runs, logs = read_runs([*dirs, skipped])
    assert len(runs) == 4 and runs["converged"].sum() == 3 and set(logs) == set(runs["model"])
    plot_convergence([*dirs, skipped], png=tmp_path / "v.png", pdf=tmp_path / "v.pdf", caption=tmp_path / "v.txt",
                     table_csv=tmp_path / "v.csv", demo=False)  # fmt: skip
    text = (tmp_path / "v.txt").read_text()
    assert "trained on one session alone, NDT1 MtM (prompted): 1/2 converged, 12-20 epochs (cap 20)" in text


def test_task_panels_give_every_task_its_own_axes():
    """Activity tasks in one row, the five behaviour targets in the next: nine panels, the
    fifth cell of the first row hidden (a fixed 2 x 4 grid silently dropped a target)."""
    fig = new_figure(10, 5)
    rows = [["co-smoothing", "forward-prediction", "intra-region", "inter-region"],
            ["choice", "block", "block-whole-trial", "wheel-speed", "whisker-motion-energy"]]  # fmt: skip
    panels = task_axes(fig, rows)
    assert list(panels) == rows[0] + rows[1] and len({id(ax) for ax in panels.values()}) == 9
    assert [ax.get_visible() for ax in fig.axes].count(False) == 1
