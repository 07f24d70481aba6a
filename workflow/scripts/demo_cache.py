from pathlib import Path

import _mtm_path  # noqa: F401  (mtm from src/ when not installed)
from mtm.logs import log_to_file

log_to_file(snakemake.log[0])
from mtm.demo import build_demo_cache

demo, binning = snakemake.params.demo, snakemake.params.binning
build_demo_cache(
    Path(snakemake.output.sessions).parent,
    Path(snakemake.output.truth[0]).parent,
    n_sessions=demo["n_sessions"],
    n_units=demo["n_units"],
    n_trials=demo["n_trials"],
    seed=demo["seed"],
    align_event=binning["align_event"],
    window=tuple(binning["window"]),
    bin_size=binning["bin_size"],
)
