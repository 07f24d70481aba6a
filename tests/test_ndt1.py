"""NDT1: causality, a loss that sees the scored entries only, context tokens, size and FLOPs."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mtm.masking import make_mask
from mtm.models import NDT1, NDT1Config, poisson_nll
from mtm.models.layers import dropout
from mtm.vocabulary import MTM_SCHEMES

B, T, N = 3, 12, 10
REGIONS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])


def small(sessions: dict[str, int] | None = None, **overrides) -> NDT1:
    torch.manual_seed(0)
    return NDT1(NDT1Config.demo(sessions or {"s": N}, n_bins=T, hidden=32, n_heads=4, ffn=64, **overrides))


def counts(seed=0, shape=(B, T, N)) -> torch.Tensor:
    return torch.poisson(torch.full(shape, 1.5), generator=torch.Generator().manual_seed(seed))


def mask_of(scheme, seed=0, shape=(B, T, N)):
    return make_mask(scheme, shape=shape, regions=REGIONS, generator=torch.Generator().manual_seed(seed))


def test_output_shapes_and_loss():
    model = small()
    x, mask = counts(), mask_of("neuron")
    out = model(x, mask=mask)
    assert out.log_rates.shape == (B, T, N) and out.log_rates.dtype == torch.float32
    assert out.n_scored == int(mask.target.sum()) > 0
    assert out.loss.shape == () and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model(x).loss is None, "no mask, no loss"
    assert model(x.to(torch.uint8), mask=mask).log_rates.shape == (B, T, N), "integer counts"


@pytest.mark.parametrize("position", ["learned", "rope"])
@pytest.mark.parametrize("training", [False, True])
def test_causal_attention_never_sees_the_future(position, training):
    """Changing bins after t changes no output at bins <= t (in training too: the CPU training
    path computes attention by hand, so it is tested separately from SDPA's)."""
    model = small(position=position, use_prompt=True).train(training)
    mask = mask_of("causal")
    assert mask.causal
    x = counts()
    for t in (0, 5, T - 2):
        y = x.clone()
        y[:, t + 1 :] = counts(seed=t + 1)[:, t + 1 :]
        torch.manual_seed(1)  # the same dropout masks in both passes
        a = model(x, mask=mask, prompt=1).log_rates
        torch.manual_seed(1)
        b = model(y, mask=mask, prompt=1).log_rates
        torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-5)
        assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def test_bidirectional_without_a_causal_mask():
    model = small().eval()
    x, y = counts(), counts()
    y[:, -1] += 3
    mask = mask_of("neuron")
    assert not torch.allclose(model(x, mask=mask).log_rates[:, 0], model(y, mask=mask).log_rates[:, 0])


def test_loss_ignores_hidden_unscored_entries():
    """intra-region hides other regions without scoring them: their counts cannot matter."""
    model = small().eval()
    mask = mask_of("intra-region", seed=4)
    unscored_hidden = mask.hidden & ~mask.target
    assert unscored_hidden.any()
    x = counts()
    y = x.clone()
    y[unscored_hidden] = 99.0
    assert model(x, mask=mask).loss == model(y, mask=mask).loss
    # visible entries do change the loss (they are the model's input)
    z = x.clone()
    z[~mask.hidden] += 1
    assert model(z, mask=mask).loss != model(x, mask=mask).loss


def test_loss_gradient_is_zero_off_target():
    model = small()
    mask = mask_of("random", seed=2)
    out = model(counts(), mask=mask)
    out.log_rates.retain_grad()
    out.loss.backward()
    grad = out.log_rates.grad
    assert (grad[~mask.target] == 0).all()
    assert (grad[mask.target] != 0).any()


def test_poisson_nll_is_exact():
    log_rates = torch.randn(2, 5, 4)
    k = torch.poisson(log_rates.exp())
    target = torch.rand(2, 5, 4) < 0.5
    expected = -torch.distributions.Poisson(log_rates.exp()).log_prob(k)
    torch.testing.assert_close(poisson_nll(log_rates, k, target, "none"), torch.where(target, expected, 0.0))
    torch.testing.assert_close(poisson_nll(log_rates, k, target, "sum"), expected[target].sum())
    torch.testing.assert_close(poisson_nll(log_rates, k, target, "mean"), expected[target].mean())
    # garbage off target (NaN counts, overflowing rates) leaks into neither value nor gradient
    r = log_rates.clone().masked_fill(~target, 1e4).requires_grad_()
    loss = poisson_nll(r, k.masked_fill(~target, math.nan), target, "mean")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(r.grad).all()


def test_sum_loss_is_mean_times_scored():
    x, mask = counts(), mask_of("temporal")
    mean, total = small().eval()(x, mask=mask), small(loss="sum").eval()(x, mask=mask)
    torch.testing.assert_close(total.loss, mean.loss * mean.n_scored)


def test_nothing_scored_gives_no_loss():
    model = small()
    mask = make_mask(
        "neuron",
        shape=(B, T, N),
        regions=REGIONS,
        unit_valid=torch.zeros(N, dtype=torch.bool),
        generator=torch.Generator(),
    )
    out = model(counts(), mask=mask)
    assert out.loss is None and out.n_scored == 0


def test_prompt_and_session_tokens_change_outputs():
    model = small({"a": N, "b": N}, use_prompt=True).eval()
    x, mask = counts(), mask_of("neuron")
    base = model(x, mask=mask, prompt=0, session="a").log_rates
    assert not torch.allclose(base, model(x, mask=mask, prompt=2, session="a").log_rates)
    assert not torch.allclose(base, model(x, mask=mask, prompt=0, session="b").log_rates)
    per_sample = model(x, mask=mask, prompt=torch.tensor([0, 2, 0]), session="a").log_rates
    torch.testing.assert_close(per_sample[0], base[0])
    assert not torch.allclose(per_sample[1], base[1])
    with pytest.raises(ValueError, match="prompt is required"):
        model(x, mask=mask, session="a")
    with pytest.raises(ValueError, match="session is required"):
        model(x, mask=mask, prompt=0)
    with pytest.raises(ValueError, match="not part of the model"):
        model(x, mask=mask, prompt=0, session="c")
    with pytest.raises(ValueError, match="prompt is required"):
        small()(x, mask=mask, prompt=0)  # no prompt without use_prompt


def test_sessions_with_equal_unit_counts_get_their_own_stitchers():
    """The authors keyed stitchers by unit count, so equal-sized sessions shared them."""
    model = small({"a": N, "b": N, "c": N + 3})
    assert model.stitch_in["a"] is not model.stitch_in["b"] and model.readout["a"] is not model.readout["b"]
    assert not torch.equal(model.stitch_in["a"].weight, model.stitch_in["b"].weight)
    own = {id(p) for p in model.session_parameters("a")}
    assert own.isdisjoint(id(p) for p in model.session_parameters("b"))
    shared = [p for name, p in model.named_parameters() if not name.startswith(("stitch_in", "readout", "session_token"))]
    assert own.isdisjoint(id(p) for p in shared)
    loss = model(counts(), mask=mask_of("neuron"), session="a").loss
    loss.backward()
    assert model.stitch_in["b"].weight.grad is None and model.stitch_in["a"].weight.grad is not None
    assert model(counts(shape=(B, T, N + 3)), session="c").log_rates.shape == (B, T, N + 3)
    with pytest.raises(ValueError, match="do not fit session a"):
        model(counts(shape=(B, T, N + 3)), session="a")


def test_add_session_keeps_the_trained_model():
    model = small({"a": N}).eval()
    x = counts()
    before = model(x).log_rates
    model.add_session("new", N + 5)
    assert model.config.sessions == {"a": N, "new": N + 5}
    torch.testing.assert_close(model(x, session="a").log_rates, before)
    assert model(counts(shape=(B, T, N + 5)), session="new").log_rates.shape == (B, T, N + 5)
    with pytest.raises(ValueError, match="already part"):
        model.add_session("a", N)
    model.remove_session("new")
    with pytest.raises(ValueError, match="only session"):
        model.remove_session("a")
    torch.testing.assert_close(model(x, session="a").log_rates, before)
    model.add_session("new", N + 5)
    rebuilt = NDT1(model.config)  # a checkpoint's config rebuilds every session, in order
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.eval()(x, session="a").log_rates, before)


def test_shorter_trials_and_bf16_autocast():
    model = small(position="rope", use_prompt=True)
    x = counts(shape=(B, T - 4, N))
    mask = make_mask("causal", shape=x.shape, regions=REGIONS, generator=torch.Generator())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, mask=mask, prompt=torch.tensor([1, 2, 3]))
    assert out.log_rates.dtype == torch.float32 and out.log_rates.shape == x.shape
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_init_readout_bias():
    model = small()
    mean = torch.linspace(0.0, 2.0, N)
    model.init_readout_bias(mean)
    torch.testing.assert_close(model.readout["s"].bias, mean.clamp_min(1e-3).log())


def test_cpu_dropout_keeps_the_expectation():
    torch.manual_seed(0)
    x = torch.ones(1000, 1001)
    y = dropout(x, 0.4, training=True)
    assert (y == 0).float().mean().item() == pytest.approx(0.4, abs=0.005)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    torch.testing.assert_close(y.unique(), torch.tensor([0.0, 1 / 0.6]))
    assert dropout(x, 0.4, training=False) is x


def test_paper_size_parameters_and_flops():
    config = NDT1Config.paper({"s": 668}, use_prompt=True)
    model = NDT1(config)
    H, F, L, N2 = 512, 1024, 5, 2 * 668
    embedding = (668 * N2 + N2) + (N2 * H + H)
    tokens = 100 * H + H + 4 * H  # positions, the session token, 4 prompt tokens
    block = 2 * 2 * H + (H * 3 * H + 3 * H) + (H * H + H) + (H * F + F) + (F * H + H)
    head = 2 * H + (H * 668 + 668)  # final norm, readout
    expected = embedding + tokens + L * block + head
    assert sum(p.numel() for p in model.parameters()) == expected == 12_489_716
    # about 8.2 GFLOP per training sample (the authors' model has an extra 668 x 668 stitcher)
    assert model.flops_per_sample() == pytest.approx(8.2e9, rel=0.05)
    assert model.flops_per_sample() == 3 * model.flops_per_sample(training=False)
    # the analytic forward count matches torch's FLOP counter on one sample (in training mode
    # attention runs as explicit matmuls, which the counter sees)
    x = counts(shape=(1, 100, 668))
    mask = make_mask("neuron", shape=x.shape, regions=torch.zeros(668, dtype=torch.long), generator=torch.Generator())
    with FlopCounterMode(display=False) as counter:
        model(x, mask=mask, prompt=MTM_SCHEMES.index("neuron"))
    assert counter.get_total_flops() == model.flops_per_sample(training=False)
