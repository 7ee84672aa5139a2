"""Reading recipe YAML files: one mapping of keys, CLI overrides on top, errors that name the file."""

from __future__ import annotations

import re
from pathlib import Path


class ConfigError(ValueError):
    """A recipe key or CLI option is invalid; the message names it."""


def setting(default, help: str):
    """A config field with its one-line meaning (shown by `config show`); a callable default is a factory."""
    import dataclasses

    if callable(default):
        return dataclasses.field(default_factory=default, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def unknown_key(key, known) -> ConfigError:
    """The error for a key no config has: the closest known key when one is close (a typo), then all of them."""
    import difflib

    names = sorted(str(k) for k in known)
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    return ConfigError(f"unknown key {key!r}{hint} known keys: {names}")


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


def parse_settings(items: list[str]) -> dict:
    """KEY=VALUE command-line settings as a mapping; each VALUE is read as YAML ('1e-3', 'false', '[a, b]')."""
    import yaml

    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip() or not text.strip():
            raise ConfigError(f"{item!r}: expected KEY=VALUE (for example lr=1e-3; KEY=null for none)")
        try:
            out[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"{key.strip()}: {text!r} is not a YAML value") from None
    return out


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


# A decimal number as YAML 1.2 and Python spell it ("1e-3", "+5.0E-4", ".5"): not "nan", "inf" or "1_000".
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_SCALARS = {"int": int, "float": (int, float), "bool": bool, "str": str, "list": list, "dict": dict}


def check_type(key: str, value, annotation: str):
    """`value` checked against a dataclass field's annotation ("int", "float | None", ...); returns it coerced.

    YAML gives ints where floats are meant ('lr: 1'), so ints pass for floats and become floats; PyYAML
    (YAML 1.1) reads '1e-3' and '5E-4' as strings, so a string spelling a number passes for a float too.
    Bools are never numbers and strings are never bools ('strict: "no"' would otherwise be truthy). Floats
    must be finite. Annotations outside the simple types above are left to the caller.
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
    if base == "float" and isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) and base != "bool" or not isinstance(value, _SCALARS[base]):
        raise ConfigError(f"{key}: expected {base}, got {value!r}")
    if base == "float":
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    return value
