"""The training jobs of the workflow, from files to files: a model of one session
(`train_session`), several models of one session in one stacked computation
(`train_session_stack`, mtm.stack), pretrained on several (`pretrain_sessions`), finetuned on a
new one (`finetune_session`). `run_training_job` runs one in this process, or under torchrun with one
process per GPU when the job holds several (data-parallel, mtm.distributed):

    run_training_job("train_session", ["binned.parquet", "out/"], TrainConfig(...), gpus=2, threads=4)

runs `torchrun --standalone --nproc_per_node 2 -m mtm.jobs '<json>'`, and every process calls
the entry point with the same arguments.

A session that cannot be trained on is skipped, not an error (mtm.resumable.write_skipped).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtm.checkpoint import load_pretrained, read_config
from mtm.data import CountsCache, SessionTensors
from mtm.models import BACKBONES
from mtm.resumable import write_skipped
from mtm.session import load_session, read_session_header
from mtm.stack import train_stack
from mtm.train import TrainResult, log_columns, train
from mtm.config.training import TrainConfig

log = logging.getLogger(__name__)


def train_session(
    binned_path: str | Path, out_dir: str | Path, config: TrainConfig, *, threads: int | None = None
) -> TrainResult | None:
    """Train on one binned session (see mtm.session); an unusable session is skipped (returns None)."""
    session = load_session(binned_path, true_rate=False)
    metadata = {"stage": "single", "binned": str(binned_path), "provenance": session.meta.get("provenance")}
    if not session.usable:
        _skip(out_dir, _unusable(session.meta), config, session.eid, metadata)
        return None
    data = SessionTensors.from_session(session, region_level=config.region_level)
    return train(data, config, out_dir, threads=threads, metadata=metadata)


def train_session_stack(
    binned_path: str | Path, out_dirs: Sequence[str | Path], configs: Sequence[TrainConfig], *, threads: int | None = None
) -> list[TrainResult] | None:
    """Train one model per config on one binned session, those that stack together (mtm.stack),
    config i's into out_dirs[i]; an unusable session skips them all (returns None). One process."""
    if len({config.region_level for config in configs}) != 1:
        raise ValueError(f"{binned_path}: the models of a stack need one region level, got {[c.region_level for c in configs]}")
    session = load_session(binned_path, true_rate=False)
    metadata = {"stage": "single", "binned": str(binned_path), "provenance": session.meta.get("provenance")}
    if not session.usable:
        for config, out_dir in zip(configs, out_dirs):
            _skip(out_dir, _unusable(session.meta), config, session.eid, metadata)
        return None
    data = SessionTensors.from_session(session, region_level=configs[0].region_level)
    return train_stack(data, configs, out_dirs, threads=threads, metadata=metadata)


def pretrain_sessions(
    binned_paths: Sequence[str | Path],
    out_dir: str | Path,
    config: TrainConfig,
    *,
    threads: int | None = None,
    cached_sessions: int = 32,
) -> TrainResult | None:
    """Train one model on several binned sessions (unusable ones are left out and named in
    config.json). With no usable session the model is skipped, as in `train_session`.

    Sessions are read lazily: only the counts of the `cached_sessions` most recently used ones
    are held in memory (see mtm.data).
    """
    usable, left_out = [], {}
    cache = CountsCache(cached_sessions)
    for path in binned_paths:
        header = read_session_header(path)
        if header.usable:
            usable.append(SessionTensors.from_file(path, cache, region_level=config.region_level))
        else:
            left_out[header.eid] = _unusable(header.meta)
    metadata = {"stage": "pretrain", "binned": [str(p) for p in binned_paths], "left_out": left_out}
    if not usable:
        _skip(out_dir, "no usable session", config, None, metadata)
        return None
    for eid, reason in left_out.items():
        log.info("%s: left out of pretraining, %s", eid, reason)
    return train(usable, config, out_dir, threads=threads, metadata=metadata)


def finetune_session(
    checkpoint: str | Path,
    binned_path: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    *,
    threads: int | None = None,
) -> TrainResult | None:
    """Take the model saved in `checkpoint` to a new binned session: new stitchers and session
    token, then training as `config` says (`trainable`: all weights or the new layers only). The
    finetuned model keeps the shared weights and the new session's layers only."""
    session = load_session(binned_path, true_rate=False)
    metadata = {
        "stage": "finetune", "binned": str(binned_path), "pretrained": str(checkpoint),
        "provenance": session.meta.get("provenance"),
    }  # fmt: skip
    if not session.usable:
        _skip(out_dir, _unusable(session.meta), config, session.eid, metadata)
        return None
    pretrained = read_config(checkpoint)
    if "skipped" in pretrained:
        _skip(out_dir, f"the pretrained model was skipped ({pretrained['skipped']})", config, session.eid, metadata)
        return None
    model = load_pretrained(checkpoint)
    if not isinstance(model, BACKBONES[config.backbone][0]):
        raise ValueError(f"{checkpoint}: the model is a {type(model).__name__}, not the configured {config.backbone}")
    if model.config.use_prompt != config.use_prompt:
        raise ValueError(f"{checkpoint}: the model's prompt tokens ({model.config.use_prompt}) do not match scheme {config.scheme}")
    data = SessionTensors.from_session(session, region_level=config.region_level)
    return train(data, config, out_dir, init=model, threads=threads, metadata=metadata)


ENTRY_POINTS = {"train_session": train_session, "pretrain_sessions": pretrain_sessions, "finetune_session": finetune_session}


def run_training_job(entry_point: str, args: list[Any], config: TrainConfig, *, gpus: int, threads: int | None) -> None:
    """ENTRY_POINTS[entry_point](*args, config, threads=threads): in this process with at most
    one GPU, else under torchrun with one process per GPU."""
    if entry_point not in ENTRY_POINTS:
        raise ValueError(f"unknown entry point {entry_point!r}; expected one of {sorted(ENTRY_POINTS)}")
    if gpus <= 1:
        ENTRY_POINTS[entry_point](*args, config, threads=threads)
        return
    spec = {"entry_point": entry_point, "args": args, "config": dataclasses.asdict(config), "threads": threads}
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    command = [torchrun, "--standalone", f"--nproc_per_node={gpus}", "-m", "mtm.jobs", json.dumps(spec, default=str)]
    subprocess.run(command, check=True)


def _unusable(meta: dict) -> str:
    return meta["session"].get("reason") or "unusable session"


def _skip(out_dir: str | Path, reason: str, config: TrainConfig, eid: str | None, metadata: dict[str, Any]) -> None:
    metadata = {"eid": eid, "training": dataclasses.asdict(config), **metadata}
    write_skipped(out_dir, reason, metadata, log_columns(config.schemes))


def main() -> None:
    """One process of a torchrun job (`run_training_job`)."""
    spec = json.loads(sys.argv[1])
    ENTRY_POINTS[spec["entry_point"]](*spec["args"], TrainConfig(**spec["config"]), threads=spec["threads"])


if __name__ == "__main__":
    main()
