"""Tests of mtm.decoding: behaviour decoders on synthetic sessions with known structure."""

import logging
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression, Ridge

from mtm.decoding import DecodingResult, _row_space, _standardise, decode_behaviour
from mtm.vocabulary import DECODING_TARGETS

# A ConvergenceWarning (or any other) means the decoders are misconfigured: fail on it.
pytestmark = pytest.mark.filterwarnings("error")

N_BINS = 10


def synthetic_session(seed=0, n=240, p=80, signal=True):
    """Features, trials and behaviour of a toy session with four latent variables.

    With signal, features are a noisy linear read-out of the latents and every target is a
    noisy function of one latent; without, features are independent noise. Two feature
    columns are constant. The first 30 trials are the unbiased block (0.5).
    """
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 4))
    noise = rng.standard_normal((n, p))
    features = latent @ rng.standard_normal((4, p)) + noise if signal else noise
    features[:, :2] = 1.5  # constant columns must not produce NaN
    n_train, n_val = n * 7 // 10, n // 10
    split = ["train"] * n_train + ["val"] * n_val + ["test"] * (n - n_train - n_val)
    split = rng.permutation(np.array(split))
    block = np.where(latent[:, 1] + 0.3 * rng.standard_normal(n) > 0, 0.8, 0.2)
    block[:30] = 0.5
    trials = pd.DataFrame(
        {
            "split": split,
            "choice": np.where(latent[:, 0] + 0.3 * rng.standard_normal(n) > 0, 1, -1).astype(np.int8),
            "block": block.astype(np.float32),
        }
    )
    t = np.linspace(0.0, 1.0, N_BINS)
    behaviour = {
        "wheel-speed": latent[:, [2]] * np.sin(2 * np.pi * t) + 0.3 * rng.standard_normal((n, N_BINS)),
        "whisker-motion-energy": 1.0 + t + 0.5 * latent[:, [3]] + 0.3 * rng.standard_normal((n, N_BINS)),
    }
    return features, trials, {k: v.astype(np.float32) for k, v in behaviour.items()}


def by_target(results):
    return {r.target: r for r in results}


def test_linear_signal_beats_chance_for_every_target():
    results = by_target(decode_behaviour(*synthetic_session()))
    assert list(results) == list(DECODING_TARGETS)
    for target in ("choice", "block"):
        assert results[target].metric == "accuracy"
        assert results[target].value > results[target].chance + 0.2, results[target]
        assert results[target].value > 0.85, results[target]
    for target in ("wheel-speed", "whisker-motion-energy"):
        assert results[target].metric == "r2"
        assert results[target].value > results[target].chance + 0.3, results[target]


def test_noise_features_score_near_chance():
    results = by_target(decode_behaviour(*synthetic_session(seed=1, signal=False)))
    for target in ("choice", "block"):
        assert abs(results[target].value - results[target].chance) < 0.15, results[target]
    for target in ("wheel-speed", "whisker-motion-energy"):
        # Above chance would mean leakage; well below it, a penalty too weak for noise.
        r = results[target]
        assert r.chance - 0.05 <= r.value <= r.chance + 0.02, r


def test_constant_features_score_exactly_chance():
    # No usable direction: the decoders fit intercepts only, i.e. the chance predictors.
    features, trials, behaviour = synthetic_session(seed=2)
    results = decode_behaviour(np.full_like(features, 3.0), trials, behaviour)
    for r in results:
        assert r.value == pytest.approx(r.chance, abs=1e-9), r


def _raw_and_rotated(seed=3, n_fit=60, n_test=20, p=400):
    features, _, behaviour = synthetic_session(seed=seed, n=n_fit + n_test, p=p)
    x_fit, x_test = _standardise(features[:n_fit], features[n_fit:])
    z_fit, z_test = _row_space(x_fit, x_test)
    return (x_fit, x_test), (z_fit, z_test), behaviour["wheel-speed"][:n_fit]


def test_row_space_drops_to_at_most_n_fit_minus_one_columns():
    (x_fit, _), (z_fit, z_test), _ = _raw_and_rotated()
    # Centring leaves the fit rows rank n_fit - 1 at most.
    assert z_fit.shape[1] <= len(x_fit) - 1 and z_test.shape[1] == z_fit.shape[1]
    # The rotation preserves inner products between fit rows.
    gram = x_fit @ x_fit.T
    np.testing.assert_allclose(z_fit @ z_fit.T, gram, rtol=0, atol=1e-8 * np.abs(gram).max())


@pytest.mark.parametrize("rows", [slice(None), slice(0, None, 2)], ids=["all-fit-rows", "one-cv-fold"])
@pytest.mark.parametrize("C", [1e-2, 1.0, 1e2])
def test_row_space_logistic_matches_raw_fit(C, rows):
    (x_fit, x_test), (z_fit, z_test), wheel = _raw_and_rotated()
    y = (wheel[:, 2] > np.median(wheel[:, 2])).astype(int)
    raw, rotated = (
        LogisticRegression(C=C, tol=1e-12, max_iter=100_000).fit(x[rows], y[rows]) for x in (x_fit, z_fit)
    )
    np.testing.assert_allclose(
        rotated.decision_function(z_test), raw.decision_function(x_test), rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(rotated.intercept_, raw.intercept_, rtol=0, atol=1e-6)


@pytest.mark.parametrize("rows", [slice(None), slice(0, None, 2)], ids=["all-fit-rows", "one-cv-fold"])
@pytest.mark.parametrize("alpha", [1e-1, 1e2, 1e5])
def test_row_space_ridge_matches_raw_fit(alpha, rows):
    (x_fit, x_test), (z_fit, z_test), wheel = _raw_and_rotated()
    raw = Ridge(alpha=alpha).fit(x_fit[rows], wheel[rows])
    rotated = Ridge(alpha=alpha).fit(z_fit[rows], wheel[rows])
    np.testing.assert_allclose(rotated.predict(z_test), raw.predict(x_test), rtol=0, atol=1e-6)


def test_the_authors_protocol_is_their_grid_search_on_raw_features():
    """protocol="authors" equals scikit-learn's GridSearchCV as their code calls it, on the raw
    features (no standardisation, unshuffled 4-fold CV; ridge alpha in {0, 10, ..., 1e4} scored
    by Ridge's own R2), fitted here without the row-space reduction."""
    import warnings

    from scipy.linalg import LinAlgWarning
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold

    from mtm.decoding import AUTHORS_ALPHA_GRID, C_GRID, flat_r2

    features, trials, behaviour = synthetic_session(seed=5)
    features = features * np.linspace(0.1, 10.0, features.shape[1])  # scales standardisation would undo
    fit, test = trials["split"].isin(["train", "val"]).to_numpy(), (trials["split"] == "test").to_numpy()
    ours = by_target(decode_behaviour(features, trials, behaviour, targets=["choice", "whisker-motion-energy"]))
    theirs = by_target(
        decode_behaviour(features, trials, behaviour, targets=["choice", "whisker-motion-energy"], protocol="authors")
    )
    choice = GridSearchCV(LogisticRegression(max_iter=10_000), {"C": C_GRID}, cv=StratifiedKFold(4))
    choice.fit(features[fit], trials["choice"][fit])
    assert theirs["choice"].value == accuracy_score(trials["choice"][test], choice.predict(features[test]))
    y = behaviour["whisker-motion-energy"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (LinAlgWarning, UserWarning))
        whisker = GridSearchCV(Ridge(), {"alpha": AUTHORS_ALPHA_GRID}, cv=KFold(4)).fit(features[fit], y[fit])
    assert theirs["whisker-motion-energy"].value == pytest.approx(flat_r2(y[test], whisker.predict(features[test])), abs=1e-6)
    assert theirs["whisker-motion-energy"].value != ours["whisker-motion-energy"].value
    with pytest.raises(ValueError, match="decoder protocol"):
        decode_behaviour(features, trials, behaviour, targets=["choice"], protocol="theirs")


def test_block_half_trials_are_dropped_and_do_not_matter():
    features, trials, behaviour = synthetic_session(seed=4)
    half = trials["block"].to_numpy() == np.float32(0.5)
    split = trials["split"].to_numpy()
    (block,) = decode_behaviour(features, trials, behaviour, targets=["block"])
    assert block.n_train == np.sum(~half & (split != "test"))
    assert block.n_test == np.sum(~half & (split == "test"))
    # Neither the fit (standardisation included) nor the score may see the 0.5 trials.
    scrambled = features.copy()
    scrambled[half] = 1e3 * np.random.default_rng(0).standard_normal(scrambled[half].shape)
    (again,) = decode_behaviour(scrambled, trials, behaviour, targets=["block"])
    assert again == block


def test_nan_target_rows_are_dropped():
    features, trials, behaviour = synthetic_session(seed=5)
    split = trials["split"].to_numpy()
    fit_rows, test_rows = np.flatnonzero(split != "test"), np.flatnonzero(split == "test")
    wheel = behaviour["wheel-speed"].copy()
    wheel[fit_rows[:7], 3] = np.nan
    wheel[test_rows[:2], -1] = np.nan
    (choice, result) = decode_behaviour(
        features, trials, {**behaviour, "wheel-speed": wheel}, targets=["choice", "wheel-speed"]
    )
    assert (result.n_train, result.n_test) == (len(fit_rows) - 7, len(test_rows) - 2)
    assert (choice.n_train, choice.n_test) == (len(fit_rows), len(test_rows))  # other targets keep them
    assert math.isfinite(result.value) and math.isfinite(result.chance)


def test_same_inputs_and_seed_give_identical_results():
    session = synthetic_session(seed=6)
    by_seed = [decode_behaviour(*session, seed=seed) for seed in range(3)]
    assert decode_behaviour(*session, seed=0) == by_seed[0]
    assert all(isinstance(r, DecodingResult) for r in by_seed[0])
    # The CV folds do move the result here, so the equality above rests on the seed.
    assert by_seed[1] != by_seed[0] or by_seed[2] != by_seed[0]


def test_chance_levels_match_hand_computation():
    # 12 fit trials: choice 8 x +1, 4 x -1 -> majority +1; block 4 x 0.2, 8 x 0.8 -> majority 0.8.
    # Wheel: per-bin fit means [1, 3]. 5 test trials; the last 3 have missing wheel data.
    n_fit = 12
    choice = [1] * 8 + [-1] * 4 + [1, 1, -1, -1, -1]
    block = [0.2] * 4 + [0.8] * 8 + [0.2, 0.2, 0.2, 0.8, 0.5]
    wheel = np.array([[0.0, 2.0], [2.0, 4.0]] * 6 + [[0.0, 4.0], [2.0, 2.0]] + [[np.nan, 0.0]] * 3)
    trials = pd.DataFrame(
        {"split": ["train"] * 10 + ["val"] * 2 + ["test"] * 5, "choice": choice, "block": np.float32(block)}
    )
    features = np.random.default_rng(7).standard_normal((n_fit + 5, 6))
    results = by_target(
        decode_behaviour(
            features, trials, {"wheel-speed": wheel}, targets=["choice", "block", "wheel-speed"]
        )
    )
    assert results["choice"].chance == pytest.approx(2 / 5)  # test trials with choice +1
    assert results["block"].chance == pytest.approx(1 / 4)  # one 0.8 among four non-0.5 test trials
    # Predict [1, 3] for test rows [0, 4] and [2, 2]: SS_res = 4, SS_tot about the pooled mean 2 = 8.
    assert results["wheel-speed"].chance == pytest.approx(1 - 4 / 8)
    assert (results["wheel-speed"].n_train, results["wheel-speed"].n_test) == (12, 2)


@pytest.mark.parametrize(
    "edit, target, reason",
    [
        (lambda t, b: t.assign(choice=np.int8(1)), "choice", "one class"),
        (lambda t, b: t.assign(block=np.float32(0.5)), "block", "usable fit trials"),
        (lambda t, b: t.assign(split="train"), "wheel-speed", "no usable test trials"),
        (lambda t, b: t.assign(choice=np.where(np.arange(len(t)) < 3, -1, 1)), "choice", "fewer than the 4"),
    ],
    ids=["one-class", "too-few-fit-trials", "no-test-trials", "class-smaller-than-folds"],
)
def test_undecodable_target_gives_nan_and_a_warning(edit, target, reason, caplog):
    features, trials, behaviour = synthetic_session(seed=8, n=60, p=20)
    with caplog.at_level(logging.WARNING, logger="mtm.decoding"):
        (result,) = decode_behaviour(features, edit(trials, behaviour), behaviour, targets=[target])
    assert math.isnan(result.value) and math.isnan(result.chance)
    messages = [r.getMessage() for r in caplog.records if r.name == "mtm.decoding"]
    assert len(messages) == 1 and target in messages[0] and reason in messages[0], messages


def test_mismatched_or_unknown_inputs_raise():
    features, trials, behaviour = synthetic_session(seed=9, n=40, p=10)
    with pytest.raises(ValueError, match="features have 39 rows.*trials table has 40"):
        decode_behaviour(features[:-1], trials, behaviour)
    with pytest.raises(ValueError, match=r"behaviour\['whisker-motion-energy'\] has shape \(39, 10\)"):
        short = {**behaviour, "whisker-motion-energy": behaviour["wheel-speed"][:-1]}
        decode_behaviour(features, trials, short)
    with pytest.raises(ValueError, match="unknown decoding targets.*'reward'"):
        decode_behaviour(features, trials, behaviour, targets=["choice", "reward"])
    with pytest.raises(ValueError, match="lacks 'wheel-speed'"):
        decode_behaviour(features, trials, {}, targets=["wheel-speed"])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['block'\]"):
        decode_behaviour(features, trials.drop(columns="block"), behaviour)
    with pytest.raises(ValueError, match="'Train'"):
        decode_behaviour(features, trials.assign(split="Train"), behaviour)
    with pytest.raises(ValueError, match="NaN or inf"):
        decode_behaviour(np.where(features > 2, np.nan, features), trials, behaviour)
