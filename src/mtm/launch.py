"""Run a training entry point under torchrun, one process per GPU (see mtm.distributed).

The workflow's training jobs call the entry point directly when they hold at most one GPU, and
`torchrun_training` when they hold more:

    torchrun_training(2, "train_session", ["binned.parquet", "out/"], TrainConfig(...), threads=4)

which runs `torchrun --standalone --nproc_per_node 2 -m mtm.launch '<json>'`; every process
then calls the entry point with the same arguments.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from mtm.train import TrainConfig, finetune_session, pretrain_sessions, train_session

ENTRY_POINTS = {"train_session": train_session, "pretrain_sessions": pretrain_sessions, "finetune_session": finetune_session}


def torchrun_training(
    processes: int, entry_point: str, args: list[Any], config: TrainConfig, *, threads: int | None = None
) -> None:
    """Run ENTRY_POINTS[entry_point](*args, config, threads=threads) in `processes` processes."""
    if entry_point not in ENTRY_POINTS:
        raise ValueError(f"unknown entry point {entry_point!r}; expected one of {sorted(ENTRY_POINTS)}")
    spec = {"entry_point": entry_point, "args": args, "config": dataclasses.asdict(config), "threads": threads}
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    command = [torchrun, "--standalone", f"--nproc_per_node={processes}", "-m", "mtm.launch", json.dumps(spec, default=str)]
    subprocess.run(command, check=True)


def main() -> None:
    spec = json.loads(sys.argv[1])
    ENTRY_POINTS[spec["entry_point"]](*spec["args"], TrainConfig(**spec["config"]), threads=spec["threads"])


if __name__ == "__main__":
    main()
