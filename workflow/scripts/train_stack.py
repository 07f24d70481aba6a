import _mtm_path  # noqa: F401  (mtm from src/ when not installed)
from mtm.logs import log_to_file

log_to_file(snakemake.log[0])
from mtm.runtime import keep_freed_memory

keep_freed_memory()
from mtm.jobs import train_session_stack
from mtm.config.training import TrainConfig

configs = [TrainConfig(**params) for params in snakemake.params.training]
train_session_stack(snakemake.input.binned, snakemake.params.out_dirs, configs, threads=snakemake.threads)
