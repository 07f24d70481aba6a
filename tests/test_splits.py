import numpy as np
import pytest

from mtm.splits import split_trials

EID = "d57df551-6dcb-4242-9c72-b806cff5613a"


def test_sizes_follow_the_fractions():
    labels = split_trials(EID, 577, seed=42)
    assert (labels == "train").sum() == int(0.7 * 577)
    assert (labels == "val").sum() == int(0.8 * 577) - int(0.7 * 577)
    assert (labels == "test").sum() == 577 - int(0.8 * 577)


def test_function_of_eid_and_seed_only():
    a = split_trials(EID, 400, seed=1)
    split_trials("824cf03d-4012-4ab1-b499-c83a92c5589e", 300, seed=1)  # other sessions in between
    assert np.array_equal(a, split_trials(EID, 400, seed=1))
    assert not np.array_equal(a, split_trials(EID, 400, seed=2))
    assert not np.array_equal(a, split_trials("824cf03d-4012-4ab1-b499-c83a92c5589e", 400, seed=1))


def test_bad_fractions():
    with pytest.raises(ValueError, match="fractions"):
        split_trials(EID, 10, fractions=(0.5, 0.5, 0.5))
