"""What a demo job costs on this machine: training and evaluation samples/s of the demo model
against the earlier, larger demo preset, timed in the same process, and the seconds of a job's
start-up, training epoch and validation.

Setups, each trained by mtm.train's own step (bench_train.py's `OurStep`: a `TrainingRun` with
config.yaml's single-session TrainConfig, MtM with prompts, stepped by `train_epoch` one batch
at a time: the optimizer and schedule the demo's jobs use) on a synthetic session of the demo's
shape (trials x 100 bins x units, Poisson counts, 8 regions), one torch thread (a job's default):

    before                the earlier demo preset: two layers of hidden 128, FFN 256, embedding
                          2 x units wide, dropout 0.4, batch 16, 128 units
    before, demo's units  the same at the demo's units per session (config.yaml)
    after                 the demo model of config.yaml (`NDT1Config.demo`), its batch size and units
    after, bf16           the same under bf16 autocast, where bf16 runs in hardware (CUDA is not
                          used here; a CPU with AVX512-BF16 or AMX), else left out

Evaluation: forward passes of 32 trials, unmasked, in eval mode. After warm-up steps come
rounds: each setup takes --steps training steps and --steps forward passes, in an order that
reverses every round. Printed: each setup's samples/s and its per-round ratio to "before",
as the median, min-max and interquartile range over rounds.

A job's start-up is the wall time of a fresh Python importing what the job imports (median of
3); an epoch and its validation are timed inside `mtm.train.train` on a session of the demo's
size, with the demo's TrainConfig.

    python bench/bench_demo.py               # about two minutes on 2 cores
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import OurStep  # noqa: E402
from rounds import order, precisions, summary  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from mtm.config.stages import train_config  # noqa: E402
from mtm.config.training import TrainConfig  # noqa: E402
from mtm.config.validate import load_config  # noqa: E402
from mtm.data import SessionTensors  # noqa: E402
from mtm.device import autocast  # noqa: E402
from mtm.models.ndt1 import NDT1, NDT1Config  # noqa: E402

BEFORE = {"hidden": 128, "ffn": 256, "n_layers": 2, "n_heads": 4, "embed_mult": 2, "dropout": 0.4, "embed_dropout": 0.2}
EVAL_TRIALS = 32


def demo_config() -> tuple[dict, TrainConfig]:
    """config.yaml, validated, and its single-session MtM-prompt TrainConfig on the CPU."""
    config = load_config(REPO / "config.yaml")
    training = train_config(config, stage="single", backbone="ndt1", scheme="mtm-prompt", seed=0)
    return config, dataclasses.replace(training, device="cpu")


def synthetic_counts(n_trials: int, n_units: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 counts (trials, 100, units) with log-normal rates per unit, and 8 regions."""
    g = torch.Generator().manual_seed(seed)
    rates = torch.empty(n_units).log_normal_(-2.0, 1.0, generator=g).clamp_max(2.0)
    counts = torch.poisson(rates.expand(n_trials, 100, n_units).contiguous(), generator=g).clamp_max(255)
    return counts.to(torch.uint8), torch.randint(0, 8, (n_units,), generator=g)


class Setup:
    """A model trained by the trainer's own step, and its forward pass in evaluation."""

    def __init__(self, config: TrainConfig, n_units: int, model_options: dict | None):
        counts, regions = synthetic_counts(max(6 * config.batch_size, EVAL_TRIALS), n_units)
        init = None
        if model_options is not None:  # a preset TrainConfig cannot build: the trainer takes it as its model
            init = NDT1(NDT1Config(sessions={"bench": n_units}, n_bins=100, use_prompt=True, **model_options))
            init.init_readout_bias(counts.float().mean(dim=(0, 1)))
        self.config, self.n_units, self.counts = config, n_units, counts
        self.step = OurStep(config, counts[: 6 * config.batch_size], regions, torch.device("cpu"), init)

    def train(self, steps: int) -> float:
        """Training samples/s over `steps` steps."""
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        return steps * self.config.batch_size / (time.perf_counter() - start)

    def evaluate(self, passes: int) -> float:
        """Forward samples/s over `passes` passes of EVAL_TRIALS unmasked trials."""
        model = self.step.run.model.eval()
        start = time.perf_counter()
        with torch.inference_mode(), autocast(self.config.precision, torch.device("cpu")):
            for _ in range(passes):
                model(self.counts[:EVAL_TRIALS], prompt=0, session="bench")
        return passes * EVAL_TRIALS / (time.perf_counter() - start)


def startup_seconds(module: str, repeats: int = 3) -> float:
    """Median wall seconds of a fresh interpreter importing `module` (what a job pays first)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True, capture_output=True,
                       env={"PYTHONPATH": str(REPO / "src")})  # fmt: skip
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def epoch_seconds(config: TrainConfig, *, n_units: int, n_trials: int) -> tuple[float, float]:
    """(seconds of one training epoch, of its validation) of `mtm.train.train` with `config`
    (3 epochs), on a synthetic session (70/10/20 split)."""
    from mtm.train import train
    from mtm.validation import fixed_masks, score_split

    counts, regions = synthetic_counts(n_trials, n_units)
    split = torch.zeros(n_trials, dtype=torch.long)
    split[int(0.7 * n_trials) : int(0.8 * n_trials)], split[int(0.8 * n_trials) :] = 1, 2
    data = SessionTensors(
        eid="bench", regions=regions, region_names=tuple(f"R{i}" for i in range(8)), region_level=config.region_level,
        splits={name: torch.nonzero(split == i).flatten() for i, name in enumerate(("train", "val", "test"))},
        shape=tuple(counts.shape), source=lambda: counts,
    )  # fmt: skip
    config = dataclasses.replace(config, epochs=3)
    with tempfile.TemporaryDirectory() as out:
        result = train(data, config, out, threads=1)
    total = statistics.median(row["seconds"] for row in result.history)
    started = time.perf_counter()  # validation alone: the same passes train() makes after each epoch
    masks = fixed_masks(data, "val", config.schemes, seed=0, batch_size=config.batch_size,
                        token_units=result.model.token_units)  # fmt: skip
    score_split(result.model, data, masks, split="val", batch_size=config.batch_size, use_prompt=True)
    validation = time.perf_counter() - started
    return total - validation, validation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="training steps and forward passes per setup and round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precision", choices=["auto", "fp32", "both"], default="auto",
                        help="auto: bf16 too where it runs in hardware")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    config, training = demo_config()
    n_units, n_trials = config["demo"]["n_units"], config["demo"]["n_trials"]
    fp32 = dataclasses.replace(training, precision="fp32")
    chosen, note = precisions(args.precision, torch.device("cpu"))
    setups = {
        "before": Setup(dataclasses.replace(fp32, batch_size=16), 128, BEFORE),
        "before, demo's units": Setup(dataclasses.replace(fp32, batch_size=16), n_units, BEFORE),
        "after": Setup(fp32, n_units, None),
    }
    if "bf16" in chosen:
        setups["after, bf16"] = Setup(dataclasses.replace(training, precision="bf16"), n_units, None)
    print(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, 1 thread; "
          f"config.yaml's TrainConfig: AdamW lr {training.lr:g}, weight decay {training.weight_decay:g}, "
          f"{training.lr_schedule} schedule, batch {training.batch_size}{f'; {note}' if note else ''}")  # fmt: skip
    for setup in setups.values():
        setup.train(args.warmup)
        setup.evaluate(args.warmup)
    rates = {name: {"train": [], "eval": []} for name in setups}
    for r in range(args.rounds):
        for name in order(list(setups), r):
            rates[name]["train"].append(setups[name].train(args.steps))
            rates[name]["eval"].append(setups[name].evaluate(args.steps))
    print(f"median [min-max] (IQR) over {args.rounds} rounds of {args.steps} training steps and {EVAL_TRIALS}-trial "
          f"forward passes each, after {args.warmup} warm-up steps; ratio: per round, to 'before'")  # fmt: skip
    for name, setup in setups.items():
        ratios = {kind: [a / b for a, b in zip(rates[name][kind], rates["before"][kind])] for kind in ("train", "eval")}
        print(f"  {name:21s} {setup.n_units} units, batch {setup.config.batch_size:2d}: "
              f"train {summary(rates[name]['train'], '.1f')} samples/s, eval {summary(rates[name]['eval'], '.1f')} samples/s")  # fmt: skip
        if name != "before":
            print(f"  {'':21s} ratio to 'before': train {summary(ratios['train'])}, eval {summary(ratios['eval'])}")
    for module in ("mtm.train", "mtm.evaluate", "mtm.glm"):
        print(f"job start-up (import {module}): {startup_seconds(module):.2f} s")
    epoch, validation = epoch_seconds(training, n_units=n_units, n_trials=n_trials)  # precision as a job: auto
    print(f"one MtM-prompt epoch of {int(0.7 * n_trials)} train trials: {epoch:.2f} s training + {validation:.2f} s validation")


if __name__ == "__main__":
    main()
