"""Masking schemes for self-supervised training on binned spike counts (MtM, Zhang et al. 2024).

A batch of counts has shape (B, T, N): B trials, T time bins, N units. A scheme decides which
entries are hidden from the model (zeroed in its input) and which of those the loss scores:

    temporal      whole bins, each with probability `ratio`, per (sample, bin)
    neuron        whole units (all bins), each with probability `ratio`, per (sample, unit)
    causal        temporal with ratio 0.6, and attention that never looks at a later bin
    intra-region  one region per sample; every other region is hidden (not scored), and a
                  `ratio` fraction of the region's own units is hidden and scored
    inter-region  one region per sample; all of its units are hidden and scored
    random        single (bin, unit) entries, each with probability `ratio`
    random-token  whole tokens of the backbone, each with probability `ratio`: for NDT2 a patch
                  of `token_units` consecutive units in one bin (its own baseline); for NDT1,
                  whose token is a whole bin, this is temporal masking

MtM trains on `mtm.vocabulary.MTM_SCHEMES`, one scheme per batch; a prompt token tells the model which.

Every function is pure: randomness comes only from the `torch.Generator` passed in, so a seed
fixes the mask. Regions are read from the batch's own units on every call (units differ between
sessions, so a region list cached from an earlier batch would be wrong). Padding units
(`unit_valid` False) are never scored and never chosen as a region. Whenever a sample has a
valid unit, its mask scores at least one entry, so no sample silently contributes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mtm.vocabulary import MASKING_SCHEMES

DEFAULT_RATIO = {
    "temporal": 0.3,
    "neuron": 0.3,
    "causal": 0.6,
    "intra-region": 0.3,
    "inter-region": 1.0,
    "random": 0.3,
    "random-token": 0.3,
}


@dataclass(frozen=True)
class Mask:
    """hidden: bool (B, T, N), entries zeroed in the model's input.
    target: bool (B, T, N), entries scored by the loss; always hidden and always valid units.
    causal: attention is causal (no time token sees a later bin).
    hidden and target may be broadcast views (a whole-bin mask stores one flag per bin): read
    them, or copy them (.contiguous()) before writing.
    """

    hidden: torch.Tensor
    target: torch.Tensor
    causal: bool

    def to(self, device: torch.device) -> Mask:
        return Mask(hidden=self.hidden.to(device), target=self.target.to(device), causal=self.causal)


def sample_scheme(schemes: tuple[str, ...] | list[str], *, generator: torch.Generator) -> str:
    """One scheme, drawn uniformly from `schemes` (one per batch in MtM training)."""
    i = torch.randint(len(schemes), (1,), generator=generator, device=generator.device)
    return schemes[int(i)]


def apply_mask(counts: torch.Tensor, mask: Mask) -> torch.Tensor:
    """Counts (B, T, N) as float32 with the hidden entries zeroed; `counts` is left untouched."""
    return counts.float().masked_fill(mask.hidden, 0.0)


def make_mask(
    scheme: str,
    *,
    shape: tuple[int, int, int],
    regions: torch.Tensor,
    unit_valid: torch.Tensor | None = None,
    generator: torch.Generator,
    ratio: float | None = None,
    token_units: int | None = None,
) -> Mask:
    """Draw a mask of `scheme` for a batch of `shape` (B, T, N).

    regions: long (N,) or (B, N), region id of each unit (any integers), per sample if 2-D.
    unit_valid: bool (N,) or (B, N), False for padding units; None means all valid.
    ratio: the scheme's masking probability; None takes DEFAULT_RATIO[scheme].
    token_units: for random-token, the units of one token (consecutive units, the last token
        of a bin possibly shorter); None: a token is a whole bin.
    The mask lives on `regions.device`, which must be the generator's device.
    """
    if scheme not in MASKING_SCHEMES:
        raise ValueError(f"unknown masking scheme {scheme!r}; expected one of {MASKING_SCHEMES}")
    ratio = DEFAULT_RATIO[scheme] if ratio is None else float(ratio)
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must lie in [0, 1], got {ratio}")
    B, T, N = shape
    device = regions.device
    if unit_valid is None:
        unit_valid = torch.ones(N, dtype=torch.bool, device=device)
    if regions.shape not in ((N,), (B, N)) or unit_valid.shape not in ((N,), (B, N)):
        raise ValueError(f"regions and unit_valid must be (N,) or (B, N) for shape {tuple(shape)}")
    regions = regions.expand(B, N)
    valid = unit_valid.to(device=device, dtype=torch.bool).expand(B, N)

    def rand(*size: int) -> torch.Tensor:
        return torch.rand(size, generator=generator, device=device)

    if scheme in ("temporal", "causal"):
        bins = _bernoulli_at_least_one(rand(B, T), ratio, torch.ones(B, T, dtype=torch.bool, device=device))
        hidden = bins[:, :, None].expand(B, T, N)
        return Mask(hidden=hidden, target=hidden & valid[:, None, :], causal=scheme == "causal")

    if scheme == "neuron":
        units = _bernoulli_at_least_one(rand(B, N), ratio, valid)
        hidden = units[:, None, :].expand(B, T, N)
        return Mask(hidden=hidden, target=hidden, causal=False)

    if scheme == "random":
        entries = valid[:, None, :].expand(B, T, N).reshape(B, T * N)
        hidden = _bernoulli_at_least_one(rand(B, T * N), ratio, entries).view(B, T, N)
        return Mask(hidden=hidden, target=hidden, causal=False)

    if scheme == "random-token":
        P = N if token_units is None else token_units
        if P < 1:
            raise ValueError(f"token_units must be >= 1, got {token_units}")
        K = -(-N // P)  # tokens per bin
        token_of_unit = torch.arange(N, device=device) // P
        # a token is a candidate if it holds a valid unit
        valid_in_token = torch.zeros(B, K, device=device).scatter_add_(1, token_of_unit.expand(B, N), valid.float())
        token_valid = valid_in_token > 0
        candidates = token_valid[:, None, :].expand(B, T, K).reshape(B, T * K)
        tokens = _bernoulli_at_least_one(rand(B, T * K), ratio, candidates).view(B, T, K)
        hidden = tokens[:, :, token_of_unit]  # (B, T, N)
        return Mask(hidden=hidden, target=hidden & valid[:, None, :], causal=False)

    in_region = _draw_region(regions, valid, rand)  # (B, N) valid units of one region per sample
    if scheme == "inter-region":
        hidden = in_region[:, None, :].expand(B, T, N)
        return Mask(hidden=hidden, target=hidden, causal=False)

    # intra-region: the region must be predicted from its own visible units only
    scored = _bernoulli_at_least_one(rand(B, N), ratio, in_region)
    hidden = (scored | ~in_region)[:, None, :].expand(B, T, N)
    return Mask(hidden=hidden, target=scored[:, None, :].expand(B, T, N), causal=False)


def _bernoulli_at_least_one(u: torch.Tensor, ratio: float, candidates: torch.Tensor) -> torch.Tensor:
    """bool (B, K): candidates with u < ratio; a row that picked none but has candidates gets
    its candidate of smallest u (uniform among its candidates, and no extra random draws).

    u: float (B, K) iid uniform [0, 1); candidates: bool (B, K).
    """
    chosen = (u < ratio) & candidates
    empty = ~chosen.any(dim=1) & candidates.any(dim=1)
    first = u.masked_fill(~candidates, 2.0).argmin(dim=1, keepdim=True)
    return chosen | (torch.zeros_like(chosen).scatter_(1, first, True) & empty[:, None])


def _draw_region(regions: torch.Tensor, valid: torch.Tensor, rand: Callable[..., torch.Tensor]) -> torch.Tensor:
    """bool (B, N): the valid units of one region per sample, the region drawn uniformly among
    the regions that have a valid unit in that sample (all False for a sample with none).
    """
    B, _ = regions.shape
    # compact ids 0..R-1, so that sparse ids (e.g. Allen atlas ids) cost nothing
    names, ids = torch.unique(regions, return_inverse=True)
    n_valid = torch.zeros(B, max(len(names), 1), dtype=torch.long, device=regions.device)
    present = n_valid.scatter_add_(1, ids, valid.long()) > 0
    # argmax of iid uniforms restricted to the present regions is a uniform draw among them
    region = rand(*present.shape).masked_fill(~present, -1.0).argmax(dim=1, keepdim=True)
    return (ids == region) & valid
