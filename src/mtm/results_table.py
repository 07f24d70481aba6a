"""The results tables: their columns, how a model is named in them, and how one model's tables
are written and every model's joined and summarised. No torch: figures and reports read these.

A model's evaluation is three tables (`Evaluation`), written by `write_evaluation`:
    metrics   one row per (task, prompt, metric), METRIC_COLUMNS: mtm.evaluate (the trained
              models), mtm.glm (the GLM baseline) and mtm.supervised (the heads, metrics only)
    units     one row per (task, scored unit), UNIT_COLUMNS: per-unit values and PSTHs
    prompts   the prompt ablation, METRIC_COLUMNS (empty unless asked for)
`write_metrics_table` joins every model's metrics into results/eval/metrics.parquet and
summarises them over sessions (`summarise_metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from mtm.io import write_parquet, write_text

METRIC_COLUMNS = (
    "model", "backbone", "scheme", "setting", "seed", "eid", "task", "prompt", "metric", "value", "n_units", "n_trials",
)  # fmt: skip
UNIT_COLUMNS = (
    "model", "seed", "eid", "task", "unit", "uuid", "region", "bps", "oracle_bps", "poisson_d2", "psth_r2", "single_trial_r2",
    "psth_observed", "psth_predicted",
)  # fmt: skip
NO_PROMPT = "none"  # the prompt column of a model without prompt tokens


@dataclass(frozen=True, kw_only=True)
class ModelLabels:
    """How the tables name a model: e.g. backbone "ndt1", scheme "mtm-prompt", setting "single"
    (model "ndt1/mtm-prompt/single"), and its training seed (replicates share the model name)."""

    backbone: str
    scheme: str
    setting: str
    seed: int = 0

    @property
    def model(self) -> str:
        return f"{self.backbone}/{self.scheme}/{self.setting}"

    @classmethod
    def of_checkpoint(cls, metadata: dict, setting: str) -> ModelLabels:
        """The labels of a saved model, from its config.json metadata."""
        training = metadata["training"]
        return cls(
            backbone=training.get("backbone", "ndt1"), scheme=training["scheme"], setting=setting,
            seed=int(training.get("seed", 0)),
        )  # fmt: skip

    def metric_row(
        self, eid: str, task: str, prompt: str | None, metric: str, value: float, n_units: int, n_trials: int
    ) -> tuple:
        """One row of a metrics table (METRIC_COLUMNS); prompt None: the model has no prompts."""
        return (self.model, self.backbone, self.scheme, self.setting, self.seed, eid, task, prompt or NO_PROMPT,
                metric, float(value), n_units, n_trials)  # fmt: skip


def empty_table(columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=object) for name in columns})


def metrics_frame(rows: list[tuple]) -> pd.DataFrame:
    """A metrics table (METRIC_COLUMNS) of `rows` from ModelLabels.metric_row."""
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS)) if rows else empty_table(METRIC_COLUMNS)


@dataclass(frozen=True)
class Evaluation:
    metrics: pd.DataFrame  # METRIC_COLUMNS
    units: pd.DataFrame  # UNIT_COLUMNS
    prompts: pd.DataFrame  # METRIC_COLUMNS, every task under every prompt (empty unless asked for)

    @classmethod
    def empty(cls) -> Evaluation:
        """The tables of a model that was not trained (an unusable session): a join still sees it."""
        return cls(empty_table(METRIC_COLUMNS), empty_table(UNIT_COLUMNS), empty_table(METRIC_COLUMNS))


def write_evaluation(out_dir: Path, evaluation: Evaluation, info: dict, *, prompts: bool = True) -> None:
    """metrics.parquet, metrics.csv, units.parquet and (with `prompts`) prompts.parquet in
    `out_dir`, each written atomically; `info` goes into the Parquet files' metadata."""
    write_parquet(out_dir / "metrics.parquet", pa.Table.from_pandas(evaluation.metrics, preserve_index=False), info)
    write_text(out_dir / "metrics.csv", evaluation.metrics.to_csv(index=False))
    write_parquet(out_dir / "units.parquet", pa.Table.from_pandas(evaluation.units, preserve_index=False), info)
    if prompts:
        write_parquet(out_dir / "prompts.parquet", pa.Table.from_pandas(evaluation.prompts, preserve_index=False), info)


def join_metrics(paths: list[str | Path]) -> pd.DataFrame:
    """All metric tables in one, sorted by model, eid, task and metric."""
    tables = [pd.read_parquet(path) for path in paths]
    tables = [t for t in tables if len(t)] or [empty_table(METRIC_COLUMNS)]
    return pd.concat(tables, ignore_index=True).sort_values(["model", "eid", "task", "metric"], ignore_index=True)


def summarise_metrics(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard error and number of sessions of each (model, task, prompt, metric), over
    sessions: a session's value is the mean over its seeds (n_seeds: the most any session has)."""
    keys = ["model", "backbone", "scheme", "setting", "task", "prompt", "metric"]
    per_session = table.groupby([*keys, "eid"], sort=True)["value"].agg(value="mean", n_seeds="count")
    grouped = per_session.groupby(keys, sort=True)
    summary = grouped["value"].agg(mean="mean", sem="sem", n_sessions="count")
    return summary.join(grouped["n_seeds"].max()).reset_index()


def write_metrics_table(
    paths: list[str | Path],
    parquet: str | Path,
    csv: str | Path,
    summary: str | Path,
    prompts: str | Path,
    *,
    heads: list[str | Path] = (),
    glm: list[str | Path] = (),
) -> None:
    """Join the per-model tables (metrics.parquet files of evaluations, of supervised heads,
    mtm.supervised, and of the GLM, mtm.glm) into `parquet` and `csv`, their per-model means
    into `summary`, and the prompt ablations beside the evaluations' tables (prompts.parquet)
    into `prompts`."""
    table = join_metrics([*paths, *heads, *glm])
    write_parquet(parquet, pa.Table.from_pandas(table, preserve_index=False))
    write_text(csv, table.to_csv(index=False))
    write_text(summary, summarise_metrics(table).to_csv(index=False))
    ablation = join_metrics([Path(path).with_name("prompts.parquet") for path in paths])
    write_parquet(prompts, pa.Table.from_pandas(ablation, preserve_index=False))
