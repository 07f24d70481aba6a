"""The IBL visual decision task, simulated trial by trial (ephysChoiceWorld structure).

A stimulus of contrast c appears on the left or right; the mouse turns the wheel to bring it to
the centre. The first 90 trials are unbiased (P(left) = 0.5), then blocks with P(left) = 0.2 or
0.8 alternate, each 20-100 trials long. The simulated mouse keeps a running estimate of P(left)
from past stimulus sides (its subjective prior), which biases its choices toward the likely side;
the neural model reads the same estimate, so behaviour and activity share one prior signal.

Conventions (as in the ALF trials table): times in seconds from the start of the recording;
choice = +1 is the correct response to a LEFT stimulus, -1 to a right one, 0 = no-go (no response
within 60 s); the wheel turns clockwise (position decreasing) for choice +1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtr

CONTRASTS = np.array([0.0, 0.0625, 0.125, 0.25, 1.0])
N_UNBIASED = 90
BLOCK_LEN_MIN, BLOCK_LEN_MAX, BLOCK_LEN_SCALE = 20, 100, 60.0
RESPONSE_TIMEOUT = 60.0  # s, IBL's limit before a trial counts as no-go
REWARD_UL = 1.5  # µl of water per correct trial
P_NOGO = 0.02
P_MISSED_MOVEMENT = 0.01  # go trials whose movement onset the extraction would miss (NaN)

# Psychometric curve: P(choice=+1) = lapse + (1 - 2 lapse) * Phi((s + PRIOR_GAIN (prior - 0.5)) / SLOPE)
# with s the contrast signed positive on the left.
LAPSE, SLOPE, PRIOR_GAIN = 0.05, 0.15, 0.4
PRIOR_LEARNING_RATE = 0.15  # per trial, of the running estimate of P(left)

TRIAL_COLUMNS = [
    "intervals_0", "intervals_1", "goCue_times", "stimOn_times", "firstMovement_times",
    "response_times", "feedback_times", "choice", "feedbackType", "contrastLeft", "contrastRight",
    "probabilityLeft", "rewardVolume",
]  # fmt: skip


@dataclass
class Task:
    """A simulated session of `n` trials.

    table: the ALF `_ibl_trials.table` DataFrame [n rows], float64 columns TRIAL_COLUMNS.
    go_cue_trigger, stim_off: [n] s, the loose `_ibl_trials.*_times` datasets.
    move_onset, move_end: [n] s, the true choice movement (NaN on no-go trials); unlike
        firstMovement_times, move_onset is known on trials where the extraction misses it.
    still_from: [n] s, start of the quiescent period (no wheel movement) before each stimulus.
    prior: [n] the mouse's running estimate of P(left) at each trial, in (0, 1).
    """

    table: pd.DataFrame
    go_cue_trigger: np.ndarray
    stim_off: np.ndarray
    move_onset: np.ndarray
    move_end: np.ndarray
    still_from: np.ndarray
    prior: np.ndarray

    @property
    def duration(self) -> float:
        """Seconds of recording the task needs: the last trial ends, then a short tail."""
        return float(self.table.intervals_1.iloc[-1]) + 5.0


def block_probabilities(rng: np.random.Generator, n_trials: int) -> np.ndarray:
    """P(left) per trial [n_trials]: 90 trials at 0.5, then alternating 0.2 / 0.8 blocks."""
    p = np.full(n_trials, 0.5)
    side = rng.integers(2)
    start = N_UNBIASED
    while start < n_trials:
        length = BLOCK_LEN_MAX + 1
        while not BLOCK_LEN_MIN <= length <= BLOCK_LEN_MAX:  # truncated exponential, mean ~50
            length = int(round(rng.exponential(BLOCK_LEN_SCALE)))
        p[start : start + length] = (0.2, 0.8)[side]
        side = 1 - side
        start += length
    return p


def subjective_prior(stim_left: np.ndarray) -> np.ndarray:
    """Running estimate of P(left) before each trial [n], from the sides of earlier trials."""
    prior = np.empty(len(stim_left))
    estimate = 0.5
    for i, left in enumerate(stim_left):
        prior[i] = estimate
        estimate += PRIOR_LEARNING_RATE * (float(left) - estimate)
    return prior


def simulate_task(rng: np.random.Generator, n_trials: int, t_start: float = 30.0) -> Task:
    """Simulate `n_trials` trials starting at `t_start` s; see the module docstring."""
    p_left = block_probabilities(rng, n_trials)
    stim_left = rng.random(n_trials) < p_left
    contrast = rng.choice(CONTRASTS, n_trials)
    prior = subjective_prior(stim_left)

    signed = np.where(stim_left, contrast, -contrast)
    p_choice_left = LAPSE + (1 - 2 * LAPSE) * ndtr((signed + PRIOR_GAIN * (prior - 0.5)) / SLOPE)
    choice = np.where(rng.random(n_trials) < p_choice_left, 1.0, -1.0)
    nogo = rng.random(n_trials) < P_NOGO
    choice[nogo] = 0.0
    correct = choice == np.where(stim_left, 1.0, -1.0)

    # Reaction times are lognormal, slower for faint stimuli; the tails give a few anticipatory
    # (< 0.08 s) and a few disengaged (> 2 s) trials, as in real sessions.
    rt = (0.22 + 0.3 * np.exp(-contrast / 0.08)) * rng.lognormal(0.0, 0.7, n_trials)
    move_duration = np.clip(0.25 * rng.lognormal(0.0, 0.35, n_trials), 0.08, 1.5)
    quiescence = rng.uniform(0.4, 0.7, n_trials)  # the wheel must stay still this long
    waiting = 0.1 + rng.exponential(1.2, n_trials)  # ITI movements restart the quiescent period

    cols = {c: np.full(n_trials, np.nan) for c in TRIAL_COLUMNS}
    trigger, stim_off = np.empty(n_trials), np.empty(n_trials)
    move_onset, move_end = np.full(n_trials, np.nan), np.full(n_trials, np.nan)
    t = t_start
    for i in range(n_trials):
        cols["intervals_0"][i] = t
        stim_on = t + waiting[i] + quiescence[i]
        trigger[i] = stim_on + rng.uniform(-0.004, 0.004)
        cols["goCue_times"][i] = trigger[i] + rng.uniform(0.0005, 0.002)  # sound card latency
        cols["stimOn_times"][i] = stim_on
        if nogo[i]:
            response = stim_on + RESPONSE_TIMEOUT
        else:
            move_onset[i] = stim_on + rt[i]
            move_end[i] = response = move_onset[i] + move_duration[i]
        feedback = response + rng.uniform(0.0005, 0.003)
        cols["response_times"][i], cols["feedback_times"][i] = response, feedback
        stim_off[i] = feedback + (1.0 if correct[i] else 2.0) + rng.uniform(0.0, 0.05)
        cols["intervals_1"][i] = stim_off[i] + rng.uniform(0.45, 0.55)
        t = cols["intervals_1"][i] + rng.uniform(0.02, 0.06)

    missed = ~nogo & (rng.random(n_trials) < P_MISSED_MOVEMENT)
    cols["firstMovement_times"] = np.where(missed, np.nan, move_onset)
    cols["choice"] = choice
    cols["feedbackType"] = np.where(correct, 1.0, -1.0)
    cols["contrastLeft"] = np.where(stim_left, contrast, np.nan)
    cols["contrastRight"] = np.where(stim_left, np.nan, contrast)
    cols["probabilityLeft"] = p_left
    cols["rewardVolume"] = np.where(correct, REWARD_UL, 0.0)
    return Task(
        table=pd.DataFrame(cols)[TRIAL_COLUMNS],
        go_cue_trigger=trigger,
        stim_off=stim_off,
        move_onset=move_onset,
        move_end=move_end,
        still_from=cols["stimOn_times"] - quiescence,
        prior=prior,
    )
