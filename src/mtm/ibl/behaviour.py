"""Continuous behaviour signals: wheel speed and whisker motion energy.

Wheel velocity follows IBL: position interpolated at 1 kHz, 8th-order Butterworth low-pass at
20 Hz applied forwards and backwards (ibllib's brainbox.behavior.wheel). Whisker motion energy
comes from the left camera (60 Hz), falling back to the right camera (150 Hz), as MtM does.
"""

from __future__ import annotations

import logging

import numpy as np

from mtm.ibl.errors import SessionDataError
from mtm.ibl.local_session import LocalSession

log = logging.getLogger(__name__)

WHEEL_FS = 1000  # Hz, IBL's default resampling rate
WHEEL_STORE_STEP = 10  # keep every 10th sample (100 Hz): lossless after the 20 Hz low-pass


def wheel_velocity(timestamps: np.ndarray, position: np.ndarray, fs: float = WHEEL_FS) -> tuple[np.ndarray, np.ndarray]:
    """(times s, velocity rad/s) on a regular `fs` grid from irregular wheel samples."""
    from brainbox.behavior.wheel import interpolate_position, velocity_filtered

    pos, times = interpolate_position(timestamps, position, freq=fs)
    velocity, _ = velocity_filtered(pos, fs)
    return times, velocity


def clean_wheel(eid: str, timestamps: np.ndarray, position: np.ndarray, warnings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Repair the known wheel quirks (length mismatch, unsorted or repeated timestamps), noting each."""
    if timestamps.size != position.size:
        n = min(timestamps.size, position.size)
        warnings.append(f"wheel: {timestamps.size} timestamps vs {position.size} positions; truncated to {n}")
        timestamps, position = timestamps[:n], position[:n]
    if np.any(np.diff(timestamps) <= 0):
        order = np.argsort(timestamps, kind="stable")
        timestamps, position = timestamps[order], position[order]
        unique = np.concatenate([[True], np.diff(timestamps) > 0])
        warnings.append(f"wheel: timestamps not strictly increasing; sorted, {int((~unique).sum())} repeats dropped")
        timestamps, position = timestamps[unique], position[unique]
    finite = np.isfinite(timestamps) & np.isfinite(position)
    if finite.sum() < 2:
        raise SessionDataError(eid, "alf/_ibl_wheel.timestamps.npy", "fewer than 2 valid wheel samples")
    return timestamps[finite], position[finite]


def load_wheel_speed(session: LocalSession, warnings: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(times s, |velocity| rad/s) at 100 Hz, or None when the session has no wheel data."""
    if not session.has("alf/*_ibl_wheel.position.npy"):
        warnings.append("wheel: no wheel data")
        return None
    try:
        wheel = session.one.load_object(session.eid, "wheel", collection="alf", attribute=["position", "timestamps"])
    except Exception as err:
        raise SessionDataError(session.eid, "alf/_ibl_wheel.*", f"{type(err).__name__}: {err}") from None
    ts, pos = clean_wheel(session.eid, np.asarray(wheel["timestamps"], float), np.asarray(wheel["position"], float), warnings)
    times, velocity = wheel_velocity(ts, pos)
    return times[::WHEEL_STORE_STEP], np.abs(velocity[::WHEEL_STORE_STEP]).astype(np.float32)


def load_whisker_energy(session: LocalSession, warnings: list[str]) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(times s, motion energy, camera) from the left camera, else the right one, else None."""
    from brainbox.io.one import SessionLoader

    loader = SessionLoader(one=session.one, eid=session.eid)
    for view in ("left", "right"):
        energy_file = session.find(f"alf/*{view}Camera.ROIMotionEnergy.npy")
        times_file = session.find(f"alf/*_ibl_{view}Camera.times.npy")
        if not (energy_file and times_file):
            warnings.append(f"whisker: no {view} camera motion energy")
            continue
        try:
            loader.load_motion_energy(views=[view])
        except ValueError as err:  # camera times shorter than frames: unusable view
            warnings.append(f"whisker: {view} camera unusable ({err})")
            continue
        n_frames, n_times = (np.load(session.path / f, mmap_mode="r").shape[0] for f in (energy_file, times_file))
        if n_times > n_frames:  # ibllib keeps the last n_frames timestamps (frames lost at the start)
            dropped = n_times - n_frames
            warnings.append(f"whisker: {view} camera has {n_times} timestamps for {n_frames} frames; frames 0..{n_frames - 1} "
                            f"were given timestamps {dropped}..{n_times - 1} (the first {dropped} dropped)")  # fmt: skip
        frame = loader.motion_energy[f"{view}Camera"]
        return frame["times"].to_numpy(float), frame["whiskerMotionEnergy"].to_numpy(np.float32), view
    return None
