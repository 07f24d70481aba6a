"""Unit selection on the real 122,885-unit repeated-site table."""

from importlib import resources

import numpy as np
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


def test_allen_level_regions_keep_layers_apart_and_root_and_void(real_units):
    """`region_level: allen` (the authors'): a real insertion's units keep their raw Allen
    acronyms, so the cortical layers of VISam are regions of their own and its units in `void`
    (outside the brain; `root` elsewhere) stay in as one more (QC selects on quality, never on
    region); Beryl merges the layers. The region tasks hide what the level says."""
    import torch

    from mtm import heldout
    from mtm.ibl.regions import region_labels
    from mtm.masking import make_mask

    units = real_units.loc["0851db85-2889-4070-ac18-a40e8ebd96ba"]
    labels = region_labels(units["atlas_id"].to_numpy())
    allen, beryl = labels["allen"].astype(str), labels["beryl"].astype(str)
    assert (allen == units["acronym"].to_numpy()).all()
    kept = select_units(units, rule="all")
    assert kept.all() and "void" in set(allen[kept])
    assert select_units(real_units[real_units["acronym"].isin(["root", "void"])], rule="all").sum() == 1202
    layers = {a for a in allen if a.startswith("VISam")}
    assert {"VISam2/3", "VISam5", "VISam6a"} <= layers and set(beryl[np.isin(allen, list(layers))]) == {"VISam"}
    hidden = {level: [h.hidden for h in heldout.holdouts("inter-region", regions)] for level, regions in
              (("allen", allen), ("beryl", beryl))}  # fmt: skip
    layer5 = next(h for h in hidden["allen"] if (allen[h] == "VISam5").all())
    assert layer5.sum() == (allen == "VISam5").sum()
    visam = next(h for h in hidden["beryl"] if (beryl[h] == "VISam").all())
    assert visam.sum() == np.isin(allen, list(layers)).sum() > layer5.sum()
    assert any((allen[h] == "void").all() for h in hidden["allen"])
    assert len(hidden["allen"]) > len(hidden["beryl"])
    # training's inter-region masks at the Allen level hide one layer (or void) whole, nothing else
    ids = torch.from_numpy(pd.factorize(allen)[0])
    mask = make_mask("inter-region", shape=(64, 2, len(allen)), regions=ids, generator=torch.Generator().manual_seed(0))
    for units in mask.hidden[:, 0, :]:
        chosen = set(allen[units.numpy()])
        assert len(chosen) == 1 and units.sum() == (allen == chosen.pop()).sum()
