"""The trials table and the MtM trial filter, with the reason each excluded trial was dropped."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mtm.ibl.errors import SessionDataError
from mtm.ibl.local_session import LocalSession

# Events that must be present for a trial to be used (the paper's list, plus the alignment event).
REQUIRED_EVENTS = ("stimOn_times", "choice", "feedback_times", "probabilityLeft", "firstMovement_times", "feedbackType")

# Reasons in the order they are tested: a trial is recorded under the first one that applies.
EXCLUSION_REASONS = ("missing_event", "no_choice", "rt_too_short", "rt_too_long", "trial_too_long")


def load_trials(session: LocalSession) -> pd.DataFrame:
    """The session's trials table (`alf/[#rev#/]_ibl_trials.*`) via ibllib's SessionLoader.

    A session without any trials dataset gets an empty table (it will be unusable, not broken).
    """
    from brainbox.io.one import SessionLoader

    if not session.has("alf/*_ibl_trials.*"):
        return pd.DataFrame(columns=[*REQUIRED_EVENTS, "goCue_times", "contrastLeft", "contrastRight"], dtype=float)

    loader = SessionLoader(one=session.one, eid=session.eid)
    try:
        loader.load_trials()
    except Exception as err:
        raise SessionDataError(session.eid, "alf/_ibl_trials.table.pqt", f"trials failed to load: {type(err).__name__}: {err}") from None
    trials = loader.trials.reset_index(drop=True)
    missing = [c for c in REQUIRED_EVENTS if c not in trials]
    if missing:
        raise SessionDataError(session.eid, "alf/_ibl_trials.table.pqt", f"missing columns {missing}")
    return trials


def filter_trials(
    trials: pd.DataFrame,
    *,
    min_rt: float = 0.08,
    max_rt: float = 2.0,
    max_trial_len: float = 10.0,
    exclude_no_choice: bool = True,
    align_event: str = "stimOn_times",
) -> pd.Series:
    """The exclusion reason of each trial ('' when kept), as the MtM paper filters trials.

    Reaction time = firstMovement_times - stimOn_times (s), kept in [min_rt, max_rt]; trial length
    = feedback_times - goCue_times (s) <= max_trial_len; no NaN in the required events or the
    alignment event; choice != 0 (no-go trials) when exclude_no_choice.
    """
    required = list(dict.fromkeys([*REQUIRED_EVENTS, align_event]))
    rt = trials["firstMovement_times"] - trials["stimOn_times"]
    start = trials["goCue_times"] if "goCue_times" in trials else trials["stimOn_times"]
    trial_len = trials["feedback_times"] - start
    tests = {
        "missing_event": trials[required].isna().any(axis=1),
        "no_choice": (trials["choice"] == 0) if exclude_no_choice else pd.Series(False, index=trials.index),
        "rt_too_short": rt < min_rt,
        "rt_too_long": rt > max_rt,
        "trial_too_long": trial_len > max_trial_len,
    }
    reason = pd.Series("", index=trials.index, dtype=object)
    for name in reversed(EXCLUSION_REASONS):  # later assignment wins: the first reason in the order
        reason[tests[name].to_numpy()] = name
    return reason


def signed_contrast(trials: pd.DataFrame) -> np.ndarray:
    """Contrast right minus contrast left, in [-1, 1] (positive: stimulus on the right)."""
    return np.nan_to_num(trials["contrastRight"].to_numpy(float)) - np.nan_to_num(trials["contrastLeft"].to_numpy(float))
