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
