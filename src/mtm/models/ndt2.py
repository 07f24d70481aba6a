"""NDT2: a transformer over space-time patches of spike counts (Joel Ye et al. 2023), as MtM ran it.

The model reads counts (B, T, N) -- B trials, T bins, N units of one session -- and returns log
firing rates (B, T, N) in log(spikes per bin), like NDT1 (`mtm.models.ndt1`). A token is a patch
of `patch_size` consecutive units in one bin: each bin's N units are cut into
K = ceil(N / patch_size) patches, the last one padded with zeros (padding units are never
predicted, so never scored). Tokens are ordered bin by bin:

    [session?, prompt?, (t0, p0), (t0, p1), ..., (t0, pK-1), (t1, p0), ..., (tT-1, pK-1)]

Each token's counts go through Linear(patch_size -> token_width) -> softsign -> Linear(-> hidden),
plus a learned embedding of its patch index (space) and of its bin (time). The transformer is
NDT1's; a shared Linear(hidden -> patch_size) reads each token back out to its units.

Sessions share every layer: there are no per-session stitchers, a session's units are told
apart by their patch and place in it, and its session token says which recording this is (the
paper's multi-session NDT2). Each session does keep one log-rate offset per unit (N numbers,
started at log of the unit's mean rate, as NDT1's readout bias is), so the shared layers learn
structure rather than each unit's overall rate.

Causal attention is by bin: a token sees every token of its own and earlier bins, never a later
bin's. MtM's masks hide entries of the raw (B, T, N) input before patching, so every masking
scheme works unchanged; NDT2's own baseline, `random-token`, hides whole patches
(`mtm.masking.make_mask(..., token_units=patch_size)`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mtm.masking import Mask
from mtm.models.backbone import Backbone, check_config, transformer_flops
from mtm.models.layers import (
    Block,
    ModelOutput,
    init_weights,
    masked_output,
    scale_residual_outputs,
)
from mtm.vocabulary import MTM_SCHEMES


@dataclass(kw_only=True)
class NDT2Config:
    sessions: dict[str, int]  # session id -> its number of units; the order is the token order
    n_bins: int = 100  # the longest trial, in bins
    patch_size: int = 128  # units per token
    hidden: int = 512
    n_layers: int = 5
    n_heads: int = 8
    ffn: int = 1024  # MLP inner width
    dropout: float = 0.4  # attention probabilities, attention output, MLP output
    embed_dropout: float = 0.2
    token_width: int = 256  # the token embedding's inner width
    max_patches: int | None = None  # space embeddings; None: the most patches of `sessions`
    use_prompt: bool = False  # a learned prompt token per MtM scheme
    use_session: bool = True  # a learned token per session
    loss: str = "mean"  # "mean": Poisson NLL per scored entry; "sum": summed (the authors' loss)

    def __post_init__(self):
        check_config(self)
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {self.patch_size}")
        most = max(self.n_patches(n) for n in self.sessions.values())
        self.max_patches = most if self.max_patches is None else max(self.max_patches, most)

    @classmethod
    def paper(cls, sessions: dict[str, int], **overrides) -> NDT2Config:
        """The size trained in the MtM paper: 128-unit patches, NDT1's transformer (about
        10.8 M parameters)."""
        return cls(sessions=sessions, **overrides)

    @classmethod
    def demo(cls, sessions: dict[str, int], **overrides) -> NDT2Config:
        """A small model for 2 CPU cores: NDT1's demo transformer, 64-unit patches (so a
        demo session of 128 units has 2 tokens per bin)."""
        sizes = {"hidden": 128, "n_layers": 2, "n_heads": 4, "ffn": 256, "token_width": 128, "patch_size": 64}
        return cls(sessions=sessions, **{**sizes, **overrides})

    @property
    def n_context(self) -> int:
        """Context tokens in front of the patch tokens (session, prompt)."""
        return int(self.use_session) + int(self.use_prompt)

    def n_patches(self, n_units: int) -> int:
        """Tokens per bin for a session of `n_units` units."""
        return math.ceil(n_units / self.patch_size)


def patch(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, T, N) -> (B, T, K, patch_size), K = ceil(N / patch_size); the last patch's missing
    units are zeros."""
    B, T, N = x.shape
    K = math.ceil(N / patch_size)
    return F.pad(x, (0, K * patch_size - N)).view(B, T, K, patch_size)


def unpatch(patches: torch.Tensor, n_units: int) -> torch.Tensor:
    """(B, T, K, patch_size) -> (B, T, n_units): the inverse of `patch`, padding dropped."""
    B, T, K, P = patches.shape
    if not (K - 1) * P < n_units <= K * P:
        raise ValueError(f"{K} patches of {P} units cannot hold exactly {n_units} units")
    return patches.reshape(B, T, K * P)[..., :n_units]


def causal_allowed(n_bins: int, n_patches: int, n_context: int, device: torch.device) -> torch.Tensor:
    """bool (L, L), L = n_context + n_bins * n_patches: query i may see key j. A patch token
    sees the context tokens and every token of its own or an earlier bin; a context token sees
    only the context (else it would carry later bins back to earlier ones)."""
    bins = torch.arange(n_bins, device=device).repeat_interleave(n_patches)
    time = torch.cat([torch.full((n_context,), -1, device=device), bins])  # -1: context
    context = time < 0
    return context[None, :] | ((time[None, :] <= time[:, None]) & ~context[:, None])


class NDT2(Backbone):
    def __init__(self, config: NDT2Config):
        super().__init__()
        self.config = config
        c = config
        self.session_token = nn.ParameterDict()  # session id -> (hidden,)
        self.unit_offset = nn.ParameterDict()  # session id -> (N,), log rate per unit
        # softsign bounds the token's features to (-1, 1): a few bursting units cannot
        # dominate a token
        self.embed = nn.Sequential(
            nn.Linear(c.patch_size, c.token_width), nn.Softsign(), nn.Linear(c.token_width, c.hidden)
        )
        self.space = nn.Parameter(torch.zeros(c.max_patches, c.hidden))
        self.time = nn.Parameter(torch.zeros(c.n_bins, c.hidden))
        self.prompt = nn.Embedding(len(MTM_SCHEMES), c.hidden) if c.use_prompt else None
        self.blocks = nn.ModuleList(Block(c.hidden, c.n_heads, c.ffn, c.dropout) for _ in range(c.n_layers))
        self.ln_final = nn.LayerNorm(c.hidden)
        self.readout = nn.Linear(c.hidden, c.patch_size)
        self.apply(init_weights)
        scale_residual_outputs(self.blocks)
        nn.init.normal_(self.space, std=0.02)
        nn.init.normal_(self.time, std=0.02)
        for eid, n_units in c.sessions.items():
            self._add(eid, n_units)

    @property
    def token_units(self) -> int:
        """Units per token, for `mtm.masking.make_mask`'s random-token scheme."""
        return self.config.patch_size

    def _add(self, eid: str, n_units: int) -> None:
        device = self.space.device
        if self.config.use_session:
            self.session_token[eid] = nn.Parameter(0.02 * torch.randn(self.config.hidden, device=device))
        self.unit_offset[eid] = nn.Parameter(torch.zeros(n_units, device=device))

    def add_session(self, eid: str, n_units: int) -> None:
        """Add a new session: its session token and unit offsets, freshly initialised. A session
        with more patches than any before grows the space embedding by new rows (shared, like
        the rest, so not among `session_parameters`: finetuning with `trainable: session` leaves
        them as initialised); everything else is kept."""
        c = self.config
        self._check_new_session(eid, n_units)
        extra = c.n_patches(n_units) - c.max_patches
        if extra > 0:
            rows = 0.02 * torch.randn(extra, c.hidden, device=self.space.device)
            self.space = nn.Parameter(torch.cat([self.space.detach(), rows]))
            c.max_patches += extra
        c.sessions[eid] = n_units
        self._add(eid, n_units)

    def remove_session(self, eid: str) -> None:
        """Drop session `eid`'s token and offsets; the shared weights stay as they are."""
        self._forget_session(eid)
        del self.unit_offset[eid]

    def session_parameters(self, eid: str) -> list[nn.Parameter]:
        """The parameters that belong to session `eid` alone (its unit offsets and token)."""
        return [self.unit_offset[eid]] + ([self.session_token[eid]] if self.config.use_session else [])

    @torch.no_grad()
    def init_readout_bias(self, mean_counts: torch.Tensor, session: str | None = None) -> None:
        """Start each unit's log rate at log(its mean count per bin); mean_counts float (N,),
        floored at 1e-3 spikes per bin so that silent units do not start at log 0."""
        offset = self.unit_offset[self.resolve_session(session)]
        offset.copy_(mean_counts.to(offset).clamp_min(1e-3).log())

    def forward(
        self,
        counts: torch.Tensor,
        *,
        mask: Mask | None = None,
        prompt: int | torch.Tensor | None = None,
        session: str | None = None,
        causal: bool = False,
    ) -> ModelOutput:
        """counts: (B, T, N) raw spike counts (any real or integer dtype), T <= n_bins.
        mask: entries to hide and score; None runs on the full input and returns no loss.
        causal: causal attention without a mask (for input the caller has masked itself);
            with a mask, attention follows mask.causal and this must stay False.
        prompt: MtM scheme index (MTM_SCHEMES order), an int for the batch or long (B,);
            required if and only if config.use_prompt.
        session: the id of the session the batch comes from; None for a one-session model.
        """
        c = self.config
        B, T, N = counts.shape
        session, x = self._hidden(counts, mask, prompt, session, causal)
        # the final norm and readout stay in fp32 under bf16 autocast, as in NDT1
        with torch.autocast(x.device.type, enabled=False):
            patches = self.readout(self.ln_final(x.float()))  # (B, T*K, P)
        log_rates = unpatch(patches.view(B, T, -1, c.patch_size), N) + self.unit_offset[session]
        return masked_output(log_rates, counts, None if mask is None else mask.target, c.loss)

    def encode(
        self, counts: torch.Tensor, *, prompt: int | torch.Tensor | None = None, session: str | None = None
    ) -> torch.Tensor:
        """The encoder's latents of unmasked input: float32 (B, T, hidden), one vector per bin, the
        mean over the bin's patch tokens after the final norm (so a head sees the same shape as
        NDT1's). Arguments as in forward."""
        B, T, _ = counts.shape
        session, x = self._hidden(counts, None, prompt, session, False)
        with torch.autocast(x.device.type, enabled=False):
            return self.ln_final(x.float()).view(B, T, -1, self.config.hidden).mean(dim=2)

    def _hidden(self, counts, mask, prompt, session, causal) -> tuple[str, torch.Tensor]:
        """(session, the last block's output at the patch tokens: (B, T*K, hidden), bin by bin)."""
        c = self.config
        B, T, N = counts.shape
        session, inputs, causal = self._batch_inputs(counts, mask, prompt, session, causal)
        tokens = patch(inputs, c.patch_size)  # (B, T, K, P)
        K = tokens.shape[2]
        x = self.embed(tokens) + self.space[:K] + self.time[:T, None]  # (B, T, K, hidden)
        x = self._with_context(x.reshape(B, T * K, c.hidden), session, prompt)  # (B, L, hidden)

        if isinstance(causal, torch.Tensor):
            # a model of a stack (mtm.stack), whose flag is data: attention restricted or not by a mask
            allowed = causal_allowed(T, K, c.n_context, x.device) | ~causal
        else:
            allowed = causal_allowed(T, K, c.n_context, x.device) if causal else None
        for block in self.blocks:
            x = block(x, allowed=allowed, rotary=None)
        return session, x[:, c.n_context :]

    def flops_per_sample(self, session: str | None = None, *, training: bool = True) -> float:
        """Matmul FLOPs for one sample of n_bins bins (2 per multiply-add), as
        `NDT1.flops_per_sample` counts them: the token embedding, every layer over all
        n_context + n_bins x K tokens (attention scores and mixing included), the readout."""
        c = self.config
        K = c.n_patches(c.sessions[self.resolve_session(session)])
        tokens, H, P, W = c.n_bins * K, c.hidden, c.patch_size, c.token_width
        embed = tokens * (P * W + W * H)
        readout = tokens * H * P
        forward = 2 * (embed + transformer_flops(c.n_context + tokens, c) + readout)
        return float(3 * forward if training else forward)
