"""The trials table and the MtM trial filter, with the reason each excluded trial was dropped."""

from __future__ import annotations

import difflib

import numpy as np
import pandas as pd

from mtm.ibl.errors import SessionDataError
from mtm.ibl.local_session import LocalSession

# Events that must be present for a trial to be used (the paper's list, plus the alignment event).
REQUIRED_EVENTS = ("stimOn_times", "choice", "feedback_times", "probabilityLeft", "firstMovement_times", "feedbackType")

# The event times of IBL trials tables (`_ibl_trials.table.pqt` and the loose `_ibl_trials.*_times`
# datasets; `intervals` is split into trial start and end by ONE's `to_df`), in s: the columns
# that `binning.align_event` may name. Older sessions lack some of them (a run-time error).
ALIGN_EVENTS = (
    "stimOn_times", "goCue_times", "firstMovement_times", "response_times", "feedback_times", "stimOff_times",
    "stimFreeze_times", "intervals_0", "intervals_1", "goCueTrigger_times", "stimOnTrigger_times",
    "stimOffTrigger_times", "stimFreezeTrigger_times", "errorCue_times", "valveOpen_times", "itiIn_times",
)  # fmt: skip
TRIALS_TABLE = "alf/_ibl_trials.table.pqt"

# Reasons in the order they are tested: a trial is recorded under the first one that applies.
EXCLUSION_REASONS = ("missing_event", "no_choice", "rt_too_short", "rt_too_long", "trial_too_long")


def check_align_event(align_event: str) -> str:
    """`align_event` if it is an event time of IBL trials tables (ALIGN_EVENTS); ValueError
    naming the close matches otherwise."""
    if align_event not in ALIGN_EVENTS:
        close = difflib.get_close_matches(str(align_event), ALIGN_EVENTS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(
            f"{align_event!r} is not an event time of IBL trials tables; {hint}one of {', '.join(ALIGN_EVENTS)}"
        )
    return align_event


def load_trials(session: LocalSession, align_event: str = "stimOn_times") -> pd.DataFrame:
    """The session's trials table (`alf/[#rev#/]_ibl_trials.*`) via ibllib's SessionLoader.

    A session without any trials dataset gets an empty table (it will be unusable, not broken);
    one that lacks a required event or `align_event` (binning.align_event) is broken.
    """
    from brainbox.io.one import SessionLoader

    if not session.has("alf/*_ibl_trials.*"):
        columns = dict.fromkeys([*REQUIRED_EVENTS, "goCue_times", "contrastLeft", "contrastRight", align_event])
        return pd.DataFrame(columns=list(columns), dtype=float)

    loader = SessionLoader(one=session.one, eid=session.eid)
    try:
        loader.load_trials()
    except Exception as err:
        raise SessionDataError(session.eid, TRIALS_TABLE, f"trials failed to load: {type(err).__name__}: {err}") from None
    trials = loader.trials.reset_index(drop=True)
    missing = [c for c in REQUIRED_EVENTS if c not in trials]
    if missing:
        raise SessionDataError(session.eid, TRIALS_TABLE, f"missing columns {missing}")
    if align_event not in trials:
        raise SessionDataError(
            session.eid, TRIALS_TABLE,
            f"no column {align_event!r}, the configured binning.align_event; this session's event times are "
            f"{[c for c in ALIGN_EVENTS if c in trials]}: align on one of those, or leave this session out",
        )  # fmt: skip
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
