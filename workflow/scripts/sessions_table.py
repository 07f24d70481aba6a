import _mtm_path  # noqa: F401  (mtm from src/ when not installed)
from mtm.logs import log_to_file

log_to_file(snakemake.log[0])
from mtm.ibl.sessions_table import write_sessions_table

write_sessions_table(list(snakemake.input.qc), snakemake.output[0])
