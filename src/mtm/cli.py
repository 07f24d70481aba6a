"""The `mtm` command: MtM tasks outside the workflow.

    mtm finetune --checkpoint results/models/ndt1/mtm-prompt/pretrain-4 \\
                 --session my_session/binned.parquet --out my_model/

takes a pretrained model to a new session (the "universal translator" use): new stitchers and
session token, finetuning as the model was trained (its scheme, size and optimiser settings,
with --epochs and --trainable to change), then every evaluation task on the session's test
trials. Writes the model into --out and the metrics into --out/eval/, and prints bits/spike,
accuracy and R2 per task.

    mtm import-authors their_model.safetensors --n-heads 8 --out my_model/ \
                       --session EID=N_UNITS [--session ...] [--target-eids target_eids.txt]

converts an NDT1 state_dict of the MtM authors' code (mtm.authors) into our checkpoint, which
`mtm finetune` and the workflow's evaluation read like any other.

    mtm cost --configfile config/paper.yaml --gpu h100

prints what the workflow would run with that config, before it is submitted: the jobs per rule
(Snakemake's dry run, in the workflow's directory), GPU-hours and peak memory per job on a device
class of mtm/data/throughput.csv, the totals, the assumptions, and which figures were measured
(mtm.cost). The same estimates size the jobs whose config says `runtime: auto`, `mem_mb: auto`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
from pathlib import Path

import pandas as pd

from mtm.authors import AuthorsWeightsError, import_authors_ndt1, read_state_dict, save_imported
from mtm import cost
from mtm.checkpoint import read_config
from mtm.evaluate import evaluate_checkpoint
from mtm.config.checks import ConfigError
from mtm.config.evaluation import EvalConfig
from mtm.io import CorruptFileError
from mtm.runtime import keep_freed_memory
from mtm.jobs import finetune_session
from mtm.vocabulary import TRAINABLE
from mtm.config.training import TrainConfig

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
    if not args.session.is_file():
        raise SystemExit(f"--session {args.session}: no such file; give a binned session (results/sessions/<eid>/binned.parquet)")
    result = finetune_session(args.checkpoint, args.session, args.out, config, threads=args.threads)
    if result is None:
        raise SystemExit(f"{args.session}: not finetuned, see {args.out / 'config.json'}")
    evaluation = evaluate_checkpoint(
        args.out, args.session, args.out / "eval", EvalConfig(max_units=args.max_units, device=args.device or "auto"),
        setting="finetuned", threads=args.threads,
    )  # fmt: skip
    table = evaluation.metrics
    return table[table["metric"].isin(SHOWN_METRICS)].pivot_table(index="task", columns="metric", values="value")


def import_authors(args: argparse.Namespace) -> str:
    sessions = {}
    for item in args.session:
        eid, _, n_units = item.partition("=")
        if not n_units.isdigit():
            raise SystemExit(f"--session {item!r}: expected EID=N_UNITS")
        sessions[eid] = int(n_units)
    rows = None
    if args.target_eids is not None:
        listed = [line.strip() for line in args.target_eids.read_text().splitlines() if line.strip()]
        rows = {eid: i for i, eid in enumerate(listed)}
        unlisted = sorted(set(sessions) - set(rows))
        if unlisted:
            raise SystemExit(f"{args.target_eids}: does not list {unlisted}; their session rows follow that file")
    try:
        model = import_authors_ndt1(
            read_state_dict(args.weights), sessions, n_heads=args.n_heads, session_rows=rows,
            causal_context_sees_bins=args.authors_causal_context,
        )  # fmt: skip
    except AuthorsWeightsError as error:
        raise SystemExit(f"{args.weights}: {error}") from error
    save_imported(model, args.out, args.weights)
    return f"{args.weights} -> {args.out}: NDT1, {model.config.n_layers} layers of {model.config.hidden}, sessions {sessions}"


def cost_report(args: argparse.Namespace) -> str:
    if not args.configfile.is_file():
        raise SystemExit(f"mtm cost: --configfile {args.configfile}: no such file")
    if not (args.directory / "Snakefile").is_file():
        raise SystemExit(f"mtm cost: {args.directory.resolve()} has no Snakefile; run it in the workflow's directory or give --directory")
    configfile = args.configfile.resolve()
    try:
        with contextlib.chdir(args.directory):  # the workflow's paths are relative to its directory
            config = cost.merged_config(configfile)
            gpu = cost.check_device(args.gpu or config["cost"]["gpu"])
            return cost.report(configfile, gpu, target=args.target, every_job=not args.remaining, label=str(args.configfile))
    except (cost.CostError, ConfigError) as error:
        raise SystemExit(f"mtm cost: {error}") from None


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
    imports = commands.add_parser("import-authors", help="the MtM authors' NDT1 weights as our checkpoint")
    imports.add_argument("weights", type=Path, help="their state_dict: .safetensors, or .pt (loaded with weights_only)")
    imports.add_argument("--out", type=Path, required=True, help="folder for model.safetensors and config.json")
    imports.add_argument("--n-heads", type=int, required=True, help="attention heads (their configs: 8)")
    imports.add_argument("--session", action="append", required=True, metavar="EID=N_UNITS",
                         help="a session and its unit count, in model order; once per session")  # fmt: skip
    imports.add_argument("--target-eids", type=Path, help="their target eid list: a session's row of their session embedding")
    imports.add_argument("--authors-causal-context", action="store_true",
                         help="their causal attention, in which the context tokens see every bin (to reproduce their outputs)")  # fmt: skip
    costs = commands.add_parser("cost", help="jobs, GPU-hours and memory of a workflow run, before it is submitted")
    costs.add_argument("--configfile", type=Path, default=Path("config.yaml"), help="as snakemake's (default: config.yaml)")
    costs.add_argument("--gpu", help=f"the device class of the GPU jobs: {', '.join(cost.device_classes())} (default: the config's cost.gpu)")
    costs.add_argument("--target", default=cost.DEFAULT_TARGET, help="the workflow's target (default: %(default)s)")
    costs.add_argument("--remaining", action="store_true", help="only the jobs a run would start now (default: every job)")
    costs.add_argument("--directory", type=Path, default=Path("."), help="the workflow's directory, with its Snakefile")
    args = parser.parse_args(argv)
    if args.command == "cost":
        print(cost_report(args), file=sys.stdout)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "import-authors":
        print(import_authors(args), file=sys.stdout)
        return
    keep_freed_memory()
    try:
        summary = finetune(args)
    except CorruptFileError as error:  # a damaged or foreign --session or --checkpoint file
        raise SystemExit(f"mtm finetune: {error}") from None
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"), file=sys.stdout)


if __name__ == "__main__":
    main()
