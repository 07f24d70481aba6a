"""A binned session as torch tensors for training: counts, region ids per unit, split indices.

A session read with `SessionTensors.from_file` keeps only its labels in memory; its counts are
read from the file when a batch needs them, through a `CountsCache` shared by the sessions of a
run, which holds the most recently used sessions' counts (uint8, as stored). Pretraining on
hundreds of sessions thus holds a bounded amount of data whatever the number of sessions.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from mtm.session import SessionData, SessionHeader, read_counts, read_session_header
from mtm.splits import SPLITS
from mtm.vocabulary import REGION_LEVELS

UNKNOWN_REGION = "unknown"  # a unit without an atlas label still needs a region id


class CountsCache:
    """The counts of the `max_sessions` most recently used session files, as tensors."""

    def __init__(self, max_sessions: int = 32) -> None:
        if max_sessions < 1:
            raise ValueError("a counts cache holds at least one session")
        self.max_sessions = max_sessions
        self._counts: OrderedDict[Path, torch.Tensor] = OrderedDict()
        self.reads = 0  # file reads so far (for tests and benchmarks)

    def get(self, path: Path) -> torch.Tensor:
        if path in self._counts:
            self._counts.move_to_end(path)
            return self._counts[path]
        counts = _tensor(read_counts(path))
        self.reads += 1
        self._counts[path] = counts
        while len(self._counts) > self.max_sessions:
            self._counts.popitem(last=False)
        return counts


@dataclass(frozen=True, kw_only=True)
class SessionTensors:
    """One session's counts and labels as tensors.

    counts: (n_trials, n_bins, n_units) spike counts per bin, uint8 or uint16 as stored (the
        model and the loss take them as they are); read through `source` on every access
    regions: (n_units,) int64, the index of each unit's region in `region_names`
    region_names: sorted region acronyms at `region_level`
    splits: split name -> (n,) int64 trial indices (rows of `counts`), ascending
    shape: (n_trials, n_bins, n_units)
    """

    eid: str
    regions: torch.Tensor
    region_names: tuple[str, ...]
    region_level: str
    splits: dict[str, torch.Tensor]
    shape: tuple[int, int, int]
    source: Callable[[], torch.Tensor]

    @classmethod
    def from_session(cls, session: SessionData, *, region_level: str = "beryl") -> SessionTensors:
        """A session whose counts are held in memory."""
        counts = _tensor(session.counts)
        return cls._labelled(session, lambda: counts, region_level)

    @classmethod
    def from_file(cls, path: str | Path, cache: CountsCache, *, region_level: str = "beryl") -> SessionTensors:
        """A binned session file whose counts are read on use, through `cache`."""
        path = Path(path)
        header = read_session_header(path)
        return cls._labelled(header, lambda: cache.get(path), region_level)

    @classmethod
    def _labelled(cls, header: SessionHeader, source: Callable[[], torch.Tensor], region_level: str) -> SessionTensors:
        if region_level not in REGION_LEVELS:
            raise ValueError(f"region_level must be one of {REGION_LEVELS}, not {region_level!r}")
        acronyms = header.units[region_level].fillna(UNKNOWN_REGION).astype(str).to_numpy()
        names, ids = np.unique(acronyms, return_inverse=True)
        split = header.split
        return cls(
            eid=header.eid,
            regions=torch.from_numpy(ids.astype(np.int64).reshape(-1)),
            region_names=tuple(names.tolist()),
            region_level=region_level,
            splits={name: torch.from_numpy(np.flatnonzero(split == name)) for name in SPLITS},
            shape=header.shape,
            source=source,
        )

    @property
    def counts(self) -> torch.Tensor:
        return self.source()

    @property
    def n_trials(self) -> int:
        return self.shape[0]

    @property
    def n_bins(self) -> int:
        return self.shape[1]

    @property
    def n_units(self) -> int:
        return self.shape[2]

    def mean_counts(self, split: str) -> torch.Tensor:
        """float32 (n_units,): each unit's mean count per bin over the trials of `split`."""
        return self.counts[self.splits[split]].float().mean(dim=(0, 1))

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


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor of `array`; Arrow hands out read-only arrays, which torch will not share."""
    return torch.from_numpy(array if array.flags.writeable else array.copy())
