import _mtm_path  # noqa: F401  (mtm from src/ when not installed)
from mtm.logs import log_to_file

log_to_file(snakemake.log[0])
from mtm.runtime import keep_freed_memory

keep_freed_memory()
from pathlib import Path

from mtm.supervised import finetune_head_checkpoint
from mtm.config.heads import HeadConfig

finetune_head_checkpoint(
    Path(snakemake.input.config).parent,
    snakemake.input.binned,
    Path(snakemake.output.metrics).parent,
    snakemake.wildcards.target,
    HeadConfig(**snakemake.params.head),
    setting=snakemake.wildcards.setting,
    threads=snakemake.threads,
)
