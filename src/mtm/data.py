"""A binned session as torch tensors for training: counts, region ids per unit, split indices.

A session read with `SessionTensors.from_file` keeps only its labels in memory; its counts are
read from the file when a batch needs them, through a `CountsCache` shared by the sessions of a
run, which holds the most recently used sessions' counts (uint8, as stored). Pretraining on
hundreds of sessions thus holds a bounded amount of data whatever the number of sessions.

When a run cycles through more sessions than the cache holds, each new session is a file read
(about 0.1 s for 800 trials x 100 bins x 700 units). `SessionTensors.prefetch` (or
`CountsCache.prefetch`) starts that read in a background thread, so that it overlaps the
compute of the batches before it: Arrow releases the GIL while it decompresses.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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
    """The counts of the `max_sessions` most recently used session files, as tensors, and at
    most one more: the session being read ahead (`prefetch`).

    Reading ahead changes when a file is read, never what a `get` returns (the counts as stored),
    nor, when each session read ahead is the next one got, which sessions the cache holds
    afterwards. Use it from one thread (the training loop); the reads ahead run in one worker
    thread of its own.
    """

    def __init__(self, max_sessions: int = 32) -> None:
        if max_sessions < 1:
            raise ValueError("a counts cache holds at least one session")
        self.max_sessions = max_sessions
        self._counts: OrderedDict[Path, torch.Tensor] = OrderedDict()
        self._ahead: tuple[Path, Future[torch.Tensor]] | None = None  # the read ahead, if any
        self._worker: ThreadPoolExecutor | None = None  # started by the first prefetch
        self.reads = 0  # file reads so far, ahead or not (for tests and benchmarks)

    def get(self, path: Path) -> torch.Tensor:
        """(n_trials, n_bins, n_units) counts of the session file `path`, read if not held."""
        path = Path(path)
        if self._ahead is not None and self._ahead[0] == path:
            self._take_ahead()  # what its read raised (a CorruptFileError, ...) is raised here
        if path in self._counts:
            self._counts.move_to_end(path)
            return self._counts[path]
        self._evict(keep=self.max_sessions - 1)  # before the read: a session read ahead may also be held
        counts = _read_counts(path)
        self.reads += 1
        self._keep(path, counts)
        return counts

    def prefetch(self, path: Path) -> None:
        """Start reading the session file `path` in the background, unless the cache holds it or
        already reads it. A session read ahead before, and not yet got, is first taken into the
        cache (waiting for its read), as its `get` would: so a loop may hint the next session
        before or after it gets the current one, and the cache holds at most `max_sessions` + 1
        sessions' counts (the cache, and the one read ahead)."""
        path = Path(path)
        if path in self._counts or (self._ahead is not None and self._ahead[0] == path):
            return
        if self._ahead is not None:
            with contextlib.suppress(Exception):  # a failed read is read again, and raises, at its get
                self._take_ahead()
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="counts-prefetch")
        self._ahead = (path, self._worker.submit(_read_counts, path))
        self.reads += 1

    def close(self) -> None:
        """Drop the session read ahead and stop the worker thread (waiting for a running read)."""
        self._ahead = None
        if self._worker is not None:
            self._worker.shutdown(wait=True, cancel_futures=True)
            self._worker = None

    @property
    def held(self) -> int:
        """Sessions whose counts are held: in the cache, and read ahead (finished or not)."""
        return len(self._counts) + (self._ahead is not None)

    def _take_ahead(self) -> None:
        """Move the session read ahead into the cache, once read."""
        (path, future), self._ahead = self._ahead, None
        self._keep(path, future.result())

    def _keep(self, path: Path, counts: torch.Tensor) -> None:
        self._counts[path] = counts
        self._evict(keep=self.max_sessions)

    def _evict(self, keep: int) -> None:
        while len(self._counts) > keep:
            self._counts.popitem(last=False)


def _read_counts(path: Path) -> torch.Tensor:
    return _tensor(read_counts(path))


def _nothing_to_read() -> None:
    """The prefetch of a session whose counts are in memory."""


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
    prefetcher: Callable[[], None] = _nothing_to_read  # starts reading `counts` ahead (`prefetch`)

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
        return cls._labelled(header, lambda: cache.get(path), region_level, prefetcher=lambda: cache.prefetch(path))

    @classmethod
    def _labelled(
        cls, header: SessionHeader, source: Callable[[], torch.Tensor], region_level: str,
        prefetcher: Callable[[], None] = _nothing_to_read,
    ) -> SessionTensors:  # fmt: skip
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
            prefetcher=prefetcher,
        )

    @property
    def counts(self) -> torch.Tensor:
        return self.source()

    def prefetch(self) -> None:
        """Start reading this session's counts in the background, if they are read from a file
        and not cached, so that a later `counts` finds them read: call it a batch or more
        before the batch of this session. A session in memory has nothing to read."""
        self.prefetcher()

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
