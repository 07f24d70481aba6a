"""Wheel and face-camera signals of a simulated session.

The wheel turns in minimum-jerk movements: one choice movement per go trial (from the movement
onset to the response) and small random movements between trials, never during the quiescent
period before a stimulus. The rotary encoder reports a sample only when the position crosses a
tick (2 pi / 4096 rad), as the FPGA does. Whisking is a smooth spontaneous signal plus a part
that follows wheel speed plus licking after rewards; both cameras film it, and their motion
energy is that signal plus noise, sampled at each frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtm.demo.signals import GRID_DT, min_jerk_velocity, smooth_noise
from mtm.demo.task import Task

WHEEL_FS = 1000  # Hz, resolution of the simulated continuous wheel position
WHEEL_TICK = 2 * np.pi / (1024 * 4)  # rad, one quadrature-encoder step
ITI_MOVES_PER_S = 0.5
LICK_HZ, LICK_DURATION = 7.0, 2.0  # licking bout after each reward
CAMERA_FS = {"left": 60.0, "right": 150.0}


@dataclass
class Behaviour:
    """Behavioural signals of one session.

    speed: [n_steps] wheel speed (rad/s) on the GRID_DT grid.
    whisking: [n_steps] whisking drive (a.u., unit variance) on the GRID_DT grid.
    wheel_timestamps, wheel_position: [n_samples] s and rad (cumulative, counter-clockwise
        positive), one sample per encoder tick crossing.
    camera_times, motion_energy: {'left', 'right'} -> [n_frames] s and a.u.
    """

    speed: np.ndarray
    whisking: np.ndarray
    wheel_timestamps: np.ndarray
    wheel_position: np.ndarray
    camera_times: dict[str, np.ndarray]
    motion_energy: dict[str, np.ndarray]


def _movements(rng: np.random.Generator, task: Task, duration: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(onset s, duration s, amplitude rad) [n_moves] of every wheel movement of the session."""
    trials = task.table
    go = np.isfinite(task.move_onset)
    # Choice +1 (answer to a left stimulus) turns the wheel clockwise: position decreases.
    onsets = [task.move_onset[go]]
    durations = [(task.move_end - task.move_onset)[go]]
    amplitudes = [-trials.choice.to_numpy()[go] * rng.uniform(0.3, 0.45, go.sum())]
    # Idle movements fill the gaps between the end of a trial's feedback and the next quiescent
    # period (and the start and end of the recording).
    gap_starts = np.r_[1.0, trials.feedback_times.to_numpy() + 0.3]
    gap_ends = np.r_[task.still_from, duration - 1.0]
    for start, end in zip(gap_starts, gap_ends):
        n = rng.poisson(ITI_MOVES_PER_S * max(end - start, 0.0))
        d = rng.uniform(0.15, 0.6, n)
        ok = d < end - start
        onsets.append(start + rng.uniform(0.0, 1.0, ok.sum()) * (end - start - d[ok]))
        durations.append(d[ok])
        amplitudes.append(rng.normal(0.0, 0.1, ok.sum()))
    return np.concatenate(onsets), np.concatenate(durations), np.concatenate(amplitudes)


def wheel_velocity(rng: np.random.Generator, task: Task, n_samples: int) -> np.ndarray:
    """Wheel velocity (rad/s) [n_samples] at WHEEL_FS, sum of all minimum-jerk movements."""
    velocity = np.zeros(n_samples)
    for onset, dur, amp in zip(*_movements(rng, task, n_samples / WHEEL_FS)):
        i0, i1 = int(np.ceil(onset * WHEEL_FS)), int(np.ceil((onset + dur) * WHEEL_FS))
        u = (np.arange(i0, i1) / WHEEL_FS - onset) / dur
        velocity[i0:i1] += amp / dur * min_jerk_velocity(u)
    return velocity


def encoder_samples(position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tick-crossing samples of a position trace [n] sampled at WHEEL_FS: (times s, rad).

    The crossing time is interpolated linearly between the two samples around it, so timestamps
    are irregular as real encoder events are; the position is the quantised one.
    """
    ticks = np.round(position / WHEEL_TICK)
    change = np.flatnonzero(np.diff(ticks)) + 1
    before, after = position[change - 1], position[change]
    boundary = (ticks[change - 1] + 0.5 * np.sign(after - before)) * WHEEL_TICK
    frac = np.clip((boundary - before) / (after - before), 0.0, 1.0)
    times = np.r_[0.0, (change - 1 + frac) / WHEEL_FS]
    return times, np.r_[ticks[0], ticks[change]] * WHEEL_TICK


def _camera(rng: np.random.Generator, fs: float, duration: float) -> np.ndarray:
    """Frame times [n_frames] s at about `fs` Hz with a little jitter, covering the recording."""
    n = int(duration * fs)
    times = rng.uniform(0.0, 0.5) + np.cumsum(rng.normal(1.0, 0.02, n)) / fs
    return times[times < duration]


def simulate_behaviour(rng: np.random.Generator, task: Task, n_steps: int) -> Behaviour:
    """Wheel, whisking and camera signals for `task` over n_steps * GRID_DT s of recording."""
    per_step = int(round(GRID_DT * WHEEL_FS))
    velocity = wheel_velocity(rng, task, n_steps * per_step)
    position = np.cumsum(velocity) / WHEEL_FS
    wheel_timestamps, wheel_position = encoder_samples(position)
    speed = np.abs(velocity).reshape(n_steps, per_step).mean(axis=1)

    t = (np.arange(n_steps) + 0.5) * GRID_DT
    licking = np.zeros(n_steps)
    for reward in task.table.feedback_times[task.table.feedbackType > 0]:
        bout = (t >= reward + 0.1) & (t < reward + 0.1 + LICK_DURATION)
        licking[bout] = 0.5 + 0.5 * np.sin(2 * np.pi * LICK_HZ * (t[bout] - reward))
    # Whisking follows running (low-passed wheel speed) but also varies on its own.
    running = np.convolve(speed, np.exp(-np.arange(100) * GRID_DT / 0.15), mode="full")[:n_steps]
    drive = smooth_noise(rng, n_steps, tau=0.5) + running / running.std() + licking
    whisking = (drive - drive.mean()) / drive.std()

    camera_times, motion_energy = {}, {}
    for side, fs in CAMERA_FS.items():
        times = _camera(rng, fs, n_steps * GRID_DT)
        # Motion energy is positive; softplus keeps it so while staying monotone in whisking.
        energy = 2.0 * np.logaddexp(0.0, np.interp(times, t, whisking)) + 1.0
        camera_times[side] = times
        motion_energy[side] = np.maximum(energy + rng.normal(0.0, 0.15, len(times)), 0.0)
    return Behaviour(speed, whisking, wheel_timestamps, wheel_position, camera_times, motion_energy)
