from pathlib import Path

import _mtm_path  # noqa: F401  (mtm from src/ when not installed)
from mtm.logs import log_to_file

log_to_file(snakemake.log[0])
from mtm.figures.comparisons import plot_comparisons

out = snakemake.output
plot_comparisons(
    Path(snakemake.input[0]),
    png=Path(out.png),
    pdf=Path(out.pdf),
    caption=Path(out.caption),
    table_csv=Path(out.table),
    demo=snakemake.params.demo,
)
