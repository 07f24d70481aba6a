"""Wheel velocity on the real FPGA wheel trace, against ibllib's own reference values."""

from pathlib import Path

import numpy as np

from mtm.ibl.behaviour import clean_wheel, wheel_velocity

DATA = Path(__file__).parent / "data"

# ibllib brainbox/tests/test_behavior.py, test_velocity_filtered (see tests/data/README.md)
VEL_LAST10 = [-0.03020161, -0.02642356, -0.0229635, -0.01981592, -0.01697264,
              -0.01442305, -0.01215438, -0.01015202, -0.00839981, -0.00688036]
ACC_FIRST10 = [0, 187.41222339, 4.16291917, 3.94583813, 3.67112556,
               3.33635025, 2.94002541, 2.48170905, 1.96209209, 1.38307198]


def test_velocity_matches_ibllib_reference_values():
    wheel = np.load(DATA / "wheel_fpga.npz")
    times, velocity = wheel_velocity(wheel["fpga_cm_t"], wheel["fpga_cm_pos"], fs=1000)
    np.testing.assert_allclose(velocity[-10:], VEL_LAST10, atol=1e-7)
    acceleration = np.insert(np.diff(velocity), 0, 0) * 1000
    np.testing.assert_allclose(acceleration[:10], ACC_FIRST10, atol=1e-5)
    assert np.allclose(np.diff(times), 1e-3)


def test_clean_wheel_truncates_length_mismatch():
    warnings = []
    ts, pos = clean_wheel("e", np.arange(10.0), np.arange(12.0), warnings)
    assert ts.size == pos.size == 10
    assert "truncated to 10" in warnings[0]


def test_clean_wheel_sorts_and_drops_repeats():
    warnings = []
    ts, pos = clean_wheel("e", np.array([0.0, 2.0, 1.0, 2.0, 3.0]), np.array([0.0, 2.0, 1.0, 2.5, 3.0]), warnings)
    assert np.all(np.diff(ts) > 0) and ts.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert "sorted" in warnings[0]
