"""How a session is fetched (`OneConfig`, mtm.ibl.fetch), selected (`QcConfig`, mtm.ibl.qc) and
binned (`BinningConfig`, mtm.ibl.bin_session); defaults: the config schema's `one`, `units`,
`trials`, `binning` and `splits`."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from mtm.binning import n_bins
from mtm.config.schema import from_schema
from mtm.ibl.trials import check_align_event


# each credential, and the environment variable ONE itself reads it from
CREDENTIALS = {"username": "ALYX_LOGIN", "password": "ALYX_PWD", "token": "ALYX_TOKEN"}


@dataclass(frozen=True, kw_only=True)
class OneConfig:
    """Where sessions come from (the config's `one` section): a local ONE cache or the IBL
    server (`mode`, `base_url`, `cache_dir`), the spike-sorting pins (`revision`, `spike_sorter`)
    and the retries of transient network errors. The credentials never print (repr) and never
    travel in a rule's params: a fetch job reads them from the config, else from the environment
    (`with_credentials`)."""

    mode: str = from_schema("one", "mode")
    cache_dir: str | None = from_schema("one", "cache_dir")
    base_url: str = from_schema("one", "base_url")
    username: str | None = from_schema("one", "username", repr=False)
    password: str | None = from_schema("one", "password", repr=False)
    token: str | None = from_schema("one", "token", repr=False)
    revision: str | None = from_schema("one", "revision")
    spike_sorter: str | None = from_schema("one", "spike_sorter")
    retries: int = from_schema("one", "retries")

    def with_credentials(self) -> OneConfig:
        """Each credential the config leaves empty, from ONE's environment variable (CREDENTIALS)."""
        return dataclasses.replace(
            self, **{key: getattr(self, key) or os.environ.get(env) or None for key, env in CREDENTIALS.items()}
        )

    def secrets(self) -> list[str]:
        """The values to redact from messages."""
        return [s for s in (self.password, self.token) if s]


@dataclass(frozen=True, kw_only=True)
class QcConfig:
    """Which units and trials a session keeps (the config's `units` and `trials` sections; see
    mtm.ibl.units.select_units, mtm.ibl.trials.filter_trials) and the event trials are aligned to
    (`binning.align_event`), which every kept trial must have."""

    unit_rule: str = from_schema("units", "rule")
    min_firing_rate_hz: float = from_schema("units", "min_firing_rate_hz")
    min_units: int = from_schema("units", "min_units")
    min_rt: float = from_schema("trials", "min_rt")
    max_rt: float = from_schema("trials", "max_rt")
    max_trial_len: float = from_schema("trials", "max_trial_len")
    exclude_no_choice: bool = from_schema("trials", "exclude_no_choice")
    min_trials: int = from_schema("trials", "min_trials")
    align_event: str = from_schema("binning", "align_event")


@dataclass(frozen=True, kw_only=True)
class BinningConfig:
    """The trial-aligned grid (the config's `binning` section: the event, the window around it
    in s, the bin width in s) and the trial split (`splits`: its seed and train/val/test fractions)."""

    align_event: str = from_schema("binning", "align_event")
    window: tuple[float, float] = from_schema("binning", "window")
    bin_size: float = from_schema("binning", "bin_size")
    split_seed: int = from_schema("splits", "seed")
    split_fractions: tuple[float, float, float] = from_schema("splits", "fractions")

    def grid(self) -> dict[str, Any]:
        """The grid as binned.parquet records it; ValueError when it cannot work (see n_bins,
        check_align_event)."""
        window = tuple(float(w) for w in self.window)
        bin_size = float(self.bin_size)
        return dict(align_event=check_align_event(self.align_event), window=list(window), bin_size=bin_size,
                    n_bins=n_bins(window, bin_size))  # fmt: skip
