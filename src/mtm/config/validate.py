"""Validation of the workflow config: its defaults filled in from the schema, the schema checked,
then what the schema cannot express (mtm.config.checks)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mtm.config.checks import ConfigError, check_config
from mtm.config.schema import schema


def _with_defaults(validator_class):
    """The validator, also setting each missing property that has a default (before checking
    it, so nested sections defaulted to {} get their own defaults)."""
    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, properties, instance, schema):
        if validator.is_type(instance, "object"):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from check_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": properties})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Fill in `config`'s defaults (in place), check it against the schema and then
    `checks.check_config`; return it. ConfigError names the first key that cannot work."""
    error = jsonschema.exceptions.best_match(_Validator(schema()).iter_errors(config))
    if error is not None:
        key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        raise ConfigError(key, error.message)
    check_config(config)
    return config


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A config file, validated (`validate_config`); `overrides`: top-level sections replaced."""
    config = yaml.safe_load(Path(path).read_text()) or {}
    return validate_config({**config, **(overrides or {})})
