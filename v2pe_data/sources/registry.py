"""Source entries -> source objects. A source has `name`, `split`, `item(index) -> Item`, `__len__`,
and optionally `rejected` (bad rows skipped, by reason) and `describe()` (for the manifest)."""

from __future__ import annotations

from pathlib import Path


class SourceUnavailable(RuntimeError):
    """The source's local copy is missing (or a Hub id without a network): reported and skipped unless strict."""


def open_source(entry: dict, split: str, seed: int, image_format: str = "jpg", strict: bool = False):
    kind = entry["kind"]
    if kind == "synthetic":
        from .synthetic import SyntheticSource

        return SyntheticSource(split=split, seed=seed, kinds=entry.get("kinds"), image_format=image_format)
    path = str(entry["path"])
    if not path.startswith("hub:") and not Path(path).exists():
        raise SourceUnavailable(f"source {entry['name']!r}: no local copy at {path}")
    from .real import open_real_source

    try:
        return open_real_source(kind, path, split, strict=strict, columns=entry.get("columns"),
                                config=entry.get("config"), name=entry.get("name"))
    except OSError as exc:  # HubUnavailable is a ConnectionError: a Hub id with no network
        raise SourceUnavailable(f"source {entry['name']!r}: {exc}") from exc
