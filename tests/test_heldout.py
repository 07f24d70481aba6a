"""Held-out prediction: batched and reused passes equal one hold-out at a time; masks are right."""

import numpy as np
import pytest
import torch

from mtm import heldout
from mtm.models import NDT1, NDT2, NDT1Config, NDT2Config
from mtm.vocabulary import TASKS

N_TRIALS, N_BINS, N_UNITS = 12, 20, 16
REGIONS = np.array(["CA1"] * 5 + ["DG"] * 4 + ["LP"] * 6 + ["PO"])


@pytest.fixture(scope="module")
def counts():
    rng = np.random.default_rng(0)
    rate = rng.gamma(0.6, 0.2, size=(1, 1, N_UNITS)) * rng.uniform(0.2, 2.0, size=(N_TRIALS, N_BINS, 1))
    counts = rng.poisson(rate).astype(np.uint8)
    counts[:, :, 3] = 0  # a silent unit
    assert 0.2 < (counts.sum(1) == 0).mean() < 0.9  # many (trial, unit) pairs without spikes
    return counts


@pytest.fixture(scope="module", params=["ndt1", "ndt2"])
def predict(request):
    """A predictor of either backbone (NDT2 in patches of 6 units: 3 per bin, the last padded)."""
    torch.manual_seed(0)
    if request.param == "ndt1":
        model = NDT1(NDT1Config.demo({"s": N_UNITS}, n_bins=N_BINS, n_layers=2)).eval()
    else:
        model = NDT2(NDT2Config.demo({"s": N_UNITS}, n_bins=N_BINS, n_layers=2, patch_size=6)).eval()

    def run(x, causal):
        with torch.inference_mode():
            return model(x, causal=causal).log_rates

    return run


@pytest.mark.parametrize("task", ["co-smoothing", "intra-region", "inter-region"])
@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_batched_equals_one_at_a_time(predict, counts, task, batch_size):
    holdouts = heldout.holdouts(task, REGIONS)
    batched = heldout.predict_holdouts(predict, counts, holdouts, batch_size=batch_size)
    reference = heldout.predict_holdouts_one_at_a_time(predict, counts, holdouts)
    assert not np.isnan(batched).any()
    np.testing.assert_allclose(batched, reference, atol=1e-6, rtol=0)


def test_unscored_units_are_nan_and_subset_matches(predict, counts):
    units = np.array([0, 3, 7, 12])
    full = heldout.predict_holdouts(predict, counts, heldout.holdouts("intra-region", REGIONS))
    some = heldout.predict_holdouts(predict, counts, heldout.holdouts("intra-region", REGIONS, units))
    np.testing.assert_allclose(some[:, :, units], full[:, :, units], atol=1e-6)
    others = np.setdiff1d(np.arange(N_UNITS), units)
    assert np.isnan(some[:, :, others]).all()


class Recorder:
    """A predictor that records its inputs and predicts log(input + 0.5): a leak of a hidden
    unit's own counts into its prediction would show."""

    def __init__(self):
        self.inputs, self.causal = [], []

    def __call__(self, x, causal):
        self.inputs.append(x.clone())
        self.causal.append(causal)
        return torch.log(x + 0.5)


def test_each_scored_unit_is_hidden_in_its_own_pass(counts):
    recorder = Recorder()
    out = heldout.predict_holdouts(recorder, counts, heldout.holdouts("co-smoothing", REGIONS), batch_size=5)
    np.testing.assert_allclose(out, np.log(0.5), rtol=1e-6)  # every scored cell saw a zero input


def test_silent_units_share_the_unmasked_pass(counts):
    """Distinct inputs only: co-smoothing runs one unmasked pass per trial plus one per spiking
    (unit, trial) pair, never N passes per trial."""
    recorder = Recorder()
    heldout.predict_holdouts(recorder, counts, heldout.holdouts("co-smoothing", REGIONS), batch_size=1000)
    n_samples = sum(len(x) for x in recorder.inputs)
    spiking_pairs = int((counts.sum(1) > 0).sum())
    assert n_samples == N_TRIALS + spiking_pairs < N_TRIALS * N_UNITS


def test_intra_region_hides_the_other_regions(counts):
    recorder = Recorder()
    out = heldout.predict_holdouts(recorder, counts, heldout.holdouts("intra-region", REGIONS))
    inputs = torch.cat(recorder.inputs).numpy()
    for x in inputs:  # every sample shows units of one region at most
        visible = np.flatnonzero(x.sum(0) > 0)
        assert len(set(REGIONS[visible])) <= 1
    np.testing.assert_allclose(out, np.log(0.5), rtol=1e-6)


def test_holdout_masks():
    intra = heldout.holdouts("intra-region", REGIONS, units=[6])[0]
    np.testing.assert_array_equal(intra.hidden, (REGIONS != "DG") | (np.arange(N_UNITS) == 6))
    np.testing.assert_array_equal(np.flatnonzero(intra.scored), [6])
    inter = heldout.holdouts("inter-region", REGIONS, units=[0, 1, 15])
    assert [h.hidden.sum() for h in inter] == [5, 1]  # CA1 whole, PO whole
    assert [h.scored.sum() for h in inter] == [2, 1]
    with pytest.raises(ValueError, match="not a hold-out task"):
        heldout.holdouts("forward-prediction", REGIONS)
    with pytest.raises(ValueError, match="more than one hold-out"):
        units = np.ones(N_UNITS, dtype=bool)
        heldout.predict_holdouts_one_at_a_time(Recorder(), np.zeros((1, 2, N_UNITS)), [heldout.HoldOut(units, units)] * 2)


def test_forward_prediction_never_sees_the_predicted_bins(predict, counts):
    out = heldout.predict_forward(predict, counts, forward_bins=5, batch_size=5)
    assert out.shape == (N_TRIALS, 5, N_UNITS)
    changed = counts.copy()
    changed[:, -5:] = 9  # hidden bins: must not matter
    np.testing.assert_allclose(heldout.predict_forward(predict, changed, forward_bins=5), out, atol=1e-6)
    earlier = counts.copy()
    earlier[:, -6] += 3  # the last visible bin: must matter
    assert not np.allclose(heldout.predict_forward(predict, earlier, forward_bins=5), out, atol=1e-4)


def test_forward_prediction_hides_the_last_bins_and_attends_causally(counts):
    recorder = Recorder()
    heldout.predict_forward(recorder, counts, forward_bins=4, batch_size=5)
    x = torch.cat(recorder.inputs).numpy()
    assert (x[:, -4:] == 0).all() and (x[:, :-4] == counts[:, :-4]).all()
    assert recorder.causal == [True] * 3
    heldout.predict_holdouts(recorder, counts, heldout.holdouts("co-smoothing", REGIONS))
    assert not any(recorder.causal[3:])


@pytest.mark.parametrize(
    ("scheme", "prompted", "as_trained"),
    [("temporal", False, False), ("neuron", False, False), ("random-token", False, False), ("mtm", False, False),
     ("causal", False, True), ("mtm-prompt", True, True)],
)  # fmt: skip
def test_forward_attention_as_the_authors_chose_it_per_model(counts, scheme, prompted, as_trained):
    """"as-trained" (the authors'): causal attention only for the causal-only model and prompted
    models; the others run bidirectionally, the hidden bins zeroed all the same. "causal":
    every model causally."""
    assert heldout.forward_causal(scheme, prompted=prompted, attention="as-trained") is as_trained
    assert heldout.forward_causal(scheme, prompted=prompted, attention="causal") is True
    recorder = Recorder()
    regions = np.zeros(counts.shape[2], dtype=int)
    causal = heldout.forward_causal(scheme, prompted=prompted, attention="as-trained")
    heldout.predict_task(recorder, "forward-prediction", counts, regions, batch_size=5, forward_bins=4, causal_forward=causal)
    x = torch.cat(recorder.inputs).numpy()
    assert recorder.causal == [as_trained] * 3 and (x[:, -4:] == 0).all()
    with pytest.raises(ValueError, match="forward attention"):
        heldout.forward_causal(scheme, prompted=prompted, attention="bidirectional")


def test_predict_task_shapes(predict, counts):
    units = np.array([1, 9])
    for task in TASKS:
        prediction = heldout.predict_task(predict, task, counts, REGIONS, units=units, forward_bins=4)
        n_bins = 4 if task == "forward-prediction" else N_BINS
        assert prediction.log_rates.shape == (N_TRIALS, n_bins, 2)
        assert np.isfinite(prediction.log_rates).all()
        np.testing.assert_array_equal(prediction.units, units)
