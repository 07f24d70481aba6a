"""Process-level helpers for long jobs: thread count, SIGTERM, a progress bar, derived seeds."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import sys
import threading
from typing import Iterator

import torch


def derive_seed(seed: int, *keys: str | int) -> int:
    """A 63-bit seed that is a fixed function of (seed, *keys), for independent random streams."""
    digest = hashlib.sha256(json.dumps([seed, *keys]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` torch threads (None: leave torch's setting), then restore it."""
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM (what SLURM sends before a kill) into SystemExit(143) inside the block.

    Python's default action ends the process on the spot; an exception lets `finally` blocks
    remove temporary files. Nothing else is finished: the last complete checkpoint is the state
    a restart resumes from. Signal handlers can only be set from the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _SimpleBar:
    """The part of tqdm's interface that training uses, as one line rewritten on stderr."""

    def __init__(self, *, total: int, initial: int) -> None:
        self.total, self.n, self.postfix = total, initial, ""

    def update(self, n: int = 1) -> None:
        self.n += n
        sys.stderr.write(f"\r{self.n}/{self.total} {self.postfix}")

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        sys.stderr.write("\n")


class _NoBar(_SimpleBar):
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(*, total: int, initial: int = 0):
    """A progress bar on stderr when it is a terminal (tqdm if installed), else one that is silent."""
    if not sys.stderr.isatty():
        return _NoBar(total=total, initial=initial)
    try:
        from tqdm import tqdm
    except ImportError:
        return _SimpleBar(total=total, initial=initial)
    return tqdm(total=total, initial=initial, unit="batch", dynamic_ncols=True)
