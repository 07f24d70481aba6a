"""The config schema (schema.yaml beside this file) and its defaults, which the stage dataclasses
take as theirs (`from_schema`), so a default is written once. Validation: mtm.config.validate.

This module imports nothing else of the package: a stage's config depends on the schema alone
(the rules' code hashes follow imports, so a training job's hash must not reach the IBL code)."""

from __future__ import annotations

import copy
import dataclasses
import functools
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).with_name("schema.yaml")


@functools.cache
def _schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def schema() -> dict[str, Any]:
    """The config's JSON schema (a copy)."""
    return copy.deepcopy(_schema())


def schema_default(section: str, key: str) -> Any:
    """The schema's default of `section.key` (a copy: lists and dicts are fresh)."""
    try:
        return copy.deepcopy(_schema()["properties"][section]["properties"][key]["default"])
    except KeyError:
        raise KeyError(f"the config schema has no default for {section}.{key}") from None


def from_schema(section: str, key: str, **field_options: Any) -> Any:
    """A dataclass field whose default is the schema's `section.key` (`field_options`: the rest
    of dataclasses.field's, e.g. repr=False)."""
    return dataclasses.field(default_factory=lambda: schema_default(section, key), **field_options)
