"""Pieces shared by the backbones: the Poisson loss, dropout, and the pre-LN transformer block."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ModelOutput:
    log_rates: torch.Tensor  # float32 (B, T, N), log(spikes per bin)
    loss: torch.Tensor | None  # scalar; None without a mask or without scored entries
    n_scored: int  # entries the loss scored


def poisson_nll(
    log_rates: torch.Tensor, counts: torch.Tensor, target: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Exact Poisson negative log-likelihood, in nats, of `counts` under rates exp(log_rates).

    log_rates, counts: float (B, T, N); target: bool (B, T, N), the entries scored.
    reduction: "mean" (per scored entry), "sum", or "none" (B, T, N) with zeros off target.

    Per entry: exp(r) - k r + lgamma(k + 1). The lgamma term is constant in the parameters (so
    it changes no gradient) but makes the value a true likelihood, comparable across datasets
    and models; torch's PoissonNLLLoss(log_input=True) leaves it out. Off-target entries are
    removed with `where`, never multiplied by zero, so neither their counts (which may be
    garbage, e.g. padding) nor an overflowing exp(r) can leak a NaN into the loss or gradient.
    """
    r = log_rates.float().masked_fill(~target, 0.0)
    k = counts.float().masked_fill(~target, 0.0)
    nll = torch.where(target, r.exp() - k * r + torch.lgamma(k + 1.0), 0.0)
    if reduction == "none":
        return nll
    if reduction == "sum":
        return nll.sum()
    if reduction == "mean":
        return nll.sum() / target.sum().clamp_min(1)
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


Rotary = tuple[torch.Tensor, torch.Tensor] | None  # (cos, sin) tables, or no rotary embedding


def rotary_tables(length: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (length, head_dim) for rotary position embedding, positions 0..length-1."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate feature pairs (i, i + d/2) of x (B, H, L, d) by position-dependent angles."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def dropout(x: torch.Tensor, p: float, *, training: bool) -> torch.Tensor:
    """F.dropout(x, p, training), with a cheaper random mask on CPU.

    On CPU, bernoulli_ (behind F.dropout) costs about 9 ns per element: at paper size a fifth
    of an fp32 and over a third of a bf16 training step. Here each element instead gets a
    15-bit uniform integer, two per 32-bit draw of torch's global generator, about 5x cheaper
    all told; p is thus rounded to a multiple of 2^-15.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    n = x.numel()
    words = torch.empty((n + 1) // 2, dtype=torch.int32, device=x.device).random_()  # 31 random bits
    uniform15 = words.bitwise_and_(0x7FFF7FFF).view(torch.int16)[:n].view(x.shape)  # [0, 2^15)
    keep = uniform15 >= round(p * 32768)
    return x * torch.where(keep, torch.tensor(1.0 / (1.0 - p), dtype=x.dtype), torch.tensor(0.0, dtype=x.dtype))


class Attention(nn.Module):
    def __init__(self, hidden: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, *, allowed: torch.Tensor | None, rotary: Rotary) -> torch.Tensor:
        """x (B, L, hidden) -> (B, L, hidden). allowed: bool (L, L), query i may see key j; None
        for all. rotary: (cos, sin) tables (L, head_dim), or None for learned positions.
        """
        B, L, C = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        if rotary is not None:
            cos, sin = (t.to(q.dtype) for t in rotary)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.training and self.dropout > 0 and x.device.type == "cpu":
            # SDPA would fall back to this same math on CPU, but draw its dropout mask slowly
            # scaling q rather than the scores: a pass over (B, heads, L, d), not (B, heads, L, L)
            scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, heads, L, L)
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            y = dropout(scores.softmax(dim=-1), self.dropout, training=True) @ v
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
            )
        y = self.proj(y.transpose(1, 2).reshape(B, L, C))
        return dropout(y, self.dropout, training=self.training)


class MLP(nn.Module):
    def __init__(self, hidden: int, ffn: int, dropout: float):
        super().__init__()
        self.up = nn.Linear(hidden, ffn)
        self.proj = nn.Linear(ffn, hidden)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(self.proj(F.gelu(self.up(x))), self.dropout, training=self.training)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, hidden: int, n_heads: int, ffn: int, dropout: float):
        super().__init__()
        self.ln_attn = nn.LayerNorm(hidden)
        self.attn = Attention(hidden, n_heads, dropout)
        self.ln_mlp = nn.LayerNorm(hidden)
        self.mlp = MLP(hidden, ffn, dropout)

    def forward(self, x: torch.Tensor, *, allowed: torch.Tensor | None, rotary: Rotary) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x), allowed=allowed, rotary=rotary)
        return x + self.mlp(self.ln_mlp(x))


def init_weights(module: nn.Module) -> None:
    """N(0, 0.02) weights and zero biases for linear layers and embeddings (GPT-2)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


def scale_residual_outputs(blocks: nn.ModuleList) -> None:
    """GPT-2: scale the residual branches' output layers so the residual stream's variance does
    not grow with depth."""
    for block in blocks:
        for proj in (block.attn.proj, block.mlp.proj):
            nn.init.normal_(proj.weight, std=0.02 / (2 * len(blocks)) ** 0.5)


def masked_output(
    log_rates: torch.Tensor, counts: torch.Tensor, target: torch.Tensor | None, loss: str
) -> ModelOutput:
    """The forward pass's result: log rates (B, T, N), and the loss over `target` when given."""
    n_scored = 0 if target is None else int(target.sum())
    if n_scored == 0:
        return ModelOutput(log_rates=log_rates, loss=None, n_scored=0)
    return ModelOutput(log_rates=log_rates, loss=poisson_nll(log_rates, counts, target, loss), n_scored=n_scored)
