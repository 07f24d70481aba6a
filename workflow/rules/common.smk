# Validation, the static session list, and input functions. Rules live in the other .smk files.
import sys
from pathlib import Path

from snakemake.utils import validate

sys.path.append(str(Path(workflow.basedir) / "src"))  # mtm from src/ when not installed
import mtm

CONDA_ENV = "../../envs/mtm.yaml"

validate(config, schema="../schemas/config.schema.yaml")

DEMO_CACHE = "results/demo/one_cache"
DEMO_TRUTH = "results/demo/truth"


def session_eids():
    """The static session list: from the config (list or file), or the demo's sessions."""
    sessions = config["sessions"]
    if sessions is None:
        if config["source"] != "demo":
            raise ValueError(
                "config: `sessions` must list eids (or name a file) when source is not demo"
            )
        from mtm.demo import demo_sessions

        return [s.eid for s in demo_sessions(config["demo"]["n_sessions"])]
    if isinstance(sessions, str):
        lines = Path(sessions).read_text().split()
        return [line for line in lines if line and not line.startswith("#")]
    return list(sessions)


def public_config(section_names):
    """Config sections for params: (never the credentials, which would land in .snakemake/metadata)."""
    return {name: config[name] for name in section_names}


EIDS = session_eids()


wildcard_constraints:
    eid="[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",


def fetch_inputs(wildcards):
    if config["source"] == "demo":
        return [f"{DEMO_CACHE}/sessions.pqt", f"{DEMO_CACHE}/datasets.pqt"]
    return []


def truth_input(wildcards):
    return f"{DEMO_TRUTH}/{wildcards.eid}.npz" if config["source"] == "demo" else []
