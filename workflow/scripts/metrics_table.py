import _mtm_path  # noqa: F401  (mtm from src/ when not installed)
from mtm.logs import log_to_file

log_to_file(snakemake.log[0])
from mtm.evaluate import write_metrics_table

write_metrics_table(snakemake.input, snakemake.output.parquet, snakemake.output.csv, snakemake.output.summary)
