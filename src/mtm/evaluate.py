"""Evaluate a trained model on one session's test trials: every MtM task, as one tidy table.

`evaluate_model` returns a results_table.Evaluation. `metrics`, one row per (task, metric),
columns results_table.METRIC_COLUMNS:

    activity tasks (mtm.vocabulary.TASKS), each under the prompt of its scheme:
      bps                per-unit bits/spike, the mean over units (MtM's convention)
      bps_pooled         bits/spike pooled over units (the Neural Latents Benchmark's)
      poisson_d2         per-unit Poisson deviance explained, the mean (BrainWideBench's)
      psth_r2            per-unit R2 of PSTHs over choice x block x reward conditions,
                         clipped to [0, 1], the mean (MtM's)
      single_trial_r2    per-unit R2 over single trials and bins, clipped, the mean (MtM's)
      oracle_bps, oracle_bps_pooled
                         the bits/spike of the true rates (demo data only): the ceiling
    behaviour decoding (mtm.decoding) from the predicted log rates of the unmasked input:
      accuracy / r2, and chance_accuracy / chance_r2 on the same test trials

Every null model is the per-unit mean rate of the scored cells of the test trials themselves.
`units`, one row per (task, scored unit), keeps the per-unit values for figures, with the unit's
observed and predicted trial-averaged rates (Hz) over the scored bins. With `prompt_ablation`, a
prompted model is also scored on every task and target under every prompt token (`prompts`, the
same columns as `metrics`; the paper's prompt ablation).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mtm import heldout, metrics
from mtm.checkpoint import load_pretrained, read_config
from mtm.config.evaluation import EvalConfig
from mtm.data import REGION_LEVELS, UNKNOWN_REGION
from mtm.decoding import decode_behaviour, input_bins
from mtm.device import autocast, resolve_device
from mtm.runtime import num_threads
from mtm.seeds import derive_seed
from mtm.results_table import (
    UNIT_COLUMNS,
    Evaluation,
    ModelLabels,
    empty_table,
    metrics_frame,
    write_evaluation,
)
from mtm.session import SessionData, load_model_session
from mtm.vocabulary import MTM_SCHEMES, TASK_PROMPTS, prompt_index

log = logging.getLogger(__name__)



def model_predictor(
    model: torch.nn.Module, *, session: str, prompt: str | None, precision: str = "fp32"
) -> heldout.Predictor:
    """The model on `session`'s units as a heldout.Predictor; prompt: an MtM scheme, or None for
    a model without prompts."""
    device = next(model.parameters()).device
    token = None if prompt is None else prompt_index(prompt)

    def predict(inputs: torch.Tensor, causal: bool) -> torch.Tensor:
        with torch.inference_mode(), autocast(precision, device):
            out = model(inputs.to(device), session=session, prompt=token, causal=causal)
        return out.log_rates.float().cpu()

    return predict


def evaluation_units(n_units: int, eid: str, config: EvalConfig) -> np.ndarray:
    """The units scored in a session: all, or a subset drawn from (seed, eid) alone."""
    if config.max_units is None or config.max_units >= n_units:
        return np.arange(n_units)
    rng = np.random.default_rng(derive_seed(config.seed, "eval-units", eid))
    return np.sort(rng.choice(n_units, config.max_units, replace=False))


def evaluate_model(
    model: torch.nn.Module,
    session: SessionData,
    config: EvalConfig,
    *,
    labels: ModelLabels,
    region_level: str = "beryl",
) -> Evaluation:
    """Score `model` on the test trials of `session` (see the module docstring)."""
    if region_level not in REGION_LEVELS:
        raise ValueError(f"region_level must be one of {REGION_LEVELS}, not {region_level!r}")
    model.eval()
    uses_prompt = getattr(model.config, "use_prompt", False)
    test = np.flatnonzero(session.split == "test")
    if len(test) == 0:
        raise ValueError(f"{session.eid}: the session has no test trials")
    counts = session.counts[test]
    regions = session.units[region_level].fillna(UNKNOWN_REGION).astype(str).to_numpy()
    units = evaluation_units(counts.shape[2], session.eid, config)
    true_rates = None if session.true_rate is None else session.true_rate[test] * session.bin_size
    conditions = psth_conditions(session.trials.iloc[test])
    causal_forward = heldout.forward_causal(labels.scheme, prompted=uses_prompt, attention=config.forward_attention)

    rows, unit_rows, prompt_rows = [], [], []

    def row(table: list, task: str, prompt: str | None, metric: str, value: float, n_units: int, n_trials: int) -> None:
        table.append(labels.metric_row(session.eid, task, prompt, metric, value, n_units, n_trials))

    def score_task(task: str, prompt: str | None) -> tuple[dict[str, float], dict[str, np.ndarray], heldout.TaskPrediction]:
        predict = model_predictor(model, session=session.eid, prompt=prompt, precision=config.precision)
        prediction = heldout.predict_task(
            predict, task, counts, regions, units=units, batch_size=config.batch_size,
            forward_bins=config.forward_bins, causal_forward=causal_forward,
        )  # fmt: skip
        scored = np.ix_(np.arange(len(test)), prediction.bins, prediction.units)
        oracle = None if true_rates is None else true_rates[scored]
        rates, observed = np.exp(prediction.log_rates), counts[scored]
        summary, per_unit = score_rates(rates, observed, conditions, oracle)
        per_unit["psth_observed"] = observed.mean(axis=0).T / session.bin_size  # (units, bins), Hz
        per_unit["psth_predicted"] = rates.mean(axis=0).T / session.bin_size
        return summary, per_unit, prediction

    ablate = config.prompt_ablation and uses_prompt
    for task in config.tasks:
        started = time.perf_counter()
        prompt = TASK_PROMPTS[task] if uses_prompt else None
        summary, per_unit, prediction = score_task(task, prompt)
        for metric, value in summary.items():
            row(rows, task, prompt, metric, value, len(prediction.units), len(test))
        unit_rows.append(
            pd.DataFrame(
                {
                    "model": labels.model,
                    "seed": labels.seed,
                    "eid": session.eid,
                    "task": task,
                    "unit": prediction.units,
                    "uuid": session.units["uuid"].to_numpy()[prediction.units].astype(str),
                    "region": regions[prediction.units],
                    **{name: list(values) for name, values in per_unit.items()},  # PSTHs: one array a unit
                }
            )
        )
        for other in MTM_SCHEMES if ablate else ():
            other_summary = summary if other == prompt else score_task(task, other)[0]
            for metric, value in other_summary.items():
                row(prompt_rows, task, other, metric, value, len(prediction.units), len(test))
        seconds = time.perf_counter() - started
        log.info("%s %s %s: %.4f bits/spike (%.1f s)", session.eid, labels.model, task, summary["bps"], seconds)

    n_units = session.counts.shape[2]
    default_prompts = {t: config.decoding_prompts[t] if uses_prompt else None for t in config.decoding}
    decoded = _decode(model, session, config, default_prompts)
    for target, result in decoded.items():
        row(rows, target, default_prompts[target], result.metric, result.value, n_units, result.n_test)
        row(rows, target, default_prompts[target], f"chance_{result.metric}", result.chance, n_units, result.n_test)
    for other in MTM_SCHEMES if ablate else ():
        # the targets decoded under `other` already need no second fit
        redo = {t: other for t in config.decoding if default_prompts[t] != other}
        for target, result in {**decoded, **_decode(model, session, config, redo)}.items():
            row(prompt_rows, target, other, result.metric, result.value, n_units, result.n_test)
            row(prompt_rows, target, other, f"chance_{result.metric}", result.chance, n_units, result.n_test)

    units_table = pd.concat(unit_rows, ignore_index=True) if unit_rows else empty_table(UNIT_COLUMNS)
    return Evaluation(metrics=metrics_frame(rows), units=units_table[list(UNIT_COLUMNS)], prompts=metrics_frame(prompt_rows))


def psth_conditions(trials: pd.DataFrame) -> np.ndarray:
    """Each trial's PSTH condition, "choice/block/reward" (str, (trials,)), for psth_r2."""
    return trials[["choice", "block", "reward"]].astype(str).agg("/".join, axis=1).to_numpy()


def score_rates(
    rates: np.ndarray, counts: np.ndarray, conditions: np.ndarray, oracle: np.ndarray | None = None
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The activity metrics of predicted `rates` against `counts`, both (trials, bins, units) in
    spikes per bin: (session values by metric, per-unit values by metric). conditions: (trials,)
    PSTH condition labels; oracle: the true rates, or None.
    """
    rates, counts = rates.astype(np.float64), counts.astype(np.float64)
    per_unit = {
        "bps": metrics.bits_per_spike_per_unit(rates, counts),
        "poisson_d2": metrics.poisson_d2_per_unit(rates, counts),
        "psth_r2": metrics.psth_r2_per_unit(rates, counts, conditions),
        "single_trial_r2": metrics.single_trial_r2_per_unit(rates, counts),
        "oracle_bps": np.full(counts.shape[2], np.nan),
    }
    summary = {
        "bps": metrics.finite_mean(per_unit["bps"]),
        "bps_pooled": metrics.bits_per_spike_pooled(rates, counts),
        "poisson_d2": metrics.finite_mean(per_unit["poisson_d2"]),
        "psth_r2": metrics.clipped_mean(per_unit["psth_r2"]),
        "single_trial_r2": metrics.clipped_mean(per_unit["single_trial_r2"]),
    }
    if oracle is not None:
        oracle = oracle.astype(np.float64)
        per_unit["oracle_bps"] = metrics.bits_per_spike_per_unit(oracle, counts)
        summary["oracle_bps"] = metrics.finite_mean(per_unit["oracle_bps"])
        summary["oracle_bps_pooled"] = metrics.bits_per_spike_pooled(oracle, counts)
    return summary, per_unit


def decoding_causal(target: str, prompt: str | None, config: EvalConfig) -> bool:
    """Whether `target`'s features come from the model under causal attention: with
    "as-prompted", when they are made under the causal prompt (for a model without prompts, when
    the target's prompt would be the causal one), as the authors' causal mode couples the two."""
    return config.decoding_attention == "as-prompted" and (prompt or config.decoding_prompts[target]) == "causal"


def _decode(model, session: SessionData, config: EvalConfig, prompts: dict[str, str | None]) -> dict:
    """Decoding results per target of `prompts` (target -> the prompt of its features, None
    for a model without prompts); the log rates of every trial are computed once per prompt,
    attention and model input (all bins, or the pre-event bins: decoding.input_bins)."""
    by_input: dict[tuple[str | None, bool, int | None], list[str]] = {}
    for target, prompt in prompts.items():
        by_input.setdefault((prompt, decoding_causal(target, prompt, config), input_bins(target, session)), []).append(target)
    behaviour = {"wheel-speed": session.wheel_speed, "whisker-motion-energy": session.whisker_motion_energy}
    inputs = torch.from_numpy(session.counts.astype(np.float32))
    results = {}
    for (prompt, causal, n_bins), targets in by_input.items():
        predict = model_predictor(model, session=session.eid, prompt=prompt, precision=config.precision)
        log_rates = torch.cat([predict(batch[:, :n_bins], causal) for batch in inputs.split(config.batch_size)]).numpy()
        features = log_rates.reshape(len(log_rates), -1)
        decoded = decode_behaviour(
            features, session.trials, behaviour, targets=targets, seed=config.seed, protocol=config.decoders
        )
        for result in decoded:
            results[result.target] = result
    return {target: results[target] for target in prompts}


def evaluate_checkpoint(
    model_dir: str | Path,
    binned_path: str | Path,
    out_dir: str | Path,
    config: EvalConfig,
    *,
    setting: str,
    threads: int | None = None,
) -> Evaluation:
    """Evaluate the model saved in `model_dir` on a binned session; write into `out_dir`:
    metrics.parquet and metrics.csv (the metrics table), units.parquet (the per-unit table),
    prompts.parquet (the prompt ablation; empty unless config.prompt_ablation).

    A model that was skipped (an unusable session) gives empty tables, so a join sees it.
    """
    out_dir = Path(out_dir)
    saved = read_config(model_dir)
    meta = saved["metadata"]
    labels = ModelLabels.of_checkpoint(meta, setting)
    if "skipped" in saved:
        log.info("%s: no model to evaluate (%s)", meta["eid"], saved["skipped"])
        evaluation = Evaluation.empty()
    else:
        session = load_model_session(model_dir, binned_path, meta.get("eids") or [meta["eid"]])
        with num_threads(threads):
            model = load_pretrained(model_dir, device=resolve_device(config.device))
            evaluation = evaluate_model(model, session, config, labels=labels, region_level=meta["region_level"])
    info = {"model_dir": str(model_dir), "binned": str(binned_path), "evaluation": dataclasses.asdict(config)}
    write_evaluation(out_dir, evaluation, info)
    return evaluation
