from pathlib import Path

import _mtm_path  # noqa: F401  (mtm from src/ when not installed)
from mtm.logs import log_to_file

log_to_file(snakemake.log[0])
from mtm.figures.convergence import plot_convergence

out = snakemake.output
plot_convergence(
    [Path(path).parent for path in snakemake.input.configs],
    png=Path(out.png),
    pdf=Path(out.pdf),
    caption=Path(out.caption),
    table_csv=Path(out.table),
    demo=snakemake.params.demo,
)
