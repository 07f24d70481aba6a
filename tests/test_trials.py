import numpy as np
import pandas as pd

from mtm.ibl.trials import filter_trials, signed_contrast


def make_trials(**columns):
    n = len(next(iter(columns.values())))
    base = dict(
        stimOn_times=np.arange(n) * 5.0 + 1.0,
        goCue_times=np.arange(n) * 5.0 + 1.0,
        firstMovement_times=np.arange(n) * 5.0 + 1.3,
        feedback_times=np.arange(n) * 5.0 + 1.6,
        choice=np.ones(n),
        feedbackType=np.ones(n),
        probabilityLeft=np.full(n, 0.5),
        contrastLeft=np.full(n, 1.0),
        contrastRight=np.full(n, np.nan),
    )
    base.update(columns)
    return pd.DataFrame(base)


def test_each_reason_and_its_priority():
    t = make_trials(
        choice=np.array([1, 0, 1, 1, 1, -1, 0], float),
        firstMovement_times=np.array([1.3, 6.3, 11.05, 18.5, 21.3, np.nan, 31.01]),
        feedback_times=np.array([1.6, 6.6, 11.6, 18.8, 32.0, 26.6, 31.6]),
    )
    reasons = filter_trials(t).tolist()
    assert reasons == ["", "no_choice", "rt_too_short", "rt_too_long", "trial_too_long", "missing_event", "no_choice"]


def test_thresholds_are_configurable():
    t = make_trials(firstMovement_times=np.array([1.05, 6.3]), choice=np.array([0.0, 1.0]))
    assert filter_trials(t, min_rt=0.01, exclude_no_choice=False).tolist() == ["", ""]


def test_alignment_event_must_be_present():
    t = make_trials(choice=np.ones(2))
    t["firstMovement_times"] = [1.3, 6.3]
    t["response_times"] = [np.nan, 6.5]
    assert filter_trials(t, align_event="response_times").tolist() == ["missing_event", ""]


def test_signed_contrast_is_right_minus_left():
    t = make_trials(contrastLeft=np.array([0.25, np.nan, 0.0]), contrastRight=np.array([np.nan, 1.0, np.nan]))
    assert signed_contrast(t).tolist() == [-0.25, 1.0, 0.0]
