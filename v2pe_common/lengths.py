"""Token-length literals: `32k`, `64K`, `1m`, `131072` (k = 1024, m = 1024**2, as in the V2PE bins)."""

from __future__ import annotations

import re

_UNITS = {"": 1, "k": 1024, "m": 1024**2}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_length(value: str | int) -> int:
    """Parse a token count. Raises ValueError naming the bad literal."""
    if isinstance(value, bool):
        raise ValueError(f"not a token length: {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"token length must be positive, got {value}")
        return value
    match = _PATTERN.match(str(value))
    if not match:
        raise ValueError(f"not a token length: {value!r} (expected e.g. 32k, 64K, 1m, 131072)")
    number, unit = match.groups()
    tokens = float(number) * _UNITS[unit.lower()]
    if tokens != int(tokens) or tokens <= 0:
        raise ValueError(f"token length must be a positive whole number of tokens: {value!r}")
    return int(tokens)


def format_length(tokens: int) -> str:
    """Inverse of parse_length for round numbers: 65536 -> '64k', 1048576 -> '1m'."""
    for unit, size in (("m", 1024**2), ("k", 1024)):
        if tokens % size == 0:
            return f"{tokens // size}{unit}"
    return str(tokens)
