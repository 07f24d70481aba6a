"""Checks of the workflow config that its JSON schema cannot express, made when it is read.

`mtm.config.validate.validate_config` (which `workflow/rules/common.smk` calls) runs
`check_config` right after the schema, so a value that cannot work stops Snakemake before any job
starts. Checked later, in the jobs, such a value fails every job whose params it changed, and
Snakemake deletes those jobs' outputs: every good `binned.parquet`, and what follows from it.

The checks are the package's own (`binning.n_bins`, `splits.check_fractions`,
`ibl.trials.check_align_event`), which the functions that use these values make again, so the
Python API is held to the same rules.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mtm.binning import n_bins
from mtm.ibl.trials import check_align_event
from mtm.splits import check_fractions

# IBL session ids (Alyx's) are lowercase UUIDs of version 4: the 13th hex digit is 4, the 17th
# one of 8, 9, a, b.
EID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


class ConfigError(ValueError):
    """A config value that cannot work: names its key (or file), and what is wrong with it."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(f"config: {key}: {problem}")


def check_config(config: dict[str, Any]) -> None:
    """Raise ConfigError for the first value of a schema-validated config (defaults filled in)
    that cannot work: the binning grid, the split fractions, the alignment event, the session lists.
    """
    binning = config["binning"]
    window, bin_size = binning["window"], binning["bin_size"]
    try:
        n_bins(window, bin_size)
    except ValueError as err:
        raise ConfigError(f"binning.window = {window}, binning.bin_size = {bin_size}", str(err)) from None
    try:
        check_align_event(binning["align_event"])
    except ValueError as err:
        raise ConfigError("binning.align_event", str(err)) from None
    try:
        check_fractions(config["splits"]["fractions"])
    except ValueError as err:
        raise ConfigError(f"splits.fractions = {config['splits']['fractions']}", str(err)) from None
    for key, value in (("sessions", config["sessions"]), ("multisession.heldout", config["multisession"]["heldout"])):
        if value is not None:
            read_eids(value, key)


def read_eids(value: str | list[str], key: str) -> list[str]:
    """The eids of a config list, or of the file it names (one eid per line; `#` starts a
    comment). ConfigError, naming `key` (and the file and line), for a missing file, an entry that
    is not an IBL session id, or an eid listed twice.
    """
    if isinstance(value, str):
        path = Path(value)
        if not path.is_file():
            raise ConfigError(key, f"the session file {path} does not exist (relative paths start at the working directory)")
        lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
        entries = [(f"line {n}", line) for n, line in enumerate(lines, start=1) if line]
        in_file = f"{key}: {path}, "
    else:
        entries, in_file = [(f"{key}[{i}]", str(item)) for i, item in enumerate(value)], ""
    first_seen: dict[str, str] = {}
    for where, eid in entries:
        at = in_file + where
        if not EID_PATTERN.match(eid):
            raise ConfigError(at, f"{eid!r} is not an IBL session id (a lowercase UUID version 4)")
        if eid in first_seen:
            raise ConfigError(at, f"{eid} is listed twice (first at {first_seen[eid]})")
        first_seen[eid] = where
    return [eid for _, eid in entries]
