"""What NDT1 and NDT2 share: sessions keyed by id, the checks of a batch, the context tokens.

A backbone's config has at least `sessions` (session id -> units, in token order), `n_bins`,
`hidden`, `n_heads`, `n_layers`, `ffn`, `dropout`, `embed_dropout`, `use_prompt`,
`use_session` and `loss`; the model has `session_token` (a ParameterDict) and `prompt` (an
Embedding, or None). The context tokens go in front of the model's own tokens:

    [session?, prompt?, ...]
"""

from __future__ import annotations

import torch
from torch import nn

from mtm.masking import Mask, apply_mask
from mtm.models.layers import dropout


def check_config(config) -> None:
    """Raise ValueError for a config no backbone can be built from; copies `sessions`."""
    c = config
    if not c.sessions or min(c.sessions.values()) < 1:
        raise ValueError(f"sessions must map session ids to unit counts >= 1, got {c.sessions}")
    if any(not isinstance(eid, str) or not eid or "." in eid for eid in c.sessions):
        raise ValueError(f"session ids must be non-empty strings without '.', got {list(c.sessions)}")
    c.sessions = dict(c.sessions)
    if not (0.0 <= c.dropout < 1.0 and 0.0 <= c.embed_dropout < 1.0):
        raise ValueError("dropout probabilities must lie in [0, 1)")
    if c.hidden % c.n_heads:
        raise ValueError(f"hidden {c.hidden} is not a multiple of n_heads {c.n_heads}")
    if c.loss not in ("mean", "sum"):
        raise ValueError(f"loss must be 'mean' or 'sum', got {c.loss!r}")


def transformer_flops(n_tokens: int, config) -> int:
    """Matmul multiply-adds of the transformer for one sample of `n_tokens` tokens: QKV,
    attention scores QK^T and mixing AV, output projection, MLP; per layer, times n_layers."""
    L, H = n_tokens, config.hidden
    return config.n_layers * (L * H * 3 * H + 2 * L * L * H + L * H * H + 2 * L * H * config.ffn)


class Backbone(nn.Module):
    """The base of NDT1 and NDT2 (see the module docstring for what a subclass provides)."""

    config: object
    session_token: nn.ParameterDict
    prompt: nn.Embedding | None

    def resolve_session(self, session: str | None) -> str:
        """The session id a batch belongs to; None is allowed for a one-session model."""
        sessions = self.config.sessions
        if session is None:
            if len(sessions) != 1:
                raise ValueError(f"session is required: the model has {len(sessions)} sessions")
            return next(iter(sessions))
        if session not in sessions:
            raise ValueError(f"session {session} is not part of the model (it has {len(sessions)})")
        return session

    def _check_new_session(self, eid: str, n_units: int) -> None:
        if eid in self.config.sessions:
            raise ValueError(f"session {eid} is already part of the model")
        if not n_units >= 1 or "." in eid or not eid:
            raise ValueError(f"cannot add session {eid!r} with {n_units} units")

    def _forget_session(self, eid: str) -> None:
        """Drop `eid` from the config and its session token; the subclass drops the rest."""
        self.resolve_session(eid)
        if len(self.config.sessions) == 1:
            raise ValueError(f"cannot remove {eid}: it is the model's only session")
        del self.config.sessions[eid]
        if self.config.use_session:
            del self.session_token[eid]

    def _batch_inputs(
        self, counts: torch.Tensor, mask: Mask | None, prompt, session: str | None, causal: bool
    ) -> tuple[str, torch.Tensor, bool]:
        """Check a forward call's arguments (see the subclasses' forward); return (session id,
        the input with hidden entries zeroed as float32 (B, T, N), whether attention is causal)."""
        c = self.config
        _, T, N = counts.shape
        session = self.resolve_session(session)
        if N != c.sessions[session] or T > c.n_bins:
            raise ValueError(
                f"counts {tuple(counts.shape)} do not fit session {session} ({c.sessions[session]} units, {c.n_bins} bins)"
            )
        if (prompt is None) == c.use_prompt:
            raise ValueError("prompt is required if and only if config.use_prompt")
        if mask is not None and causal:
            raise ValueError("pass causal attention through mask.causal when a mask is given")
        inputs = counts.float() if mask is None else apply_mask(counts, mask)
        return session, inputs, mask.causal if mask is not None else causal

    def _with_context(self, x: torch.Tensor, session: str, prompt) -> torch.Tensor:
        """x (B, L, hidden) with the context tokens in front, then the embedding dropout."""
        B = x.shape[0]
        context = []
        if self.config.use_session:
            context.append(self.session_token[session].expand(B, -1))
        if self.prompt is not None:
            prompt = torch.as_tensor(prompt, dtype=torch.long, device=x.device).expand(B)
            context.append(self.prompt(prompt))
        if context:
            x = torch.cat([torch.stack(context, dim=1).to(x.dtype), x], dim=1)
        return dropout(x, self.config.embed_dropout, training=self.training)
