"""A binned session as torch tensors for training: counts, region ids per unit, split indices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from mtm.session import SessionData
from mtm.splits import SPLITS

REGION_LEVELS = ("allen", "beryl", "cosmos")
UNKNOWN_REGION = "unknown"  # a unit without an atlas label still needs a region id


@dataclass(frozen=True, kw_only=True)
class SessionTensors:
    """One session's counts and labels as tensors.

    counts: (n_trials, n_bins, n_units) float32 spike counts per bin
    regions: (n_units,) int64, the index of each unit's region in `region_names`
    region_names: sorted region acronyms at `region_level`
    splits: split name -> (n,) int64 trial indices (rows of `counts`), ascending
    """

    eid: str
    counts: torch.Tensor
    regions: torch.Tensor
    region_names: tuple[str, ...]
    region_level: str
    splits: dict[str, torch.Tensor]

    @classmethod
    def from_session(cls, session: SessionData, *, region_level: str = "beryl") -> SessionTensors:
        if region_level not in REGION_LEVELS:
            raise ValueError(f"region_level must be one of {REGION_LEVELS}, not {region_level!r}")
        acronyms = session.units[region_level].fillna(UNKNOWN_REGION).astype(str).to_numpy()
        names, ids = np.unique(acronyms, return_inverse=True)
        split = session.split
        return cls(
            eid=session.eid,
            counts=torch.from_numpy(session.counts.astype(np.float32)),
            regions=torch.from_numpy(ids.astype(np.int64).reshape(-1)),
            region_names=tuple(names.tolist()),
            region_level=region_level,
            splits={name: torch.from_numpy(np.flatnonzero(split == name)) for name in SPLITS},
        )

    @property
    def n_trials(self) -> int:
        return self.counts.shape[0]

    @property
    def n_bins(self) -> int:
        return self.counts.shape[1]

    @property
    def n_units(self) -> int:
        return self.counts.shape[2]

    def n_batches(self, split: str, *, batch_size: int) -> int:
        return -(-len(self.splits[split]) // batch_size)

    def batches(
        self, split: str, *, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = False
    ) -> Iterator[torch.Tensor]:
        """Trial indices of `split` in batches of `batch_size` (the last one may be smaller).

        With `shuffle`, the order is a permutation drawn from `generator` (required), so it
        depends only on the generator's state; without it, the trials come in ascending order.
        """
        trials = self.splits[split]
        if shuffle:
            if generator is None:
                raise ValueError("shuffle needs a generator (the order must be reproducible)")
            trials = trials[torch.randperm(len(trials), generator=generator)]
        yield from trials.split(batch_size)
