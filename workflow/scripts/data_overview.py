from pathlib import Path

import _mtm_path  # noqa: F401  (mtm from src/ when not installed)
from mtm.logs import log_to_file

log_to_file(snakemake.log[0])
from mtm.figures.data_overview import plot_data_overview

out = snakemake.output
plot_data_overview(
    [Path(p).parent for p in snakemake.input.qc],
    png=Path(out.png),
    pdf=Path(out.pdf),
    caption=Path(out.caption),
    demo=snakemake.params.demo,
)
