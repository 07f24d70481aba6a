import _mtm_path  # noqa: F401  (mtm from src/ when not installed)
from mtm.logs import log_to_file

log_to_file(snakemake.log[0])
from mtm.results_table import write_metrics_table

out = snakemake.output
inputs = snakemake.input
evaluations = [*inputs.evaluations, *inputs.evaluations_pretrained]
write_metrics_table(evaluations, out.parquet, out.csv, out.summary, out.prompts, heads=inputs.heads, glm=inputs.glm)
