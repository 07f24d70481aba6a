"""The smoothing + Poisson GLM floor: the same fit as scikit-learn unit by unit, what each task
lets it see, and its rows in the metrics table."""

import numpy as np
import pytest
from sklearn.linear_model import PoissonRegressor

from mtm.evaluate import evaluation_units
from mtm.config.evaluation import EvalConfig
from mtm.results_table import METRIC_COLUMNS
from mtm.glm import evaluate_glm, fit_poisson_glm, smoothed_log_counts, visible_units
from mtm.config.evaluation import GlmConfig
from mtm.session import load_session


def test_one_joint_fit_equals_scikit_learn_unit_by_unit():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3000, 6))
    counts = rng.poisson(np.exp(features @ rng.normal(0, 0.3, (6, 3)) - 1.0))
    regions = np.array(["A", "A", "A", "B", "B", "B"])
    scored = np.array([0, 1, 4])
    visible = visible_units("intra-region", regions, scored)
    glm = fit_poisson_glm(features, counts, visible, alpha=0.01, max_iter=200)
    for k, unit in enumerate(scored):
        columns = np.flatnonzero(visible[:, k])
        reference = PoissonRegressor(alpha=0.01, max_iter=1000, tol=1e-10).fit(features[:, columns], counts[:, k])
        assert glm.weights[columns, k] == pytest.approx(reference.coef_, abs=2e-3)
        assert (glm.weights[~visible[:, k], k] == 0).all()
        expected = reference.predict(features[:5, columns])
        assert np.exp(glm.log_rates(features[:5]))[:, k] == pytest.approx(expected, rel=1e-3)


def test_each_task_shows_the_glm_what_the_transformers_see():
    regions = np.array(["A", "A", "B", "B", "B"])
    scored = np.array([0, 3])
    co = visible_units("co-smoothing", regions, scored)
    intra = visible_units("intra-region", regions, scored)
    inter = visible_units("inter-region", regions, scored)
    assert co[:, 0].tolist() == [False, True, True, True, True]
    assert intra[:, 0].tolist() == [False, True, False, False, False]
    assert intra[:, 1].tolist() == [False, False, True, False, True]
    assert inter[:, 1].tolist() == [True, True, False, False, False]
    with pytest.raises(ValueError, match="forward"):
        visible_units("forward-prediction", regions, scored)


def test_smoothing_keeps_the_rate_and_spreads_a_spike():
    counts = np.zeros((1, 21, 1))
    counts[0, 10, 0] = 1
    smooth = np.exp(smoothed_log_counts(counts, kernel_sd=0.04, bin_size=0.02)) - 1e-4
    assert smooth.sum() == pytest.approx(1.0) and smooth[0, 10, 0] == smooth.max() and smooth[0, 8, 0] > 0.05


def test_the_glm_beats_the_null_on_the_demo_and_scores_the_models_units(binned):
    session = load_session(binned["usable"])
    config = EvalConfig(max_units=12, decoding=())
    evaluation = evaluate_glm(session, config, config=GlmConfig(kernel_sds=(0.08,), alphas=(0.1,)))
    table = evaluation.metrics
    assert tuple(table.columns) == METRIC_COLUMNS and (table["model"] == "glm/smoothing/single").all()
    assert set(table["task"]) == {"co-smoothing", "intra-region", "inter-region"}
    bps = table[table["metric"] == "bps"].set_index("task")["value"]
    oracle = table[table["metric"] == "oracle_bps"].set_index("task")["value"]
    assert (bps > 0).all() and (bps < oracle).all()
    units = evaluation_units(session.counts.shape[2], session.eid, config)
    assert sorted(set(evaluation.units["unit"])) == units.tolist()
    assert (table["n_trials"] == (session.split == "test").sum()).all()
