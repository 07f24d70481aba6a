"""What each difference from the authors' code changes on the demo: bits/spike, accuracy and R2
per task with the switch at the demo's setting and at the authors'.

Evaluation switches (forward_attention, decoding_attention, decoders) rescore the demo's trained
models (single-session and finetuned) with only the switch flipped, on the tasks it touches.
Training switches (loss, selection, single_session_token, region_level) retrain the demo's
single-session models (every scheme of config.yaml on its held-out sessions, seed 0) with the
switch flipped, next to a retrained reference with the demo's settings, and evaluate each on
every task. A switch's effect is the paired difference (authors' minus demo's) per model and
session; the table gives its mean and the per-session values.

    make run                                          # the demo's models first
    python bench/bench_protocol.py --results results --out /tmp/protocol --jobs 2

About 30 minutes on 2 idle cores (20 models of 1-2 minutes each, then 68 evaluations). Writes
`metrics.csv` (every score of every variant) and `effects.md` (the README's table) into --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from mtm.evaluate import evaluate_checkpoint  # noqa: E402
from mtm.config.evaluation import EvalConfig  # noqa: E402
from mtm.jobs import train_session  # noqa: E402
from mtm.config.training import TrainConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# switch -> (the demo's value, the authors')
TRAINING_SWITCHES = {
    "loss": ("mean", "sum"),
    "selection": ("val-loss", "psth-r2"),
    "single_session_token": (True, False),
    "region_level": ("beryl", "allen"),
}
EVALUATION_SWITCHES = {
    "forward_attention": ("causal", "as-trained"),
    "decoding_attention": ("bidirectional", "as-prompted"),
    "decoders": ("ours", "authors"),
}
SHOWN = {"bps": "bits/spike", "accuracy": "accuracy", "r2": "R2"}


def demo_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def eval_config(config: dict, **overrides) -> EvalConfig:
    fields = {f.name for f in dataclasses.fields(EvalConfig)}
    return EvalConfig(**{k: v for k, v in {**config["evaluation"], **overrides}.items() if k in fields}, device="cpu")


def train_config(config: dict, scheme: str, **overrides) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    training = {k: v for k, v in config["training"].items() if k in fields}
    return TrainConfig(scheme=scheme, backbone="ndt1", seed=0, device="cpu", **{**training, **overrides})


def run_training(job: tuple) -> pd.DataFrame:
    """Train one variant's model and evaluate it on every task; its metrics table."""
    switch, value, scheme, binned, out, config = job
    training = train_config(config, scheme, **({} if switch is None else {switch: value}))
    if not (out / "model.safetensors").exists():
        train_session(binned, out, training, threads=1)
    table = evaluate_checkpoint(out, binned, out / "eval", eval_config(config), setting="single", threads=1).metrics
    return table.assign(switch=switch or "reference", switch_value=str(value))


def run_evaluation(job: tuple) -> pd.DataFrame:
    """Score one demo model with one evaluation switch at `value`, on the tasks it touches."""
    switch, value, model_dir, binned, out, config, setting = job
    touched = {"tasks": ["forward-prediction"], "decoding": []} if switch == "forward_attention" else {"tasks": []}
    evaluation = eval_config(config, **{switch: value}, **touched)
    table = evaluate_checkpoint(model_dir, binned, out, evaluation, setting=setting, threads=1).metrics
    return table.assign(switch=switch, switch_value=str(value))


def jobs(results: Path, out: Path, config: dict) -> tuple[list, list]:
    binned = {p.parent.name: p for p in (results / "sessions").glob("*/binned.parquet")}
    models = sorted((results / "models" / "ndt1").glob("*/*/*/seed-0/config.json"))
    models = [m.parent for m in models if m.parent.parent.name in binned]  # skips the pretrained pools
    if not models:
        raise SystemExit(f"{results}: no demo models; run `make run` first")
    training = []
    single = [m for m in models if m.parts[-3] == "single"]
    for switch, values in [(None, ("demo",)), *((s, (v[1],)) for s, v in TRAINING_SWITCHES.items())]:
        for value in values:
            for model in single:
                scheme, eid = model.parts[-4], model.parts[-2]
                folder = out / "train" / (switch or "reference") / scheme / eid
                training.append((switch, value, scheme, binned[eid], folder, config))
    evaluation = []
    for switch, values in EVALUATION_SWITCHES.items():
        for value in values:
            for model in models:
                scheme, setting, eid = model.parts[-4], model.parts[-3], model.parts[-2]
                folder = out / "eval" / switch / str(value) / scheme / setting / eid
                evaluation.append((switch, value, model, binned[eid], folder, config, setting))
    return training, evaluation


def effects(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (switch, model, task): the demo's and the authors' mean, their paired
    difference's mean and per-session values."""
    table = table[table["metric"].isin(SHOWN)]
    rows = []
    for switch, (demo, authors) in {**TRAINING_SWITCHES, **EVALUATION_SWITCHES}.items():
        if switch in TRAINING_SWITCHES:
            base = table[table["switch"] == "reference"]
        else:
            base = table[(table["switch"] == switch) & (table["switch_value"] == str(demo))]
        flipped = table[(table["switch"] == switch) & (table["switch_value"] == str(authors))]
        keys = ["model", "eid", "task", "metric"]
        paired = base.merge(flipped, on=keys, suffixes=("_demo", "_authors"))
        for (model, task, metric), group in paired.groupby(["model", "task", "metric"], sort=True):
            difference = group["value_authors"] - group["value_demo"]
            rows.append({
                "switch": f"{switch}: {demo} -> {authors}", "model": model, "task": task, "metric": SHOWN[metric],
                "demo": group["value_demo"].mean(), "authors": group["value_authors"].mean(),
                "difference": difference.mean(),
                "per_session": " ".join(f"{d:+.3f}" for d in difference),
            })  # fmt: skip
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    def cell(value) -> str:
        return f"{value:+.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO / "results", help="a finished demo run's results/")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    config = demo_config()
    training, evaluation = jobs(args.results, args.out, config)
    with ProcessPoolExecutor(args.jobs) as pool:
        tables = list(pool.map(run_evaluation, evaluation)) + list(pool.map(run_training, training))
    table = pd.concat(tables, ignore_index=True)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "metrics.csv", index=False)
    summary = effects(table)
    text = markdown(summary)
    (args.out / "effects.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
