"""The counts cache of sessions read lazily: reading ahead (`prefetch`) in a background thread
changes when a file is read, never what a read returns, and holds at most one session more."""

import threading

import numpy as np
import pytest
import torch

import mtm.data as data_module
from mtm.data import CountsCache, SessionTensors
from mtm.io import CorruptFileError
from mtm.session import load_session, write_session
from test_session import fake


@pytest.fixture
def paths(tmp_path):
    """Five small session files with different counts."""
    out = []
    for i in range(5):
        trials, units, counts, behaviour, meta = fake(n_trials=6, n_bins=4, n_units=3 + i, seed=i)
        out.append(tmp_path / f"s{i}.parquet")
        write_session(out[-1], trials=trials, counts=counts, behaviour=behaviour, units=units, meta=meta)
    return out


def run_sequence(cache, sequence, *, ahead=None):
    """Get each path of `sequence` in turn; with `ahead` ("before" or "after" the get), hint
    the next one. The counts got, and the sessions held after each step."""
    got, held = [], []
    for i, path in enumerate(sequence):
        if ahead == "before" and i + 1 < len(sequence):
            cache.prefetch(sequence[i + 1])
        got.append(cache.get(path))
        if ahead == "after" and i + 1 < len(sequence):
            cache.prefetch(sequence[i + 1])
        held.append(cache.held)
    cache.close()
    return got, held


@pytest.mark.parametrize("ahead", ["before", "after"])
def test_prefetch_returns_the_same_counts_and_holds_one_session_more(paths, ahead):
    sequence = [paths[i] for i in (0, 1, 2, 0, 3, 3, 4, 1, 0, 2)]
    plain, prefetching = CountsCache(max_sessions=2), CountsCache(max_sessions=2)
    got_plain, held_plain = run_sequence(plain, sequence)
    got_ahead, held_ahead = run_sequence(prefetching, sequence, ahead=ahead)
    assert all(torch.equal(a, b) and a.dtype == b.dtype == torch.uint8 for a, b in zip(got_plain, got_ahead))
    assert all(torch.equal(a, torch.from_numpy(load_session(p).counts)) for a, p in zip(got_ahead, sequence))
    assert list(plain._counts) == list(prefetching._counts)  # the same sessions cached, in the same order
    assert plain.reads == prefetching.reads == 9  # every read ahead was used
    assert max(held_plain) == 2 and max(held_ahead) == 3  # the cache, and one session read ahead


def test_prefetch_of_a_held_or_pending_session_reads_nothing(paths):
    cache = CountsCache(max_sessions=2)
    cache.get(paths[0])
    cache.prefetch(paths[0])  # cached
    assert cache.reads == 1 and cache.held == 1
    cache.prefetch(paths[1])
    cache.prefetch(paths[1])  # already being read
    assert cache.reads == 2 and cache.held == 2
    cache.get(paths[1])
    assert cache.reads == 2 and cache.held == 2  # taken from the read ahead
    cache.close()


def test_a_newer_prefetch_takes_the_older_one_into_the_cache(paths, monkeypatch):
    """One read ahead at a time: a newer hint waits for the older read, which enters the cache
    as its get would, so that at most one session is held beside the cache."""
    running, release = threading.Event(), threading.Event()
    started = []
    read = data_module._read_counts

    def slow_read(path):
        started.append(path)
        running.set()
        release.wait(timeout=10)
        return read(path)

    monkeypatch.setattr(data_module, "_read_counts", slow_read)
    cache = CountsCache(max_sessions=1)
    cache.prefetch(paths[0])
    assert running.wait(timeout=10) and cache.held == 1  # the worker is busy with paths[0]
    threading.Timer(0.2, release.set).start()
    cache.prefetch(paths[1])  # waits for paths[0]
    assert list(cache._counts) == [paths[0]] and cache.held == 2 and cache.reads == 2
    counts = cache.get(paths[1])
    cache.close()
    assert started == [paths[0], paths[1]] and list(cache._counts) == [paths[1]] and cache.reads == 2
    assert torch.equal(counts, torch.from_numpy(load_session(paths[1]).counts))


def test_a_read_ahead_raises_where_the_counts_are_got(paths, tmp_path):
    damaged = tmp_path / "damaged.parquet"
    data = paths[0].read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    cache = CountsCache(max_sessions=2)
    cache.prefetch(damaged)
    with pytest.raises(CorruptFileError, match="damaged.parquet"):
        cache.get(damaged)
    cache.prefetch(tmp_path / "missing.parquet")
    with pytest.raises(FileNotFoundError):
        cache.get(tmp_path / "missing.parquet")
    cache.prefetch(damaged)
    cache.prefetch(paths[2])  # the failed read ahead is set aside, not raised here
    with pytest.raises(CorruptFileError, match="damaged.parquet"):
        cache.get(damaged)  # read again
    assert torch.equal(cache.get(paths[1]), torch.from_numpy(load_session(paths[1]).counts))
    cache.close()


def test_sessions_prefetch_through_their_cache(paths):
    cache = CountsCache(max_sessions=1)
    lazy = SessionTensors.from_file(paths[3], cache)
    eager = SessionTensors.from_session(load_session(paths[3]))
    eager.prefetch()  # in memory: nothing to read
    lazy.prefetch()
    assert cache.reads == 1 and cache.held == 1
    assert torch.equal(lazy.counts, eager.counts) and cache.reads == 1
    cache.close()
    assert isinstance(lazy.counts, torch.Tensor) and lazy.counts.numpy().flags.writeable
    assert np.array_equal(lazy.counts.numpy(), load_session(paths[3]).counts)
