"""Make `mtm` importable in a job: the installed package, else this repository's src/.

Jobs under `--sdm conda` run in envs/mtm.yaml, which has the dependencies but not the package
(and Snakemake clears PYTHONPATH there). Appending keeps an installed `mtm` first.
"""

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2] / "src"))
