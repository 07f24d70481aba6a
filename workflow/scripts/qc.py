import _mtm_path  # noqa: F401  (mtm from src/ when not installed)
from mtm.logs import log_to_file

log_to_file(snakemake.log[0])
from mtm.config.sessions import QcConfig
from mtm.ibl.qc import run_qc

run_qc(snakemake.input.manifest, QcConfig(**snakemake.params.qc), dict(snakemake.output.items()))
