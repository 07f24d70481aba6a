import _mtm_path  # noqa: F401  (mtm from src/ when not installed)
from mtm.logs import log_to_file

log_to_file(snakemake.log[0])
from mtm.runtime import keep_freed_memory

keep_freed_memory()
from pathlib import Path

from mtm.evaluate import evaluate_checkpoint
from mtm.config.evaluation import EvalConfig

evaluate_checkpoint(
    Path(snakemake.input.model).parent,
    snakemake.input.binned,
    Path(snakemake.output.metrics).parent,
    EvalConfig(**snakemake.params.evaluation),
    setting=snakemake.wildcards.setting,
    threads=snakemake.threads,
)
