"""The CUDA paths: both backbones in fp32 and bf16 on a GPU against the CPU, training with the
default precision (bf16 autocast on CUDA), and held-out prediction on the GPU.

Skipped without a CUDA device (CI has none); run on a GPU machine with
`python -m pytest tests/test_cuda.py` (only torch and the scientific stack are needed).
"""

import numpy as np
import pytest
import torch

from mtm import heldout
from mtm.checkpoint import load_pretrained
from mtm.data import SessionTensors
from mtm.evaluate import model_predictor
from mtm.masking import make_mask
from mtm.models import BACKBONES
from mtm.train import train
from mtm.config.training import TrainConfig
from mtm.vocabulary import MTM_SCHEMES, TASK_PROMPTS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
BACKBONE_NAMES = tuple(BACKBONES)


def synthetic_session(eid: str, *, n_units: int, n_trials: int = 200, n_bins: int = 100, seed: int = 0) -> SessionTensors:
    """Counts from 3 latent factors through a log-linear map, in 4 regions; splits 70/10/20."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, n_bins)
    latents = torch.stack([torch.sin(2 * torch.pi * (t * f + torch.rand(n_trials, 1, generator=g))) for f in (1, 2, 3)], -1)
    loadings = 0.6 * torch.randn(3, n_units, generator=g)
    log_rate = latents @ loadings + torch.empty(n_units).uniform_(-3.0, -0.5, generator=g)
    counts = torch.poisson(log_rate.exp(), generator=g).clamp_max(255).to(torch.uint8)
    order = torch.randperm(n_trials, generator=g)
    cut = [int(0.7 * n_trials), int(0.8 * n_trials)]
    splits = {name: order[a:b].sort().values for name, a, b in zip(("train", "val", "test"), [0, *cut], [*cut, n_trials])}
    return SessionTensors(
        eid=eid,
        regions=torch.arange(n_units) % 4,
        region_names=("CA1", "DG", "LP", "PO"),
        region_level="beryl",
        splits=splits,
        shape=tuple(counts.shape),
        source=lambda: counts,
    )


def paper_model(backbone: str, n_units: int = 300):
    model_cls, config_cls = BACKBONES[backbone]
    torch.manual_seed(0)
    return model_cls(config_cls.paper({"s": n_units}, use_prompt=True)).eval()


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 means fp32 on both devices (no TF32 matmuls)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
@pytest.mark.parametrize("causal", [False, True])
def test_gpu_forward_matches_the_cpu(backbone, causal):
    """Paper size: CUDA fp32 equals the CPU to float rounding; bf16 autocast stays close (its
    readout runs in fp32), and its loss agrees to 1%."""
    model = paper_model(backbone)
    data = synthetic_session("s", n_units=300)
    x = data.counts[:8]
    mask = make_mask("causal" if causal else "neuron", shape=tuple(x.shape), regions=data.regions,
                     generator=torch.Generator().manual_seed(0), token_units=model.token_units)  # fmt: skip
    prompt = MTM_SCHEMES.index("causal" if causal else "neuron")
    cpu = model(x, mask=mask, prompt=prompt)
    gpu_model = model.cuda()
    gpu_mask = type(mask)(hidden=mask.hidden.cuda(), target=mask.target.cuda(), causal=mask.causal)
    fp32 = gpu_model(x.cuda(), mask=gpu_mask, prompt=prompt)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        bf16 = gpu_model(x.cuda(), mask=gpu_mask, prompt=prompt)
    assert bf16.log_rates.dtype == torch.float32
    torch.testing.assert_close(fp32.log_rates.cpu(), cpu.log_rates, rtol=0, atol=2e-4)
    assert (bf16.log_rates.cpu() - cpu.log_rates).abs().max() < 0.1
    assert abs(float(bf16.loss) / float(cpu.loss) - 1) < 0.01


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_training_on_the_gpu_learns_and_loads_on_the_cpu(backbone, tmp_path):
    """Two sessions, MtM with prompts, precision auto (bf16 on CUDA): the validation loss falls,
    the checkpoint loads on the CPU and predicts what the GPU predicts."""
    sessions = [synthetic_session("a", n_units=96, seed=1), synthetic_session("b", n_units=150, seed=2)]
    config = TrainConfig(scheme="mtm-prompt", backbone=backbone, epochs=6, lr=1e-3, device="cuda")
    result = train(sessions, config, tmp_path)
    val = [row["val_loss"] for row in result.history]
    assert val[-1] < val[0] and np.isfinite(val).all(), val
    assert next(result.model.parameters()).device.type == "cuda"
    cpu_model = load_pretrained(tmp_path)
    x = sessions[1].counts[:4]
    gpu = result.model(x.cuda(), session="b", prompt=0).log_rates.cpu()
    torch.testing.assert_close(cpu_model(x, session="b", prompt=0).log_rates, gpu, rtol=0, atol=2e-4)


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_heldout_prediction_on_the_gpu(backbone):
    """Co-smoothing and forward prediction on the GPU equal the CPU's (fp32); bf16 moves the
    predicted log rates by little."""
    model = paper_model(backbone, n_units=64)
    counts = synthetic_session("s", n_units=64, n_trials=24).counts.numpy()
    regions = np.array(["CA1", "DG", "LP", "PO"])[np.arange(64) % 4]
    for task in ("co-smoothing", "forward-prediction"):
        prompt = TASK_PROMPTS[task]
        cpu = heldout.predict_task(model_predictor(model, session="s", prompt=prompt), task, counts, regions)
        gpu_model = paper_model(backbone, n_units=64).cuda()
        gpu = heldout.predict_task(model_predictor(gpu_model, session="s", prompt=prompt), task, counts, regions)
        bf16 = heldout.predict_task(
            model_predictor(gpu_model, session="s", prompt=prompt, precision="bf16"), task, counts, regions
        )
        np.testing.assert_allclose(gpu.log_rates, cpu.log_rates, atol=2e-4, equal_nan=True)
        assert np.nanmax(np.abs(bf16.log_rates - cpu.log_rates)) < 0.1


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_a_stack_on_the_gpu_trains_each_model_as_alone(backbone, tmp_path):
    """mtm.stack on CUDA, fp32: each stacked model's validation losses follow its run alone
    (the dropout of a stack comes from CUDA's RNG, drawn once per batch, as each run alone)."""
    from mtm.stack import train_stack

    data = synthetic_session("s", n_units=96, seed=3)
    schemes = ("temporal", "neuron", "causal")
    configs = [TrainConfig(scheme=s, backbone=backbone, epochs=2, lr=1e-3, device="cuda", precision="fp32") for s in schemes]
    stacked = train_stack(data, configs, [tmp_path / "stacked" / s for s in schemes])
    for config, result in zip(configs, stacked):
        alone = train(data, config, tmp_path / "alone" / config.scheme)
        np.testing.assert_allclose([r["val_loss"] for r in result.history], [r["val_loss"] for r in alone.history], rtol=1e-3)
