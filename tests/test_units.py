"""Unit selection on the real 122,885-unit repeated-site table."""

from importlib import resources

import pandas as pd
import pytest

from mtm.ibl.units import select_units


@pytest.fixture(scope="module")
def real_units():
    with resources.as_file(resources.files("mtm") / "data" / "re_clusters.pqt") as path:
        return pd.read_parquet(path)


def test_all_keeps_every_unit(real_units):
    assert len(real_units) == 122_885
    assert select_units(real_units, rule="all").sum() == 122_885


def test_good_is_ibl_label_one(real_units):
    # 10,192 units pass all three IBL criteria (published with the table)
    assert select_units(real_units, rule="good").sum() == 10_192


@pytest.mark.parametrize("rule", ["all", "good"])
@pytest.mark.parametrize("min_rate", [0.5, 1.0, 5.0])
def test_min_firing_rate(real_units, rule, min_rate):
    expected = sum(
        1
        for label, rate in zip(real_units["label"], real_units["firing_rate"])
        if rate >= min_rate and (rule == "all" or label == 1.0)
    )
    mask = select_units(real_units, rule=rule, min_firing_rate_hz=min_rate)
    assert mask.sum() == expected
    assert 0 < expected < len(real_units)


def test_fractional_labels_are_not_good():
    units = pd.DataFrame({"label": [0, 1 / 3, 2 / 3, 1.0], "firing_rate": [1.0] * 4})
    assert select_units(units, rule="good").tolist() == [False, False, False, True]


def test_unknown_rule():
    with pytest.raises(ValueError, match="unit rule"):
        select_units(pd.DataFrame({"label": [1.0], "firing_rate": [1.0]}), rule="best")
