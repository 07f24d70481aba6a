import _mtm_path  # noqa: F401  (mtm from src/ when not installed)
from mtm.logs import log_to_file

log_to_file(snakemake.log[0])
from mtm.runtime import keep_freed_memory

keep_freed_memory()
from pathlib import Path

from mtm.train import TrainConfig, finetune_session

finetune_session(
    Path(snakemake.input.pretrained).parent,
    snakemake.input.binned,
    Path(snakemake.output.model).parent,
    TrainConfig(scheme=snakemake.wildcards.scheme, **snakemake.params.training),
    threads=snakemake.threads,
)
