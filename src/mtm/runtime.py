"""Process-level helpers for long jobs: thread count, SIGTERM, a progress bar."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator

import torch
from tqdm import tqdm


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


def progress_bar(*, total: int, initial: int = 0) -> tqdm:
    """A progress bar on stderr, shown only when stderr is a terminal (not in job logs)."""
    return tqdm(total=total, initial=initial, unit="batch", dynamic_ncols=True, disable=not sys.stderr.isatty())
