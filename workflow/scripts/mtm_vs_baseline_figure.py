from pathlib import Path

import _mtm_path  # noqa: F401  (mtm from src/ when not installed)
from mtm.logs import log_to_file

log_to_file(snakemake.log[0])
from mtm.figures.mtm_vs_baseline import plot_mtm_vs_baseline

out = snakemake.output
plot_mtm_vs_baseline(
    Path(snakemake.input[0]),
    png=Path(out.png),
    pdf=Path(out.pdf),
    caption=Path(out.caption),
    demo=snakemake.params.demo,
)
