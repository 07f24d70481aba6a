"""Behaviour decoding from a model's predicted rates: MtM's rate-based decoders (Zhang et al. 2024).

A linear decoder maps one trial's features (e.g. predicted log-rates flattened over (bins, units))
to one behaviour of that trial:

    target                  decoder                                        metric
    choice                  L2 logistic regression, -1 vs +1               accuracy
    block                   L2 logistic regression, probabilityLeft        accuracy
                            0.2 vs 0.8 (0.5 trials dropped), from the
                            bins before the alignment event only
    block-whole-trial       as block, from every bin of the trial          accuracy
    wheel-speed             multi-output ridge, one output per time bin    R² over test trials x bins
    whisker-motion-energy   as wheel-speed

Protocol. Decoders are fitted on the train+val trials ("fit trials") and scored on the test trials.
Features are standardised with the mean and std of the fit trials the target uses (exactly
constant features become 0). The regularisation strength is chosen by 4-fold cross-validation
on the fit trials only (StratifiedKFold for classifiers, KFold for ridge, shuffled with
random_state=seed), scored by accuracy or by the flattened R² below, then the best setting is
refitted on all fit trials.

    logistic C      np.logspace(-4, 4, 9)
    ridge alpha     np.logspace(-1, 5, 7)

`protocol="authors"` fits as the MtM authors' code does instead: raw features (no
standardisation), unshuffled folds, ridge alpha in AUTHORS_ALPHA_GRID (0 included) chosen by the
estimator's own R² (averaged over bins); the same C grid.

R² follows the paper: sklearn's r2_score(y_true.ravel(), y_pred.ravel()) over test trials x bins,
so explaining the trial-averaged time course already earns credit. Chance levels are scored on
the same test trials:

    accuracy  always predict the majority class of the fit trials (ties: the smaller label)
    R²        predict every test trial as the per-bin mean of the fit trials

Block from the pre-stimulus bins. IBL's analyses of the block prior (the brain-wide map's)
decode it from a window that ends before stimulus onset, where neither the stimulus nor the
choice can inform the decoder; over the whole trial a decoder can read the block from the
choice it biases. So `block` features come from a model run on the bins before the alignment
event (stimulus onset in the default binning) alone: `input_bins` says how many a target's
model input keeps. `block-whole-trial` is the whole-trial variant.

Trials a target cannot use are dropped from both fit and test trials: block 0.5 trials (the
unbiased start of a session) for block, trials with any non-finite bin for the regressions. A
target is not decodable, and gets value and chance NaN with a logged warning, when fewer than 8
fit trials or no test trial remain, or (classifiers) the fit trials hold fewer than 2 classes or
a class has fewer trials than there are CV folds.

Speed. At paper scale features are 100 bins x 668 units = 66,800 columns for ~300 fit trials.
L2-penalised weights lie in the span of the rows they are fitted on, so each decoder is fitted on
the fit trials' coordinates in that row space (<= n_fit columns) instead; see `_row_space`. This
is exact for every CV fold as well, because a fold's rows are fit-trial rows; it is the reason
features are standardised once on all fit trials rather than per fold (standardisation uses no
labels, so the folds' scores stay honest).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.linalg import LinAlgWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold

from mtm.vocabulary import CLASSIFICATION_TARGETS, DECODER_PROTOCOLS, DECODING_TARGETS, PRE_EVENT_TARGETS

logger = logging.getLogger(__name__)

TRIAL_COLUMN = {"block-whole-trial": "block"}  # a classification target's trials column, where not its name
C_GRID = np.logspace(-4, 4, 9)
ALPHA_GRID = np.logspace(-1, 5, 7)
AUTHORS_ALPHA_GRID = np.array([0.0, 10.0, 100.0, 1e3, 1e4])
N_FOLDS = 4
MIN_FIT_TRIALS = 8
# lbfgs stops on its gradient tolerance long before this; the cap only guards against a stall.
MAX_ITER = 10_000
# Gram eigenvalues below this fraction of the largest are rounding noise (see `_row_space`).
RANK_RTOL = 1e-10


@dataclass(frozen=True)
class DecodingResult:
    """One target's test score.

    target: one of DECODING_TARGETS
    metric: "accuracy" (choice, block) or "r2" (wheel-speed, whisker-motion-energy)
    value: the decoder's score on the test trials (NaN: not decodable)
    chance: the chance level on the same test trials (NaN: not decodable)
    n_train: trials the decoder was fitted on (train+val, after dropping unusable trials)
    n_test: test trials scored (after dropping unusable trials)
    """

    target: str
    metric: str
    value: float
    chance: float
    n_train: int
    n_test: int


def input_bins(target: str, session) -> int | None:
    """How many leading bins of a trial the model sees to make `target`'s features: the bins
    before the alignment event for PRE_EVENT_TARGETS, None (every bin) otherwise. `session`: a
    mtm.session.SessionHeader. ValueError when the binning window starts at or after the event."""
    if target not in PRE_EVENT_TARGETS:
        return None
    if session.pre_event_bins == 0:
        binning = session.meta["binning"]
        raise ValueError(
            f"session {session.eid}: {target!r} is decoded from the bins before {binning['align_event']}, "
            f"and the binning window {binning['window']} has none; decode 'block-whole-trial' instead, "
            "or start binning.window before the event"
        )
    return session.pre_event_bins


def decode_behaviour(
    features: np.ndarray,
    trials: pd.DataFrame,
    behaviour: dict[str, np.ndarray],
    *,
    targets: Sequence[str] = DECODING_TARGETS,
    seed: int = 0,
    protocol: str = "ours",
) -> list[DecodingResult]:
    """Decode each target from per-trial features; one DecodingResult per target, in order.

    features: (n_trials, n_features) float, e.g. predicted log-rates flattened over (bins, units)
    trials: n_trials rows with "split" ("train" | "val" | "test"), "choice" (-1 / +1) and
        "block" (probabilityLeft: 0.2, 0.5, 0.8); only the columns the targets need are read
    behaviour: "wheel-speed" and "whisker-motion-energy" -> (n_trials, n_bins) float, NaN where
        missing; only the keys the targets need are read
    seed: the random_state of the cross-validation folds; same inputs and seed, same results
    protocol: "ours" or "authors" (the module docstring)

    Rows of features, trials and behaviour arrays are the same trials. Raises ValueError on
    unknown targets or splits, missing columns or keys, mismatched row counts, or non-finite
    features.
    """
    features = np.asarray(features)
    if protocol not in DECODER_PROTOCOLS:
        raise ValueError(f"decoder protocol must be one of {DECODER_PROTOCOLS}, not {protocol!r}")
    _check_inputs(features, trials, behaviour, targets)
    split = trials["split"].to_numpy()
    fit, test = np.isin(split, ("train", "val")), split == "test"
    results = []
    for target in targets:
        y, usable = target_values(target, trials, behaviour)
        results.append(_decode(target, features, y, fit & usable, test & usable, seed, protocol))
    return results


def _check_inputs(features, trials, behaviour, targets) -> None:
    unknown = sorted(set(targets) - set(DECODING_TARGETS))
    if unknown:
        raise ValueError(f"unknown decoding targets {unknown}; known: {list(DECODING_TARGETS)}")
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D (n_trials, n_features), got shape {features.shape}")
    n = features.shape[0]
    if len(trials) != n:
        raise ValueError(f"features have {n} rows (trials) but the trials table has {len(trials)}")
    needed = ["split"] + [TRIAL_COLUMN.get(t, t) for t in targets if t in CLASSIFICATION_TARGETS]
    missing = [c for c in dict.fromkeys(needed) if c not in trials.columns]
    if missing:
        raise ValueError(f"trials table lacks column(s) {missing}")
    bad_splits = sorted(set(trials["split"]) - {"train", "val", "test"})
    if bad_splits:
        raise ValueError(f"trials['split'] has values {bad_splits}; expected 'train', 'val', 'test'")
    for target in targets:
        if target in CLASSIFICATION_TARGETS:
            continue
        if target not in behaviour:
            raise ValueError(f"behaviour lacks {target!r} (keys: {sorted(behaviour)})")
        shape = np.shape(behaviour[target])
        if len(shape) != 2 or shape[0] != n:
            raise ValueError(f"behaviour[{target!r}] has shape {shape}; expected ({n}, n_bins)")
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or inf")


def target_values(
    target: str, trials: pd.DataFrame, behaviour: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The target per trial and the trials it can use.

    Returns (n_trials,) labels or (n_trials, n_bins) values, and (n_trials,) bool.
    """
    if target == "choice":
        y = trials["choice"].to_numpy()
        return y, np.ones(len(y), dtype=bool)
    if target in ("block", "block-whole-trial"):
        p_left = trials["block"].to_numpy(dtype=np.float64)
        # 1: left-biased block (probabilityLeft 0.8), 0: right-biased (0.2).
        return (p_left > 0.5).astype(np.int8), np.isfinite(p_left) & ~np.isclose(p_left, 0.5)
    y = np.asarray(behaviour[target], dtype=np.float64)
    return y, np.isfinite(y).all(axis=1)


def _decode(
    target: str, features: np.ndarray, y: np.ndarray, fit: np.ndarray, test: np.ndarray, seed: int, protocol: str
) -> DecodingResult:
    """One target: y (n_trials, ...) and fit/test (n_trials,) bool masks of its usable trials."""
    classify = target in CLASSIFICATION_TARGETS
    metric = "accuracy" if classify else "r2"
    n_fit, n_test = int(fit.sum()), int(test.sum())
    reason = not_decodable(y[fit], n_fit, n_test, classify)
    if reason is not None:
        logger.warning("cannot decode %s: %s", target, reason)
        return DecodingResult(target, metric, float("nan"), float("nan"), n_fit, n_test)

    if protocol == "authors":
        x_fit, x_test = features[fit].astype(np.float64), features[test].astype(np.float64)
    else:
        x_fit, x_test = _standardise(features[fit], features[test])
    z_fit, z_test = _row_space(x_fit, x_test)
    y_fit, y_test = y[fit], y[test]
    if classify:
        model = _classifier(seed, protocol).fit(z_fit, y_fit)
        value = accuracy_score(y_test, model.predict(z_test))
    else:
        with warnings.catch_warnings():  # alpha 0 of the authors' grid: an unpenalised fit may be singular
            warnings.simplefilter("ignore", (LinAlgWarning, UserWarning))
            model = _regressor(seed, protocol).fit(z_fit, y_fit)
        value = flat_r2(y_test, model.predict(z_test))
    return DecodingResult(target, metric, float(value), chance_level(y_fit, y_test, classify), n_fit, n_test)


def not_decodable(y_fit: np.ndarray, n_fit: int, n_test: int, classify: bool) -> str | None:
    """Why a target cannot be decoded from these trials, or None if it can."""
    if n_fit < MIN_FIT_TRIALS:
        return f"{n_fit} usable fit trials, need at least {MIN_FIT_TRIALS}"
    if n_test < 1:
        return "no usable test trials"
    if classify:
        classes, counts = np.unique(y_fit, return_counts=True)
        if len(classes) < 2:
            return f"the fit trials hold one class only ({classes[0]})"
        if counts.min() < N_FOLDS:
            # Stratified CV needs each class in every fold.
            small = classes[counts.argmin()]
            return f"class {small} has {counts.min()} fit trials, fewer than the {N_FOLDS} CV folds"
    return None


def _standardise(x_fit: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z-score both with the fit rows' mean and std, in float64; (n_fit, p), (n_test, p) -> same shapes.

    Exactly constant fit columns get std 1: they become 0 (up to rounding of the mean) on the fit
    rows instead of NaN, and carry no weight under an L2 penalty.
    """
    x_fit, x_test = x_fit.astype(np.float64), x_test.astype(np.float64)
    mean, std = x_fit.mean(axis=0), x_fit.std(axis=0)
    std[x_fit.max(axis=0) == x_fit.min(axis=0)] = 1.0
    return (x_fit - mean) / std, (x_test - mean) / std


def _row_space(x_fit: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of fit and test rows in the row space of x_fit.

    (n_fit, p), (n_test, p) -> (n_fit, r), (n_test, r), r <= n_fit.

    With the thin SVD x_fit = U S Vt, returns x_fit Vt.T = U S and x_test Vt.T.
    Weights w = Vt.T a have |w| = |a| and predict w.x = a.(Vt x), and an L2-penalised fit's
    optimal w lies in the row space, so fitting on these coordinates gives the raw fit's
    predictions up to rounding.

    U and S come from the eigendecomposition of the Gram matrix x_fit x_fit.T, because a thin SVD
    of a 300 x 66,800 matrix takes ~25 s on 2 cores and the Gram route ~0.3 s. Its eigenvalues carry
    errors of ~1e-16 times the largest, so directions below RANK_RTOL of it (singular values
    below ~1e-5 of the largest) are dropped; the centred fit rows always leave one such direction.
    If none survives (constant features), one zero column stands in: the decoders then fit only
    their intercepts, which is what the raw fit does.
    """
    eigenvalues, u = np.linalg.eigh(x_fit @ x_fit.T)
    keep = eigenvalues > RANK_RTOL * eigenvalues.max()
    if not keep.any():
        return np.zeros((len(x_fit), 1)), np.zeros((len(x_test), 1))
    s, u = np.sqrt(eigenvalues[keep]), u[:, keep]
    return u * s, (x_test @ x_fit.T) @ (u / s)


def _classifier(seed: int, protocol: str) -> GridSearchCV:
    shuffle = protocol == "ours"
    return GridSearchCV(
        LogisticRegression(max_iter=MAX_ITER),  # lbfgs; l1_ratio=0 is the L2 penalty
        {"C": C_GRID},
        scoring="accuracy",
        cv=StratifiedKFold(N_FOLDS, shuffle=shuffle, random_state=seed if shuffle else None),
        error_score="raise",
    )


def _regressor(seed: int, protocol: str) -> GridSearchCV:
    if protocol == "authors":
        return GridSearchCV(Ridge(), {"alpha": AUTHORS_ALPHA_GRID}, cv=KFold(N_FOLDS), error_score="raise")
    return GridSearchCV(
        Ridge(),
        {"alpha": ALPHA_GRID},
        scoring=_flat_r2_scorer,
        cv=KFold(N_FOLDS, shuffle=True, random_state=seed),
        error_score="raise",
    )


def flat_r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """R² over all trials x bins pooled, the paper's convention; (n, n_bins) each."""
    return float(r2_score(y_true.ravel(), y_pred.ravel()))


def _flat_r2_scorer(estimator: Ridge, x: np.ndarray, y: np.ndarray) -> float:
    return flat_r2(y, estimator.predict(x))


def chance_level(y_fit: np.ndarray, y_test: np.ndarray, classify: bool) -> float:
    """Test score of the constant predictor learnt from the fit trials (see the module docstring)."""
    if classify:
        classes, counts = np.unique(y_fit, return_counts=True)
        return float(np.mean(y_test == classes[counts.argmax()]))
    return flat_r2(y_test, np.broadcast_to(y_fit.mean(axis=0), y_test.shape))
