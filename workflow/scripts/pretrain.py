import _mtm_path  # noqa: F401  (mtm from src/ when not installed)
from mtm.logs import log_to_file

log_to_file(snakemake.log[0])
from mtm.runtime import keep_freed_memory

keep_freed_memory()
from pathlib import Path

from mtm.launch import torchrun_training
from mtm.train import TrainConfig, pretrain_sessions

config = TrainConfig(scheme=snakemake.wildcards.scheme, **snakemake.params.training)
args = [list(snakemake.input.binned), str(Path(snakemake.output.model).parent)]
if snakemake.resources.gpu > 1:  # one process per GPU, data-parallel
    torchrun_training(snakemake.resources.gpu, "pretrain_sessions", args, config, threads=snakemake.threads)
else:
    pretrain_sessions(*args, config, threads=snakemake.threads)
