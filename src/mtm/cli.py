"""The `mtm` command: MtM tasks outside the workflow.

    mtm finetune --checkpoint results/models/ndt1/mtm-prompt/pretrain-4 \\
                 --session my_session/binned.parquet --out my_model/

takes a pretrained model to a new session (the "universal translator" use): new stitchers and
session token, finetuning as the model was trained (its scheme, size and optimiser settings,
with --epochs and --trainable to change), then every evaluation task on the session's test
trials. Writes the model into --out and the metrics into --out/eval/, and prints bits/spike,
accuracy and R2 per task.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import pandas as pd

from mtm.checkpoint import read_config
from mtm.evaluate import EvalConfig, evaluate_checkpoint
from mtm.runtime import keep_freed_memory
from mtm.train import TRAINABLE, TrainConfig, finetune_session

SHOWN_METRICS = ("bps", "oracle_bps", "accuracy", "chance_accuracy", "r2", "chance_r2")


def finetune_config(checkpoint: Path, **overrides) -> TrainConfig:
    """The TrainConfig the checkpoint's model was trained with, with `overrides` (None: keep)."""
    if not (checkpoint / "config.json").is_file():
        raise SystemExit(f"{checkpoint}: no config.json there; --checkpoint must be a model folder")
    saved = read_config(checkpoint)
    if "skipped" in saved:
        raise SystemExit(f"{checkpoint} holds no model: {saved['skipped']}")
    training = saved["metadata"]["training"]
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in training.items() if k in known})
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def finetune(args: argparse.Namespace) -> pd.DataFrame:
    config = finetune_config(args.checkpoint, epochs=args.epochs, trainable=args.trainable, device=args.device)
    result = finetune_session(args.checkpoint, args.session, args.out, config, threads=args.threads)
    if result is None:
        raise SystemExit(f"{args.session}: not finetuned, see {args.out / 'config.json'}")
    evaluation = evaluate_checkpoint(
        args.out, args.session, args.out / "eval", EvalConfig(max_units=args.max_units, device=args.device or "auto"),
        setting="finetuned", threads=args.threads,
    )  # fmt: skip
    table = evaluation.metrics
    return table[table["metric"].isin(SHOWN_METRICS)].pivot_table(index="task", columns="metric", values="value")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mtm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    tune = commands.add_parser("finetune", help="take a pretrained model to a new session, then evaluate it")
    tune.add_argument("--checkpoint", type=Path, required=True, help="folder with model.safetensors and config.json")
    tune.add_argument("--session", type=Path, required=True, help="a binned session (binned.parquet)")
    tune.add_argument("--out", type=Path, required=True, help="folder for the finetuned model and its metrics")
    tune.add_argument("--epochs", type=int, help="finetuning epochs (default: as the model was trained)")
    tune.add_argument("--trainable", choices=TRAINABLE, help="all weights, or only the new session's layers")
    tune.add_argument("--max-units", type=int, help="evaluate a seeded subset of units (default: all)")
    tune.add_argument("--threads", type=int, help="torch CPU threads")
    tune.add_argument("--device", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keep_freed_memory()
    summary = finetune(args)
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"), file=sys.stdout)


if __name__ == "__main__":
    main()
