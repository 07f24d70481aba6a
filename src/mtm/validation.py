"""A training run's validation: fixed masks per batch, and the scores model selection and
convergence follow (mtm.train's docstring).

    loss      the exact Poisson NLL per scored entry (nats), under each scheme's masks
    psth_r2   the authors' selection score: the mean over the SELECTION_UNITS most active units
              of each one's R2 over bins of the trial-averaged predicted against observed counts
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mtm.data import SessionTensors
from mtm.device import autocast
from mtm.masking import Mask, make_mask
from mtm.metrics import r2_per_unit
from mtm.models import Backbone, poisson_nll
from mtm.seeds import derive_seed
from mtm.vocabulary import prompt_index

SELECTION_UNITS = 50  # "psth-r2": the authors' number of most active validation units


def prompt_of(scheme: str, *, use_prompt: bool) -> int | None:
    """The prompt token of `scheme` (vocabulary.prompt_index), or None without prompts."""
    return prompt_index(scheme) if use_prompt else None


def fixed_masks(
    data: SessionTensors,
    split: str,
    schemes: tuple[str, ...],
    *,
    seed: int,
    batch_size: int,
    token_units: int | None = None,
) -> dict[str, list[Mask]]:
    """Masks for every batch of `split` (unshuffled) under each scheme, drawn from (seed, split,
    session) alone: the same whichever other sessions are trained alongside. token_units: the
    model's (for random-token masking)."""
    generator = torch.Generator().manual_seed(derive_seed(seed, split, data.eid))
    shape = (data.n_bins, data.n_units)
    return {
        scheme: [
            make_mask(
                scheme, shape=(len(trials), *shape), regions=data.regions, generator=generator, token_units=token_units
            )
            for trials in data.batches(split, batch_size=batch_size)
        ]
        for scheme in schemes
    }


def masked_poisson_nll(log_rates: torch.Tensor, counts: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:
    """(the Poisson NLL summed over the `target` entries, their number); all (B, T, N)."""
    return float(poisson_nll(log_rates, counts, target, reduction="sum")), int(target.sum())


@dataclass(frozen=True)
class Scores:
    """A split's scores under each scheme's masks: loss, the Poisson NLL per scored entry;
    psth_r2, the trial-averaged R2 of the most active units (module docstring)."""

    loss: dict[str, float]
    psth_r2: dict[str, float]

    def mean_loss(self) -> float:
        return sum(self.loss.values()) / len(self.loss)

    def mean_psth_r2(self) -> float:
        return sum(self.psth_r2.values()) / len(self.psth_r2)


@torch.no_grad()
def score_split(
    model: Backbone,
    data: SessionTensors,
    masks: dict[str, list[Mask]],
    *,
    split: str,
    batch_size: int,
    use_prompt: bool,
    precision: str = "fp32",
) -> Scores:
    """The scores of `split` under each scheme's masks (from `fixed_masks`)."""
    model.eval()
    device = next(model.parameters()).device
    loss, psth_r2 = {}, {}
    for scheme, scheme_masks in masks.items():
        total, count, observed, predicted = 0.0, 0, 0.0, 0.0
        for trials, mask in zip(data.batches(split, batch_size=batch_size), scheme_masks, strict=True):
            counts = data.counts[trials].to(device)
            mask = mask.to(device)
            with autocast(precision, device):
                out = model(counts, mask=mask, prompt=prompt_of(scheme, use_prompt=use_prompt), session=data.eid)
            nll, n = masked_poisson_nll(out.log_rates, counts, mask.target)
            total, count = total + nll, count + n
            observed = observed + counts.sum(0).double()  # (T, N): summed over trials
            predicted = predicted + out.log_rates.float().exp().sum(0).double()
        loss[scheme] = total / count if count else math.nan
        psth_r2[scheme] = active_units_psth_r2(predicted, observed)
    return Scores(loss=loss, psth_r2=psth_r2)


def validate(
    model: Backbone,
    sessions: list[SessionTensors],
    masks: dict[str, dict[str, list[Mask]]],
    *,
    batch_size: int,
    use_prompt: bool,
    precision: str,
) -> Scores:
    """The val split's scores per scheme, averaged over sessions (each session counts the same);
    masks: per session id, from `fixed_masks`."""
    per_session = [
        score_split(model, data, masks[data.eid], split="val", batch_size=batch_size, use_prompt=use_prompt,
                    precision=precision)
        for data in sessions
    ]  # fmt: skip
    schemes = per_session[0].loss

    def mean(values: list[dict[str, float]]) -> dict[str, float]:
        return {scheme: sum(v[scheme] for v in values) / len(values) for scheme in schemes}

    return Scores(loss=mean([s.loss for s in per_session]), psth_r2=mean([s.psth_r2 for s in per_session]))


def active_units_psth_r2(predicted: torch.Tensor, observed: torch.Tensor) -> float:
    """The mean over the SELECTION_UNITS most active units of each one's R2 over bins of
    predicted against observed counts summed over trials, both (T, N); the trial count, a
    common factor, leaves R2 unchanged."""
    observed, predicted = observed.cpu().numpy(), predicted.cpu().numpy()
    active = np.argsort(-observed.sum(0), kind="stable")[:SELECTION_UNITS]
    return float(r2_per_unit(predicted[:, active], observed[:, active]).mean())
