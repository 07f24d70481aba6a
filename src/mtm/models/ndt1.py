"""NDT1: a transformer over time bins of spike counts, trained by masked Poisson prediction.

The model reads counts (B, T, N) -- B trials, T bins (20 ms each), N units of one session --
and returns log firing rates (B, T, N) in log(spikes per bin). Each bin is one token: its N
counts are embedded to `hidden` features. Sessions differ in their units, so each session has
its own input layer (N -> embed_width) and readout (hidden -> N), its "stitchers", keyed by
session id (never by unit count: two sessions with equal counts have different units); the rest
is shared. A batch comes from one session. `add_session` stitches a new session onto a trained
model. A few context tokens go in front of the time tokens:

    [session?, prompt?, t0, t1, ..., t(T-1)]

The session token says which recording the batch comes from, the prompt token which MtM
masking scheme hid the input (`mtm.masking.MTM_SCHEMES` order). Context tokens see each other
and every time token sees them; under a causal mask a time token sees no later bin, and the
context tokens see no time token at all (else they would carry the future back to the past;
the authors' code lets them, and `causal_context_sees_bins` reproduces that for their weights).

Training: the caller passes raw counts and a `mtm.masking.Mask`; the forward pass zeroes the
hidden entries and scores the target entries with the Poisson negative log-likelihood.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mtm.masking import Mask
from mtm.models.backbone import Backbone, check_config, transformer_flops
from mtm.models.layers import (
    Block,
    ModelOutput,
    init_weights,
    masked_output,
    rotary_tables,
    scale_residual_outputs,
)
from mtm.vocabulary import MTM_SCHEMES


@dataclass(kw_only=True)
class NDT1Config:
    sessions: dict[str, int]  # session id -> its number of units; the order is the token order
    n_bins: int = 100  # the longest trial, in bins
    hidden: int = 512
    n_layers: int = 5
    n_heads: int = 8
    ffn: int = 1024  # MLP inner width
    dropout: float = 0.4  # attention probabilities, attention output, MLP output
    embed_dropout: float = 0.2
    # input embedding: a session's Linear(N -> embed_width), then a shared softsign ->
    # Linear(embed_width -> hidden); None: embed_mult x the most units of the first sessions
    embed_width: int | None = None
    embed_mult: int = 2
    position: str = "learned"  # "learned" (one vector per bin) or "rope" (rotary, in attention)
    use_prompt: bool = False  # a learned prompt token per MtM scheme
    use_session: bool = True  # a learned token per session
    loss: str = "mean"  # "mean": Poisson NLL per scored entry; "sum": summed (the authors' loss)
    # under causal attention, the context tokens attend to every bin as in the authors' code, so
    # the future reaches earlier bins through them; only to reproduce their models exactly
    causal_context_sees_bins: bool = False

    def __post_init__(self):
        check_config(self)
        if self.embed_width is None:
            self.embed_width = self.embed_mult * max(self.sessions.values())
        if self.position not in ("learned", "rope"):
            raise ValueError(f"position must be 'learned' or 'rope', got {self.position!r}")

    @classmethod
    def paper(cls, sessions: dict[str, int], **overrides) -> NDT1Config:
        """The size trained in the MtM paper (about 12.5 M parameters for one 668-unit session)."""
        return cls(sessions=sessions, **overrides)

    @classmethod
    def demo(cls, sessions: dict[str, int], **overrides) -> NDT1Config:
        """A small model that trains in about a second per epoch of a demo session on one CPU
        core: one transformer layer, and an input embedding as wide as the units (the paper's
        is twice as wide, which costs a quarter more per step at 256 units). On a demo session
        a second layer doubled the cost of a step and did not predict better (co-smoothing
        0.104 against 0.107 bits/spike with one layer), and dropout 0.2 (the paper's: 0.4)
        converged in fewer epochs to a lower validation loss (92 against 115 epochs)."""
        sizes = {"hidden": 128, "n_layers": 1, "n_heads": 4, "ffn": 256, "embed_mult": 1, "dropout": 0.2}
        return cls(sessions=sessions, **{**sizes, **overrides})

    @property
    def n_context(self) -> int:
        """Context tokens in front of the time tokens (session, prompt)."""
        return int(self.use_session) + int(self.use_prompt)


class NDT1(Backbone):
    def __init__(self, config: NDT1Config):
        super().__init__()
        self.config = config
        c = config
        self.stitch_in = nn.ModuleDict()  # session id -> Linear(N -> embed_width)
        self.readout = nn.ModuleDict()  # session id -> Linear(hidden -> N)
        self.session_token = nn.ParameterDict()  # session id -> (hidden,)
        # softsign bounds the wide embedding's features to (-1, 1): a few bursting units
        # cannot dominate a token
        self.embed = nn.Sequential(nn.Softsign(), nn.Linear(c.embed_width, c.hidden))
        self.prompt = nn.Embedding(len(MTM_SCHEMES), c.hidden) if c.use_prompt else None
        self.position = nn.Parameter(torch.zeros(c.n_bins, c.hidden)) if c.position == "learned" else None
        self.blocks = nn.ModuleList(Block(c.hidden, c.n_heads, c.ffn, c.dropout) for _ in range(c.n_layers))
        self.ln_final = nn.LayerNorm(c.hidden)

        L = c.n_context + c.n_bins
        # causal: query i sees key j if j is a context token or j <= i (context rows: context
        # only, unless causal_context_sees_bins)
        i = torch.arange(L)
        allowed = (i[None, :] <= i[:, None]) | (i[None, :] < c.n_context)  # (L queries, L keys)
        if c.causal_context_sees_bins:
            allowed |= i[:, None] < c.n_context
        self.register_buffer("causal_allowed", allowed, persistent=False)
        if c.position == "rope":
            # the context tokens take positions 0..n_context-1; bins follow, so bin t sits at
            # n_context + t and the relative positions between bins are the bin offsets
            cos, sin = rotary_tables(L, c.hidden // c.n_heads)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(init_weights)
        scale_residual_outputs(self.blocks)
        if self.position is not None:
            nn.init.normal_(self.position, std=0.02)
        for eid, n_units in c.sessions.items():
            self._stitch(eid, n_units)

    @property
    def token_units(self) -> None:
        """Units per token, for `mtm.masking.make_mask`'s random-token scheme: None, a token is
        a whole bin."""
        return None

    def _stitch(self, eid: str, n_units: int) -> None:
        """Create session `eid`'s input layer, readout and token, initialised, on the model's device."""
        c = self.config
        device = self.embed[1].weight.device
        self.stitch_in[eid] = nn.Linear(n_units, c.embed_width, device=device)
        self.readout[eid] = nn.Linear(c.hidden, n_units, device=device)
        for layer in (self.stitch_in[eid], self.readout[eid]):
            init_weights(layer)
        if c.use_session:
            self.session_token[eid] = nn.Parameter(0.02 * torch.randn(c.hidden, device=device))

    def add_session(self, eid: str, n_units: int) -> None:
        """Stitch a new session onto the model: its own input layer, readout and session token,
        freshly initialised; everything shared is kept. See `session_parameters`."""
        self._check_new_session(eid, n_units)
        self.config.sessions[eid] = n_units
        self._stitch(eid, n_units)

    def remove_session(self, eid: str) -> None:
        """Drop session `eid`'s stitchers and token (e.g. a pretraining session's, from a model
        finetuned on another one); the shared weights stay as they are."""
        self._forget_session(eid)
        del self.stitch_in[eid], self.readout[eid]

    def session_parameters(self, eid: str) -> list[nn.Parameter]:
        """The parameters that belong to session `eid` alone (its stitchers and token)."""
        params = [*self.stitch_in[eid].parameters(), *self.readout[eid].parameters()]
        return params + ([self.session_token[eid]] if self.config.use_session else [])

    @torch.no_grad()
    def init_readout_bias(self, mean_counts: torch.Tensor, session: str | None = None) -> None:
        """Start each unit's log rate at log(its mean count per bin); mean_counts float (N,).

        The first steps then learn structure instead of each unit's overall rate, and silent
        units start at a small rate (floored at 1e-3 spikes per bin) rather than at log 0.
        """
        bias = self.readout[self.resolve_session(session)].bias
        bias.copy_(mean_counts.to(bias).clamp_min(1e-3).log())

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
        session, x = self._hidden(counts, mask, prompt, session, causal)
        # the final norm and readout stay in fp32 under bf16 autocast: bf16 spaces values near
        # log rate -6 by 0.03, a 3% rate error; the layer is 3% of the FLOPs
        with torch.autocast(x.device.type, enabled=False):
            log_rates = self.readout[session](self.ln_final(x.float()))  # (B, T, N)

        return masked_output(log_rates, counts, None if mask is None else mask.target, self.config.loss)

    def encode(
        self, counts: torch.Tensor, *, prompt: int | torch.Tensor | None = None, session: str | None = None
    ) -> torch.Tensor:
        """The encoder's latents of unmasked input: float32 (B, T, hidden), one vector per bin,
        after the final norm (what the readout sees). Arguments as in forward."""
        session, x = self._hidden(counts, None, prompt, session, False)
        with torch.autocast(x.device.type, enabled=False):
            return self.ln_final(x.float())

    def _hidden(self, counts, mask, prompt, session, causal) -> tuple[str, torch.Tensor]:
        """(session, the last block's output at the bins' positions: (B, T, hidden))."""
        c = self.config
        T = counts.shape[1]
        session, inputs, causal = self._batch_inputs(counts, mask, prompt, session, causal)
        x = self.embed(self.stitch_in[session](inputs))  # (B, T, hidden)
        if self.position is not None:
            x = x + self.position[:T]
        x = self._with_context(x, session, prompt)  # (B, L, hidden)

        L = c.n_context + T
        if isinstance(causal, torch.Tensor):
            # a model of a stack (mtm.stack), whose flag is data: attention restricted or not by a mask
            allowed = self.causal_allowed[:L, :L] | ~causal
        else:
            allowed = self.causal_allowed[:L, :L] if causal else None
        rotary = (self.rope_cos[:L], self.rope_sin[:L]) if c.position == "rope" else None
        for block in self.blocks:
            x = block(x, allowed=allowed, rotary=rotary)
        return session, x[:, c.n_context :]

    def flops_per_sample(self, session: str | None = None, *, training: bool = True) -> float:
        """Matmul FLOPs for one sample of n_bins bins (2 per multiply-add), attention scores
        QK^T and mixing AV included, over all n_context + n_bins tokens (the causal mask is not
        discounted: the kernels compute the full score matrix). Elementwise work (norms,
        activations, softmax, loss) is left out. Training counts 3x the forward pass, the
        usual convention (backward: gradients of activations and of weights); autograd skips
        the gradient of the counts themselves, so it really does about 2% less.
        session: whose stitchers count; None for a one-session model.
        """
        c = self.config
        T, H, N, E = c.n_bins, c.hidden, c.sessions[self.resolve_session(session)], c.embed_width
        embed = T * (N * E + E * H)
        readout = T * H * N
        forward = 2 * (embed + transformer_flops(c.n_context + T, c) + readout)
        return float(3 * forward if training else forward)
