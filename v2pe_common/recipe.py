"""Reading recipe YAML files: one mapping of keys, CLI overrides on top, errors that name the file."""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """A recipe key or CLI option is invalid; the message names it."""


def read_recipe(path: str | Path, overrides: dict | None = None) -> dict:
    """The recipe's mapping with the non-None `overrides` applied."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read recipe: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values")
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return raw


def construct(cls, raw: dict, where: str, coerce):
    """`cls(**kwargs)` from a raw mapping: unknown keys and invalid values become ConfigErrors naming `where`.

    `coerce(name, value, field)` returns the keyword arguments one raw key contributes.
    """
    import dataclasses

    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values")
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    try:
        for key, value in raw.items():
            kwargs.update(coerce(key, value, known))
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


_SCALARS = {"int": int, "float": (int, float), "bool": bool, "str": str, "list": list, "dict": dict}


def check_type(key: str, value, annotation: str):
    """`value` checked against a dataclass field's annotation ("int", "float | None", ...); returns it coerced.

    YAML gives ints where floats are meant ('lr: 1'), so ints pass for floats and become floats; bools are
    never numbers and strings are never bools ('strict: "no"' would otherwise be truthy). Floats must be
    finite. Annotations outside the simple types above are left to the caller.
    """
    import math

    kinds = [part.strip() for part in annotation.split("|")]
    if value is None:
        if "None" in kinds:
            return None
        raise ConfigError(f"{key}: a value is required")
    base = kinds[0]
    if base not in _SCALARS:
        return value
    if isinstance(value, bool) and base != "bool" or not isinstance(value, _SCALARS[base]):
        raise ConfigError(f"{key}: expected {base}, got {value!r}")
    if base == "float":
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    return value
