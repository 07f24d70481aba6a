import _mtm_path  # noqa: F401  (mtm from src/ when not installed)
from mtm.logs import log_to_file

log_to_file(snakemake.log[0])
from mtm.config.sessions import BinningConfig
from mtm.ibl.bin_session import bin_session

inputs = snakemake.input
bin_session(
    manifest=inputs.manifest,
    units=inputs.units,
    trials=inputs.trials,
    behaviour=inputs.behaviour,
    qc=inputs.qc,
    truth=inputs.truth or None,
    config=BinningConfig(**snakemake.params.binning),
    output=snakemake.output.binned,
)
