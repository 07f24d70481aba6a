import _mtm_path  # noqa: F401  (mtm from src/ when not installed)
from mtm.logs import log_to_file

log_to_file(snakemake.log[0])
from pathlib import Path

from mtm.config.evaluation import EvalConfig
from mtm.glm import evaluate_glm_session
from mtm.config.evaluation import GlmConfig

evaluate_glm_session(
    snakemake.input.binned,
    Path(snakemake.output.metrics).parent,
    EvalConfig(**snakemake.params.evaluation),
    config=GlmConfig(**snakemake.params.glm),
    region_level=snakemake.params.region_level,
    threads=snakemake.threads,
)
