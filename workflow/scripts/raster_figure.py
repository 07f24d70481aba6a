from pathlib import Path

import _mtm_path  # noqa: F401  (mtm from src/ when not installed)
from mtm.logs import log_to_file

log_to_file(snakemake.log[0])
from mtm.figures.rasters import plot_rasters

out = snakemake.output
plot_rasters(
    Path(snakemake.input.mtm),
    Path(snakemake.input.baseline),
    png=Path(out.png),
    pdf=Path(out.pdf),
    caption=Path(out.caption),
    demo=snakemake.params.demo,
    preferred_region=snakemake.params.region,
    window_start=snakemake.params.window_start,
    bin_size=snakemake.params.bin_size,
)
