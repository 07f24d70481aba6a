import _mtm_path  # noqa: F401  (mtm from src/ when not installed)
from mtm.logs import log_to_file

log_to_file(snakemake.log[0])
from mtm.runtime import keep_freed_memory

keep_freed_memory()
from pathlib import Path

from mtm.jobs import run_training_job
from mtm.config.training import TrainConfig

config = TrainConfig(**snakemake.params.training)
args = [list(snakemake.input.binned), str(Path(snakemake.output.model).parent)]
run_training_job("pretrain_sessions", args, config, gpus=snakemake.resources.gpu, threads=snakemake.threads)
