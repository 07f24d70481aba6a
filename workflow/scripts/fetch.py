from pathlib import Path

import _mtm_path  # noqa: F401  (mtm from src/ when not installed)
from mtm.logs import log_to_file

log_to_file(snakemake.log[0])
from mtm.ibl.fetch import fetch_session

config = snakemake.config  # credentials come from here or the environment, never from params
if config["source"] == "demo":
    demo_cache = str(Path(snakemake.input[0]).parent)
    config = {**config, "one": {**config["one"], "mode": "local", "cache_dir": demo_cache}}
fetch_session(snakemake.wildcards.eid, config, snakemake.output.manifest)
