"""NDT2: patching, padding that is never scored, causality by bin, sessions, size and FLOPs."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from mtm.checkpoint import load_pretrained, save_model
from mtm.masking import make_mask
from mtm.models import NDT2, NDT2Config
from mtm.models.ndt2 import causal_allowed, patch, unpatch
from mtm.vocabulary import MTM_SCHEMES

B, T, N, P = 3, 12, 10, 4  # 10 units in patches of 4: 3 tokens per bin, the last with 2 padding units
REGIONS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])


def small(sessions: dict[str, int] | None = None, **overrides) -> NDT2:
    torch.manual_seed(0)
    sizes = dict(n_bins=T, hidden=32, n_heads=4, ffn=64, token_width=16, patch_size=P)
    return NDT2(NDT2Config.demo(sessions or {"s": N}, **{**sizes, **overrides}))


def counts(seed=0, shape=(B, T, N)) -> torch.Tensor:
    return torch.poisson(torch.full(shape, 1.5), generator=torch.Generator().manual_seed(seed))


def mask_of(scheme, seed=0, shape=(B, T, N)):
    return make_mask(
        scheme, shape=shape, regions=REGIONS, generator=torch.Generator().manual_seed(seed), token_units=P
    )


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 20), st.integers(1, 8))
def test_patching_and_unpatching_are_inverse(b, t, n, p):
    x = torch.randn(b, t, n)
    patches = patch(x, p)
    k = -(-n // p)
    assert patches.shape == (b, t, k, p)
    torch.testing.assert_close(unpatch(patches, n), x, rtol=0, atol=0)
    assert (patches.reshape(b, t, k * p)[..., n:] == 0).all(), "the last patch is padded with zeros"
    # units stay in order: unit i is slot i % p of patch i // p
    i = torch.arange(n)
    torch.testing.assert_close(patches[:, :, i // p, i % p], x, rtol=0, atol=0)
    with pytest.raises(ValueError, match="cannot hold"):
        unpatch(patches, k * p + 1)


def test_output_shapes_and_loss():
    model = small(use_prompt=True)
    x, mask = counts(), mask_of("random-token")
    out = model(x, mask=mask, prompt=0)
    assert out.log_rates.shape == (B, T, N) and out.log_rates.dtype == torch.float32
    assert out.n_scored == int(mask.target.sum()) > 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model(x, prompt=0).loss is None, "no mask, no loss"


def test_padding_is_never_scored():
    """The padding slots of the last patch reach no output and get no gradient; a random-token
    mask never scores them either (they are not units)."""
    model = small()
    readout = {}
    model.readout.register_forward_hook(lambda module, inputs, output: readout.setdefault("out", output))
    mask = mask_of("random-token")
    out = model(counts(), mask=mask)
    readout["out"].retain_grad()
    out.loss.backward()
    grad = readout["out"].grad.view(B, T, 3, P)  # (B, T, K, P)
    assert (grad[:, :, 2, N - 2 * P :] == 0).all(), "padding slots get no gradient"
    assert (grad[:, :, 2, : N - 2 * P] != 0).any() and (grad[:, :, :2] != 0).any()
    assert out.log_rates.shape[-1] == N
    assert mask.target.shape[-1] == N


@pytest.mark.parametrize("training", [False, True])
def test_causal_attention_holds_at_the_patch_level(training):
    """With causal attention, no patch of bins <= t depends on bins after t, while every patch of
    bin t sees the other patches of bin t."""
    model = small(use_prompt=True).train(training)
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
    model.eval()
    z = x.clone()
    z[:, 5, P:] += 3  # the second and third patch of bin 5
    a, b = model(x, causal=True, prompt=1).log_rates, model(z, causal=True, prompt=1).log_rates
    assert not torch.allclose(a[:, 5, :P], b[:, 5, :P]), "a patch sees the other patches of its bin"
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=0, atol=1e-5)
    # without causal attention the past does see the future
    a, b = model(x, prompt=1).log_rates, model(z, prompt=1).log_rates
    assert not torch.allclose(a[:, :5], b[:, :5])


def test_causal_mask_layout():
    allowed = causal_allowed(n_bins=3, n_patches=2, n_context=2, device=torch.device("cpu"))
    assert allowed.shape == (8, 8)
    assert allowed[:2].tolist() == [[True, True] + [False] * 6] * 2, "context sees context only"
    assert allowed[2:, :2].all(), "every patch sees the context"
    bins = torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.equal(allowed[2:, 2:], bins[None, :] <= bins[:, None])


def test_sessions_share_every_layer_but_their_token_and_offsets():
    model = small({"a": N, "b": N, "c": N + 7}, use_prompt=True).eval()
    x, mask = counts(), mask_of("neuron")
    base = model(x, mask=mask, prompt=0, session="a").log_rates
    assert not torch.allclose(base, model(x, mask=mask, prompt=0, session="b").log_rates)
    own = {id(p) for p in model.session_parameters("a")}
    assert own == {id(model.session_token["a"]), id(model.unit_offset["a"])}
    assert sum(p.numel() for p in model.session_parameters("c")) == 32 + N + 7
    model.train()
    model(x, mask=mask, prompt=0, session="a").loss.backward()
    assert model.session_token["b"].grad is None and model.session_token["a"].grad is not None
    assert model.config.max_patches == 5 and model(counts(shape=(B, T, N + 7)), prompt=0, session="c").log_rates.shape == (B, T, N + 7)
    with pytest.raises(ValueError, match="do not fit session a"):
        model(counts(shape=(B, T, N + 7)), session="a", prompt=0)


def test_add_session_keeps_the_trained_model_and_grows_space(tmp_path):
    model = small({"a": N}).eval()
    x = counts()
    before = model(x).log_rates
    model.add_session("big", 3 * N)  # 8 patches: 5 more space embeddings
    assert model.config.max_patches == 8 and model.space.shape == (8, 32)
    torch.testing.assert_close(model(x, session="a").log_rates, before)
    assert model(counts(shape=(B, T, 3 * N)), session="big").log_rates.shape == (B, T, 3 * N)
    with pytest.raises(ValueError, match="already part"):
        model.add_session("a", N)
    save_model(tmp_path, model, {})
    rebuilt = load_pretrained(tmp_path)
    assert rebuilt.config.max_patches == 8
    torch.testing.assert_close(rebuilt(x, session="a").log_rates, before)
    model.remove_session("big")
    with pytest.raises(ValueError, match="only session"):
        model.remove_session("a")


def test_init_readout_bias_sets_the_unit_offsets():
    model = small().eval()
    mean = torch.linspace(0.0, 2.0, N)
    model.init_readout_bias(mean)
    torch.testing.assert_close(model.unit_offset["s"], mean.clamp_min(1e-3).log())


def test_shorter_trials_and_bf16_autocast():
    model = small(use_prompt=True)
    x = counts(shape=(B, T - 4, N))
    mask = make_mask("causal", shape=x.shape, regions=REGIONS, generator=torch.Generator())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, mask=mask, prompt=torch.tensor([1, 2, 3]))
    assert out.log_rates.dtype == torch.float32 and out.log_rates.shape == x.shape
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_paper_size_parameters_and_flops():
    """About 10.8 M parameters, as the MtM authors' NDT2; 6 patches of 128 for 668 units."""
    model = NDT2(NDT2Config.paper({"s": 668}, use_prompt=True))
    H, F, L, W = 512, 1024, 5, 256
    embedding = (128 * W + W) + (W * H + H) + 6 * H + 100 * H  # token layers, space, time
    tokens = H + 4 * H + 668  # the session token, 4 prompt tokens, the unit offsets
    block = 2 * 2 * H + (H * 3 * H + 3 * H) + (H * H + H) + (H * F + F) + (F * H + H)
    head = 2 * H + (H * 128 + 128)
    assert sum(p.numel() for p in model.parameters()) == embedding + tokens + L * block + head == 10_802_716
    x = counts(shape=(1, 100, 668))
    mask = make_mask("neuron", shape=x.shape, regions=torch.zeros(668, dtype=torch.long), generator=torch.Generator())
    with FlopCounterMode(display=False) as counter:
        model(x, mask=mask, prompt=MTM_SCHEMES.index("neuron"))
    assert counter.get_total_flops() == model.flops_per_sample(training=False)
    assert model.flops_per_sample() == 3 * model.flops_per_sample(training=False)
