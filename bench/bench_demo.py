"""What a demo job costs on this machine: training and evaluation samples/s at demo size, and the
seconds of a job's start-up, training epoch and validation.

Two model settings, each on a synthetic session of the demo's shape (trials x 100 bins x units,
Poisson counts, 8 regions), one torch thread (a job's default), MtM's schedule with prompts:

    before   the earlier demo preset: two layers of hidden 128, FFN 256, embedding 2 x units
             wide, dropout 0.4, batch 16, 128 units
    after    the demo model of `mtm.models.ndt1.NDT1Config.demo` with config.yaml's batch size
             and units per session

Steps are timed one by one after a warm-up and summarised by their median. A job's start-up is
the wall time of a fresh Python importing what the job imports (median of 3); an epoch and its
validation are timed inside `mtm.train.train` on a session of the demo's size.

    python bench/bench_demo.py               # about two minutes on 2 idle cores
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from mtm.data import SessionTensors  # noqa: E402
from mtm.masking import make_mask, sample_scheme  # noqa: E402
from mtm.models.ndt1 import NDT1, NDT1Config  # noqa: E402
from mtm.vocabulary import MTM_SCHEMES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BEFORE = {"hidden": 128, "ffn": 256, "n_layers": 2, "n_heads": 4, "embed_mult": 2, "dropout": 0.4, "embed_dropout": 0.2}


def demo_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def synthetic_counts(n_trials: int, n_units: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 counts (trials, 100, units) with log-normal rates per unit, and 8 regions."""
    g = torch.Generator().manual_seed(seed)
    rates = torch.empty(n_units).log_normal_(-2.0, 1.0, generator=g).clamp_max(2.0)
    counts = torch.poisson(rates.expand(n_trials, 100, n_units).contiguous(), generator=g).clamp_max(255)
    return counts.to(torch.uint8), torch.randint(0, 8, (n_units,), generator=g)


def step_speed(model_options: dict, *, n_units: int, batch: int, steps: int, bf16: bool = False) -> tuple[float, float]:
    """(training samples/s, evaluation forward samples/s) of an MtM-prompt NDT1, medians;
    bf16: under bf16 autocast (what `precision: bf16` does)."""
    torch.manual_seed(0)
    model = NDT1(NDT1Config(sessions={"s": n_units}, n_bins=100, use_prompt=True, **model_options))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    counts, regions = synthetic_counts(4 * batch, n_units)
    generator = torch.Generator().manual_seed(1)
    times = []
    model.train()
    for i in range(steps + 3):
        rows = slice((i % 4) * batch, (i % 4 + 1) * batch)
        start = time.perf_counter()
        scheme = sample_scheme(MTM_SCHEMES, generator=generator)
        mask = make_mask(scheme, shape=(batch, 100, n_units), regions=regions, generator=generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(counts[rows], mask=mask, prompt=MTM_SCHEMES.index(scheme), session="s")
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        if i >= 3:
            times.append(time.perf_counter() - start)
    model.eval()
    forward = []
    with torch.inference_mode():
        for i in range(steps + 2):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(counts[:32], prompt=0, session="s")
            if i >= 2:
                forward.append(time.perf_counter() - start)
    return batch / statistics.median(times), 32 / statistics.median(forward)


def startup_seconds(module: str, repeats: int = 3) -> float:
    """Median wall seconds of a fresh interpreter importing `module` (what a job pays first)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True, capture_output=True,
                       env={"PYTHONPATH": str(REPO / "src")})  # fmt: skip
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def epoch_seconds(*, n_units: int, n_trials: int, training: dict) -> tuple[float, float]:
    """(seconds of one training epoch, of its validation) of `mtm.train.train` with the demo's
    TrainConfig fields `training`, MtM-prompt, on a synthetic session (70/10/20 split)."""
    from mtm.train import train
    from mtm.config.training import TrainConfig

    counts, regions = synthetic_counts(n_trials, n_units)
    split = torch.zeros(n_trials, dtype=torch.long)
    split[int(0.7 * n_trials) : int(0.8 * n_trials)], split[int(0.8 * n_trials) :] = 1, 2
    data = SessionTensors(
        eid="bench", regions=regions, region_names=tuple(f"R{i}" for i in range(8)), region_level="beryl",
        splits={name: torch.nonzero(split == i).flatten() for i, name in enumerate(("train", "val", "test"))},
        shape=tuple(counts.shape), source=lambda: counts,
    )  # fmt: skip
    config = TrainConfig(scheme="mtm-prompt", epochs=3, **training)
    with tempfile.TemporaryDirectory() as out:
        result = train(data, config, out, threads=1)
    total = statistics.median(row["seconds"] for row in result.history)
    started = time.perf_counter()  # validation alone: the same passes train() makes after each epoch
    from mtm.validation import fixed_masks, score_split

    masks = fixed_masks(data, "val", config.schemes, seed=0, batch_size=config.batch_size)
    score_split(result.model, data, masks, split="val", batch_size=config.batch_size, use_prompt=True)
    validation = time.perf_counter() - started
    return total - validation, validation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = demo_config()
    n_units, n_trials = config["demo"]["n_units"], config["demo"]["n_trials"]
    after = {k: v for k, v in vars(NDT1Config.demo({"s": 1})).items() if k in (*BEFORE, "embed_width")}
    after.pop("embed_width", None)
    batch = config["training"]["batch_size"]
    print(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, 1 thread")
    rows = [("before", BEFORE, 16, 128), ("before, at the new units", BEFORE, 16, n_units), ("after", after, batch, n_units)]
    for name, options, b, units in rows:
        train_rate, eval_rate = step_speed(options, n_units=units, batch=b, steps=args.steps)
        print(f"{name:26s} {units} units, batch {b:2d}: train {train_rate:6.1f} samples/s, eval {eval_rate:6.1f} samples/s"
              f"   {options}")  # fmt: skip
    if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
        train_rate, eval_rate = step_speed(after, n_units=n_units, batch=batch, steps=args.steps, bf16=True)
        print(f"{'after, bf16 autocast':26s} {n_units} units, batch {batch:2d}: train {train_rate:6.1f} samples/s, "
              f"eval {eval_rate:6.1f} samples/s   (training.precision: bf16)")  # fmt: skip
    else:
        print("bf16: not measured, this CPU has neither AVX512-BF16 nor AMX (bf16 would be emulated, slower)")
    for module in ("mtm.train", "mtm.evaluate", "mtm.glm"):
        print(f"job start-up (import {module}): {startup_seconds(module):.2f} s")
    training = {k: config["training"][k] for k in ("batch_size", "lr", "weight_decay")}
    epoch, validation = epoch_seconds(n_units=n_units, n_trials=n_trials, training=training)
    print(f"one MtM-prompt epoch of {int(0.7 * n_trials)} train trials: {epoch:.2f} s training + {validation:.2f} s validation")


if __name__ == "__main__":
    main()
