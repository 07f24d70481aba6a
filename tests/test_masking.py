"""Masking schemes: the promised structure on random inputs, ratios, determinism, regions."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtm.masking import DEFAULT_RATIO, apply_mask, make_mask, sample_scheme
from mtm.vocabulary import MASKING_SCHEMES, MTM_SCHEMES


@st.composite
def batches(draw):
    """(shape, regions (N,) or (B, N), unit_valid (B, N) or None, seed) of a random small batch."""
    B, T, N = draw(st.integers(1, 4)), draw(st.integers(1, 8)), draw(st.integers(1, 12))
    per_sample = draw(st.booleans())
    n_regions = draw(st.integers(1, 4))
    size = (B, N) if per_sample else (N,)
    regions = torch.tensor(draw(st.lists(st.integers(0, n_regions - 1), min_size=B * N, max_size=B * N)))
    regions = regions[: size[-1]] if not per_sample else regions.view(B, N)
    valid = None
    if draw(st.booleans()):
        valid = torch.tensor(draw(st.lists(st.booleans(), min_size=B * N, max_size=B * N))).view(B, N)
    return (B, T, N), regions, valid, draw(st.integers(0, 2**32 - 1))


def draw(scheme, shape, regions, valid, seed, ratio=None, token_units=None):
    return make_mask(
        scheme,
        shape=shape,
        regions=regions,
        unit_valid=valid,
        generator=torch.Generator().manual_seed(seed),
        ratio=ratio,
        token_units=token_units,
    )


def per_sample(shape, regions, valid):
    B, _, N = shape
    valid = torch.ones(B, N, dtype=torch.bool) if valid is None else valid
    return regions.expand(B, N), valid


@settings(max_examples=60, deadline=None)
@given(batches(), st.sampled_from(MASKING_SCHEMES))
def test_common_structure(batch, scheme):
    shape, regions, valid, seed = batch
    mask = draw(scheme, shape, regions, valid, seed)
    _, valid_bn = per_sample(shape, regions, valid)
    assert mask.hidden.shape == mask.target.shape == shape
    assert mask.hidden.dtype == mask.target.dtype == torch.bool
    assert not (mask.target & ~mask.hidden).any(), "scored entries are hidden"
    assert not (mask.target & ~valid_bn[:, None, :]).any(), "padding units are never scored"
    assert mask.causal == (scheme == "causal")
    # at least one scored entry in every sample that has a valid unit
    has_valid = valid_bn.any(dim=1)
    assert torch.equal(mask.target.flatten(1).any(dim=1), has_valid)
    # the same seed gives the same mask
    again = draw(scheme, shape, regions, valid, seed)
    assert torch.equal(mask.hidden, again.hidden) and torch.equal(mask.target, again.target)


@settings(max_examples=40, deadline=None)
@given(batches(), st.sampled_from(["temporal", "causal"]))
def test_temporal_hides_whole_bins(batch, scheme):
    shape, regions, valid, seed = batch
    mask = draw(scheme, shape, regions, valid, seed)
    _, valid_bn = per_sample(shape, regions, valid)
    bins = mask.hidden[:, :, 0]
    assert torch.equal(mask.hidden, bins[:, :, None].expand(shape))
    assert torch.equal(mask.target, mask.hidden & valid_bn[:, None, :])
    assert bins.any(dim=1).all()


@settings(max_examples=40, deadline=None)
@given(batches())
def test_neuron_hides_whole_units(batch):
    shape, regions, valid, seed = batch
    mask = draw("neuron", shape, regions, valid, seed)
    _, valid_bn = per_sample(shape, regions, valid)
    units = mask.hidden[:, 0, :]
    assert torch.equal(mask.hidden, units[:, None, :].expand(shape))
    assert torch.equal(mask.target, mask.hidden)
    assert not (units & ~valid_bn).any()


@settings(max_examples=40, deadline=None)
@given(batches())
def test_random_scores_what_it_hides(batch):
    shape, regions, valid, seed = batch
    mask = draw("random", shape, regions, valid, seed)
    _, valid_bn = per_sample(shape, regions, valid)
    assert torch.equal(mask.target, mask.hidden)
    assert not (mask.hidden & ~valid_bn[:, None, :]).any()


@settings(max_examples=60, deadline=None)
@given(batches(), st.integers(1, 5))
def test_random_token_hides_whole_tokens(batch, token_units):
    shape, regions, valid, seed = batch
    B, T, N = shape
    mask = draw("random-token", shape, regions, valid, seed, token_units=token_units)
    _, valid_bn = per_sample(shape, regions, valid)
    token = torch.arange(N) // token_units
    for k in token.unique():
        units = mask.hidden[:, :, token == k]
        assert torch.equal(units, units[:, :, :1].expand_as(units)), "a token is hidden whole"
        if k < token.max():
            assert (token == k).sum() == token_units
        # a token of padding units only is never chosen
        assert not (units.any(dim=2) & ~valid_bn[:, token == k].any(dim=1)[:, None]).any()
    assert torch.equal(mask.target, mask.hidden & valid_bn[:, None, :])


def test_random_token_of_a_whole_bin_is_temporal_masking():
    regions = torch.zeros(7, dtype=torch.long)
    mask = draw("random-token", (3, 50, 7), regions, None, seed=1)
    assert torch.equal(mask.hidden, mask.hidden[:, :, :1].expand(3, 50, 7))
    patches = draw("random-token", (64, 100, 200), torch.zeros(200, dtype=torch.long), None, 2, token_units=64)
    assert patches.hidden.float().mean().item() == pytest.approx(DEFAULT_RATIO["random-token"], abs=0.01)


@settings(max_examples=60, deadline=None)
@given(batches())
def test_inter_region_hides_one_whole_region(batch):
    shape, regions, valid, seed = batch
    mask = draw("inter-region", shape, regions, valid, seed)
    regions_bn, valid_bn = per_sample(shape, regions, valid)
    assert torch.equal(mask.target, mask.hidden)
    units = mask.hidden[:, 0, :]
    assert torch.equal(mask.hidden, units[:, None, :].expand(shape))
    for b in range(shape[0]):
        if not valid_bn[b].any():
            assert not units[b].any()
            continue
        chosen = regions_bn[b][units[b]].unique()
        assert len(chosen) == 1, "exactly one region"
        assert torch.equal(units[b], (regions_bn[b] == chosen) & valid_bn[b]), "all of its valid units"


@settings(max_examples=60, deadline=None)
@given(batches(), st.floats(0.0, 1.0))
def test_intra_region_predicts_a_region_from_itself(batch, ratio):
    shape, regions, valid, seed = batch
    mask = draw("intra-region", shape, regions, valid, seed, ratio=ratio)
    regions_bn, valid_bn = per_sample(shape, regions, valid)
    hidden, scored = mask.hidden[:, 0, :], mask.target[:, 0, :]
    assert torch.equal(mask.hidden, hidden[:, None, :].expand(shape))
    assert torch.equal(mask.target, scored[:, None, :].expand(shape))
    for b in range(shape[0]):
        if not valid_bn[b].any():
            assert not scored[b].any()
            continue
        target_region = regions_bn[b][scored[b]].unique()
        assert len(target_region) == 1, "scored units lie in one region"
        in_region = (regions_bn[b] == target_region) & valid_bn[b]
        assert torch.equal(hidden[b] & ~in_region, ~in_region), "every other unit is hidden"
        assert not (scored[b] & ~in_region).any()
        assert torch.equal(hidden[b] & in_region, scored[b]), "in the region, hidden == scored"


def test_padding_and_absent_regions_are_never_chosen():
    # region 2 only has padding units, region 3 appears in no unit of this batch
    regions = torch.tensor([0, 0, 1, 1, 2, 2])
    valid = torch.tensor([True, True, True, True, False, False])
    g = torch.Generator().manual_seed(0)
    for scheme in ("inter-region", "intra-region"):
        for _ in range(50):
            mask = make_mask(scheme, shape=(8, 3, 6), regions=regions, unit_valid=valid, generator=g)
            assert not mask.target[:, :, 4:].any()
            assert mask.target[:, 0, :4].any(dim=1).all()


def test_regions_come_from_each_batch():
    """A region seen in an earlier batch but absent from this one is never chosen."""
    g = torch.Generator().manual_seed(1)
    first = torch.tensor([0, 0, 1, 1, 2, 2])
    second = torch.tensor([5, 5, 5, 7, 7, 7])
    make_mask("inter-region", shape=(4, 2, 6), regions=first, generator=g)
    chosen = set()
    for _ in range(40):
        mask = make_mask("inter-region", shape=(4, 2, 6), regions=second, generator=g)
        for b in range(4):
            chosen |= set(second[mask.hidden[b, 0]].tolist())
    assert chosen == {5, 7}
    # per-sample regions: each sample draws among its own units' regions
    per_sample_regions = torch.tensor([[0, 0, 0, 1], [2, 2, 3, 3]])
    for _ in range(20):
        mask = make_mask("inter-region", shape=(2, 2, 4), regions=per_sample_regions, generator=g)
        assert set(per_sample_regions[0][mask.hidden[0, 0]].tolist()) <= {0, 1}
        assert set(per_sample_regions[1][mask.hidden[1, 0]].tolist()) <= {2, 3}


def test_sparse_region_ids():
    """Atlas ids are large and sparse; any integers work as region labels."""
    regions = torch.tensor([484682470, 484682470, -1, 12, 12])
    g = torch.Generator().manual_seed(4)
    chosen = set()
    for _ in range(30):
        mask = make_mask("inter-region", shape=(4, 2, 5), regions=regions, generator=g)
        for b in range(4):
            assert len(set(regions[mask.hidden[b, 0]].tolist())) == 1
            chosen |= set(regions[mask.hidden[b, 0]].tolist())
    assert chosen == {484682470, -1, 12}


@pytest.mark.parametrize("scheme", ["temporal", "causal", "neuron", "random", "random-token"])
def test_ratios(scheme):
    g = torch.Generator().manual_seed(2)
    shape = (64, 100, 200)
    mask = make_mask(scheme, shape=shape, regions=torch.zeros(200, dtype=torch.long), generator=g)
    assert mask.hidden.float().mean().item() == pytest.approx(DEFAULT_RATIO[scheme], abs=0.01)


def test_region_ratios():
    g = torch.Generator().manual_seed(3)
    regions = torch.arange(400) % 4  # four regions of 100 units
    counts = torch.zeros(4)
    scored_fraction = []
    for _ in range(50):
        inter = make_mask("inter-region", shape=(16, 2, 400), regions=regions, generator=g)
        counts += torch.bincount(regions[inter.hidden[:, 0].nonzero()[:, 1]], minlength=4) / 100
        intra = make_mask("intra-region", shape=(16, 2, 400), regions=regions, generator=g)
        scored_fraction.append(intra.target[:, 0].sum(dim=1).float() / 100)
    assert counts.sum() == 800
    assert (counts / 800 - 0.25).abs().max() < 0.05, "regions are drawn uniformly"
    assert torch.cat(scored_fraction).mean().item() == pytest.approx(0.3, abs=0.01)


def test_apply_mask_zeroes_hidden_entries_only():
    counts = torch.randint(1, 5, (2, 3, 4), dtype=torch.uint8)
    mask = make_mask(
        "random",
        shape=(2, 3, 4),
        regions=torch.zeros(4, dtype=torch.long),
        generator=torch.Generator().manual_seed(0),
        ratio=0.5,
    )
    masked = apply_mask(counts, mask)
    assert masked.dtype == torch.float32
    assert (masked[mask.hidden] == 0).all()
    assert torch.equal(masked[~mask.hidden], counts[~mask.hidden].float())
    assert (counts > 0).all(), "the input is left untouched"


def test_sample_scheme_is_uniform_and_seeded():
    draws = [sample_scheme(MTM_SCHEMES, generator=torch.Generator().manual_seed(s)) for s in range(400)]
    assert set(draws) == set(MTM_SCHEMES)
    assert min(draws.count(s) for s in MTM_SCHEMES) > 70
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert [sample_scheme(MASKING_SCHEMES, generator=g1) for _ in range(20)] == [
        sample_scheme(MASKING_SCHEMES, generator=g2) for _ in range(20)
    ]


def test_rejects_unknown_scheme_and_bad_ratio():
    g = torch.Generator()
    with pytest.raises(ValueError):
        make_mask("bogus", shape=(1, 2, 3), regions=torch.zeros(3, dtype=torch.long), generator=g)
    with pytest.raises(ValueError):
        make_mask("neuron", shape=(1, 2, 3), regions=torch.zeros(3, dtype=torch.long), generator=g, ratio=1.5)
