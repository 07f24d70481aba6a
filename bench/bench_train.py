"""Benchmark NDT1 training at paper size: our training step against a plain step in the
authors' style, timed in the same process, and the fraction of the GEMM ceiling.

    ours      mtm.train's own step: a `TrainingRun` (the model, AdamW and learning-rate schedule
              that `TrainingRun` builds from a TrainConfig: config/paper.yaml's single-session
              training, MtM with prompts) stepped by `mtm.train.train_epoch`, one batch per
              call: draw a scheme of MtM's schedule and its mask, forward with the scheme's
              prompt, Poisson loss, backward, AdamW step, schedule step.
    authors'  a plain step in the style of the authors' NDT1 trainer, written here
              (`AuthorsStyleNDT1`, `AuthorsStep`): their layer layout (a session's N -> N
              stitcher, then N -> embed width -> softsign -> hidden, learned positions, session
              and prompt tokens, pre-norm blocks with separate query, key and value projections
              and exact GELU, a final norm, a Linear readout), their masking (one of four
              schemes per batch, the input cloned and zeroed in place by an int64 mask), torch's
              PoissonNLLLoss summed over the masked entries, `loss.item()` every step, and the
              optimizer settings of `TrainingRun` (AdamW with the TrainConfig's lr and weight
              decay) with OneCycleLR, stepped every batch.

Both have the same sizes (the config's model: at paper size 5 layers of 512, 8 heads, FFN
1024), train on the same synthetic Poisson counts (batch x 100 bins x 668 units, log-normal
rates, 8 regions) in the same precision, in one process, under the same allocator setting.
After warm-up steps come rounds: each round reads the GEMM ceiling once, then takes --steps
steps of each, in alternating order (A B, then B A). Per round: each one's samples/s, their
ratio, and our achieved GFLOP/s (NDT1.flops_per_sample x samples/s) over that round's ceiling.
Printed: every round, then the median, min-max and interquartile range over rounds. Nothing is
compared with a figure measured in another run or on another machine.

The ceiling: torch.matmul (out=, no allocation) on the shapes of the model's GEMMs (rounds.py).

Precisions: fp32, and bf16 autocast where it runs in hardware (CUDA, or a CPU with AVX512-BF16
or AMX: mtm.device.cpu_has_fast_bf16); elsewhere bf16 is emulated and tens of times slower,
and is timed only when asked for (--precision both or bf16).

    python bench/bench_train.py                      # about a minute on 2 cores
    python bench/bench_train.py --rounds 3 --steps 1 # quicker, a wider spread
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rounds import (  # noqa: E402
    DTYPES,
    PRECISION_CHOICES,
    GemmCeiling,
    cpu_warning,
    machine,
    order,
    precisions,
    set_up_device,
    summary,
    synchronize,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from mtm.config.stages import train_config  # noqa: E402
from mtm.config.training import TrainConfig  # noqa: E402
from mtm.config.validate import load_config  # noqa: E402
from mtm.data import SessionTensors  # noqa: E402
from mtm.device import autocast  # noqa: E402
from mtm.models.backbone import Backbone  # noqa: E402
from mtm.runtime import keep_freed_memory  # noqa: E402
from mtm.splits import SPLITS  # noqa: E402
from mtm.train import TrainingRun, train_epoch  # noqa: E402
from mtm.vocabulary import MTM_SCHEMES  # noqa: E402

N_REGIONS = 8


def synthetic_counts(args) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 Poisson counts (6 x batch trials, bins, units) with log-normal rates per unit, and
    each unit's region (N_REGIONS regions)."""
    generator = torch.Generator().manual_seed(args.seed)
    rates = torch.empty(args.units).log_normal_(-2.0, 1.0, generator=generator).clamp_max(3.0)  # spikes/bin
    shape = (6 * args.batch, args.bins, args.units)
    counts = torch.poisson(rates.expand(shape).contiguous(), generator=generator).clamp_max(255).to(torch.uint8)
    return counts, torch.randint(0, N_REGIONS, (args.units,), generator=generator)


def bench_config(args, backbone: str, precision: str, device: torch.device) -> TrainConfig:
    """The TrainConfig of single-session MtM-prompt training in `args.config`, at this
    benchmark's batch size, precision and device."""
    config = train_config(load_config(ROOT / args.config), stage="single", backbone=backbone, scheme="mtm-prompt", seed=args.seed)
    batch = {} if args.batch is None else {"batch_size": args.batch}
    return dataclasses.replace(config, **batch, precision=precision, device=device.type)


class OurStep:
    """One `mtm.train.train_epoch` call over one batch of a `TrainingRun` (in the trainer's batch order)."""

    def __init__(self, config: TrainConfig, counts: torch.Tensor, regions: torch.Tensor, device: torch.device,
                 init: Backbone | None = None):  # fmt: skip
        """counts: uint8 (6 x batch trials, bins, units): 4 batches of train trials, 1 of val, 1 of test.
        init: the model to train (as when finetuning: TrainingRun's `init`); None builds the config's."""
        batch = config.batch_size
        starts = (0, 4 * batch, 5 * batch, 6 * batch)  # train, val, test
        data = SessionTensors(
            eid="bench", regions=regions, region_names=tuple(f"region{i}" for i in range(N_REGIONS)),
            region_level=config.region_level, shape=tuple(counts.shape), source=lambda: counts,
            splits={name: torch.arange(a, b) for name, a, b in zip(SPLITS, starts, starts[1:])},
        )  # fmt: skip
        self.run = TrainingRun([data], config, device, init)
        self.precision, self.config = config.precision, config
        batches = itertools.cycle(self.run.epoch_batches(self.run.generators["data"]))
        self.run.epoch_batches = lambda generator: [next(batches)]  # an "epoch" of one batch
        self.flops_per_sample = self.run.model.flops_per_sample(training=True)
        self.optimizer = self.run.optimizer

    def __call__(self) -> None:
        train_epoch(self.run, self.precision)


class AuthorsStyleNDT1(nn.Module):
    """NDT1 laid out as in the authors' code, written plainly for this benchmark (no weights or
    code of theirs): stitcher N -> N, embedding N -> E, softsign, projection E -> H, learned
    positions, [session?, prompt] tokens in front (n_context 2 or 1), pre-norm blocks, final norm, readout H -> N."""

    def __init__(self, n_units: int, *, hidden: int, n_layers: int, n_heads: int, ffn: int, embed_width: int,
                 n_bins: int, dropout: float, embed_dropout: float, n_context: int):  # fmt: skip
        super().__init__()
        self.n_heads, self.dropout, self.n_context = n_heads, dropout, n_context
        self.stitcher = nn.Linear(n_units, n_units)
        self.embed_spikes = nn.Linear(n_units, embed_width)
        self.projection = nn.Linear(embed_width, hidden)
        self.embed_dropout = nn.Dropout(embed_dropout)
        self.position = nn.Parameter(0.02 * torch.randn(n_bins, hidden))
        # context tokens: the session's (where the config has one), then the scheme's prompt
        self.session = nn.Parameter(0.02 * torch.randn(1, hidden)) if n_context == 2 else None
        self.prompts = nn.Embedding(len(MTM_SCHEMES), hidden)
        self.layers = nn.ModuleList()
        for _ in range(n_layers):
            self.layers.append(nn.ModuleDict({
                "ln1": nn.LayerNorm(hidden), "query": nn.Linear(hidden, hidden), "key": nn.Linear(hidden, hidden),
                "value": nn.Linear(hidden, hidden), "out_proj": nn.Linear(hidden, hidden),
                "ln2": nn.LayerNorm(hidden), "up_proj": nn.Linear(hidden, ffn), "down_proj": nn.Linear(ffn, hidden),
            }))  # fmt: skip
        self.out_norm = nn.LayerNorm(hidden)
        self.decoder = nn.Linear(hidden, n_units)
        L = n_context + n_bins
        i = torch.arange(L)
        self.register_buffer("causal", (i[None, :] <= i[:, None]) | (i[None, :] < n_context), persistent=False)

    def forward(self, spikes: torch.Tensor, prompt: int, causal: bool) -> torch.Tensor:
        B, T, _ = spikes.shape
        x = self.projection(F.softsign(self.embed_spikes(self.stitcher(spikes)))) + self.position[:T]
        context = self.prompts.weight[prompt : prompt + 1]
        if self.session is not None:
            context = torch.cat([self.session, context])
        x = self.embed_dropout(torch.cat([context.expand(B, -1, -1), x], dim=1))
        L, H = x.shape[1], x.shape[2]
        mask = self.causal[:L, :L] if causal else None
        p = self.dropout if self.training else 0.0
        for layer in self.layers:
            h = layer["ln1"](x)
            q, k, v = (layer[name](h).view(B, L, self.n_heads, H // self.n_heads).transpose(1, 2)
                       for name in ("query", "key", "value"))  # fmt: skip
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
            x = x + F.dropout(layer["out_proj"](attended.transpose(1, 2).reshape(B, L, H)), p, self.training)
            x = x + F.dropout(layer["down_proj"](F.gelu(layer["up_proj"](layer["ln2"](x)))), p, self.training)
        return self.decoder(self.out_norm(x[:, self.n_context :]))  # log rates (B, T, N)

    def flops_per_sample(self, n_bins: int) -> float:
        """Matmul FLOPs of one training sample (3x the forward pass), counted as NDT1.flops_per_sample counts."""
        N, E = self.stitcher.in_features, self.embed_spikes.out_features
        H, F_ = self.projection.out_features, self.layers[0]["up_proj"].out_features
        L = self.n_context + n_bins
        per_layer = 4 * L * H * H + 2 * L * L * H + 2 * L * H * F_
        forward = 2 * (n_bins * (N * N + N * E + E * H + H * N) + len(self.layers) * per_layer)
        return 3.0 * forward


class AuthorsStep:
    """One training step in the authors' style: a batch, one of four masking schemes (int64
    mask, input cloned and zeroed in place), forward, PoissonNLLLoss summed over the masked
    entries, backward, AdamW and OneCycleLR steps, zero_grad, loss.item()."""

    def __init__(self, config: TrainConfig, like: TrainingRun, counts: torch.Tensor, regions: torch.Tensor,
                 device: torch.device):  # fmt: skip
        c = like.model.config
        torch.manual_seed(config.seed)
        self.model = AuthorsStyleNDT1(
            counts.shape[2], hidden=c.hidden, n_layers=c.n_layers, n_heads=c.n_heads, ffn=c.ffn,
            embed_width=c.embed_width, n_bins=c.n_bins, dropout=c.dropout, embed_dropout=c.embed_dropout,
            n_context=c.n_context,
        ).to(device)  # fmt: skip
        self.model.decoder.bias.data.copy_(counts.float().mean(dim=(0, 1)).clamp_min(1e-3).log())
        # the optimizer as TrainingRun builds it, and their schedule
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=config.lr, total_steps=config.epochs * like.steps_per_epoch,
            pct_start=config.warmup_fraction,
        )  # fmt: skip
        self.loss_fn = nn.PoissonNLLLoss(log_input=True, full=False, reduction="none")
        batch = config.batch_size
        train = counts[: 4 * batch].float().to(device)  # their loader yields float32 counts
        self.batches = itertools.cycle(train.split(batch))
        self.regions, self.device, self.precision = regions.to(device), device, config.precision
        self.flops_per_sample = self.model.flops_per_sample(counts.shape[1])

    def mask(self, shape: tuple[int, int, int], scheme: str) -> tuple[torch.Tensor, bool]:
        """(int64 mask (B, T, N), 1 = hidden and scored; causal attention or not)."""
        B, T, N = shape
        mask = torch.zeros(shape, dtype=torch.int64, device=self.device)
        if scheme == "neuron":
            mask[:, :, torch.rand(N, device=self.device) < 0.3] = 1
        elif scheme == "causal":
            mask[:, torch.rand(T, device=self.device) < 0.6, :] = 1
        else:
            region = self.regions[torch.randint(len(self.regions), (1,)).item()]
            chosen = self.regions == region
            if scheme == "intra-region":
                chosen &= torch.rand(N, device=self.device) < 0.3
            mask[:, :, chosen] = 1
        return mask, scheme == "causal"

    def __call__(self) -> None:
        self.model.train()
        spikes = next(self.batches)
        prompt = int(torch.randint(len(MTM_SCHEMES), (1,)))
        mask, causal = self.mask(tuple(spikes.shape), MTM_SCHEMES[prompt])
        inputs = spikes.clone()
        inputs[mask == 1] = 0
        with autocast(self.precision, self.device):
            log_rates = self.model(inputs, prompt, causal)
        loss = (self.loss_fn(log_rates.float(), spikes) * mask).sum()
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        loss.item()


def gemm_shapes(model_config, batch: int, n_units: int) -> list[tuple[int, int, int]]:
    """The (m, k, n) of a model's GEMMs: QKV, attention output, MLP up and down over all tokens,
    and the input embedding (NDT1: the session's input layer and the projection, over the bins;
    NDT2: a patch's embedding, over the patch tokens)."""
    c = model_config
    per_bin = c.n_patches(n_units) if hasattr(c, "n_patches") else 1  # NDT2: a token per patch of units
    rows, tokens = batch * c.n_bins * per_bin, batch * (c.n_context + c.n_bins * per_bin)
    shapes = [(tokens, c.hidden, 3 * c.hidden), (tokens, c.hidden, c.hidden), (tokens, c.hidden, c.ffn), (tokens, c.ffn, c.hidden)]
    if hasattr(c, "embed_width"):
        return shapes + [(rows, n_units, c.embed_width), (rows, c.embed_width, c.hidden)]
    return shapes + [(rows, c.patch_size, c.token_width), (rows, c.token_width, c.hidden)]


def timed_steps(step, n: int, device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of `n` steps."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        step()
    synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(args, precision: str, device: torch.device) -> None:
    config = bench_config(args, "ndt1", precision, device)
    counts, regions = synthetic_counts(args)
    ours = OurStep(config, counts, regions, device)
    authors = AuthorsStep(config, ours.run, counts, regions, device)
    steps = {"ours": ours, "authors'": authors}
    model = ours.run.model.config
    ceiling = GemmCeiling(gemm_shapes(model, args.batch, args.units), DTYPES[precision], device)
    if precision == "fp32":
        print(f"ours: {sum(p.numel() for p in ours.run.model.parameters()) / 1e6:.1f} M parameters, "
              f"{type(ours.optimizer).__name__} lr {ours.optimizer.defaults['lr']:g} weight decay "
              f"{ours.optimizer.defaults['weight_decay']:g} ({args.config}: TrainConfig lr {config.lr:g}, "
              f"weight_decay {config.weight_decay:g}), {config.lr_schedule} schedule, loss {config.loss}")  # fmt: skip
        print(f"authors': {sum(p.numel() for p in authors.model.parameters()) / 1e6:.1f} M parameters, "
              f"{type(authors.optimizer).__name__} lr {authors.optimizer.defaults['lr']:g} weight decay "
              f"{authors.optimizer.defaults['weight_decay']:g}, OneCycleLR, summed PoissonNLLLoss")  # fmt: skip
    for step in steps.values():
        timed_steps(step, args.warmup, device)

    print(f"\n{precision}: {args.rounds} rounds of {args.steps} steps each after {args.warmup} warm-up steps")
    print(f"{'round':>5}  {'order':<16} {'ceiling GFLOP/s':>15}  {'ours samples/s':>14}  "
          f"{'authors samples/s':>17}  {'ours/authors':>12}  {'ours of ceiling':>15}")  # fmt: skip
    rows, cpu, wall = [], 0.0, 0.0
    for r in range(args.rounds):
        gflops = ceiling.read()
        rate = {}
        for name in order(list(steps), r):
            seconds, cpu_seconds = timed_steps(steps[name], args.steps, device)
            rate[name] = args.steps * args.batch / seconds
            cpu, wall = cpu + cpu_seconds, wall + seconds
        achieved = rate["ours"] * ours.flops_per_sample / 1e9
        rows.append(dict(ceiling=gflops, ours=rate["ours"], authors=rate["authors'"],
                         ratio=rate["ours"] / rate["authors'"], fraction=achieved / gflops))  # fmt: skip
        row = rows[-1]
        print(f"{r + 1:5d}  {' then '.join(order(['ours', 'authors'], r)):<16} {gflops:15.1f}  {row['ours']:14.2f}  "
              f"{row['authors']:17.2f}  {row['ratio']:12.3f}  {row['fraction']:15.3f}", flush=True)  # fmt: skip

    def over_rounds(key: str, spec: str = ".2f") -> str:
        return summary([row[key] for row in rows], spec)

    print(f"{precision}, median [min-max] (IQR) over {args.rounds} rounds:")
    print(f"  ours      samples/s {over_rounds('ours')}; {ours.flops_per_sample / 1e9:.2f} GFLOP/sample, "
          f"{summary([row['ours'] * ours.flops_per_sample / 1e9 for row in rows], '.1f')} GFLOP/s")  # fmt: skip
    print(f"  authors'  samples/s {over_rounds('authors')}; {authors.flops_per_sample / 1e9:.2f} GFLOP/sample")
    print(f"  ours / authors' samples/s, per round: {over_rounds('ratio', '.3f')}")
    print(f"  GEMM ceiling GFLOP/s, read once per round: {over_rounds('ceiling', '.1f')}")
    print(f"  ours' GFLOP/s over the same round's ceiling: {over_rounds('fraction', '.3f')}")
    warning = cpu_warning(cpu, wall, device)
    if warning:
        print(f"  {warning}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8, help="rounds of the ceiling, then each step function")
    parser.add_argument("--steps", type=int, default=2, help="timed steps of each per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each first")
    parser.add_argument("--config", default="config/paper.yaml", help="the workflow config whose training is timed")
    parser.add_argument("--batch", type=int, default=None, help="trials per batch (default: the config's)")
    parser.add_argument("--units", type=int, default=668)
    parser.add_argument("--bins", type=int, default=100)
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                        help="auto: fp32, and bf16 where it runs in hardware")  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--malloc", choices=["reuse", "default"], default="reuse", help="see keep_freed_memory")
    args = parser.parse_args()
    reuse = args.malloc == "reuse" and keep_freed_memory()
    device = set_up_device(args.device, args.threads)
    if args.batch is None:
        args.batch = bench_config(args, "ndt1", "fp32", device).batch_size

    chosen, note = precisions(args.precision, device)
    print(f"torch {torch.__version__} on {machine(device)}; malloc: {'keeps freed memory' if reuse else 'default'}")
    print(f"NDT1 training step, batch {args.batch} x {args.bins} bins x {args.units} units, MtM schemes with prompts; "
          f"precisions: {', '.join(chosen)}{f' ({note})' if note else ''}")  # fmt: skip
    for precision in chosen:
        compare(args, precision, device)


if __name__ == "__main__":
    main()
