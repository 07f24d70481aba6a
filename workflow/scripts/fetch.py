import dataclasses
from pathlib import Path

import _mtm_path  # noqa: F401  (mtm from src/ when not installed)
from mtm.logs import log_to_file

log_to_file(snakemake.log[0])
from mtm.config import stages
from mtm.ibl.fetch import fetch_session

# credentials come from the config or the environment, never from params
one = stages.one_config(snakemake.config)
if snakemake.config["source"] == "demo":
    one = dataclasses.replace(one, mode="local", cache_dir=str(Path(snakemake.input[0]).parent))
fetch_session(snakemake.wildcards.eid, one, snakemake.output.manifest)
