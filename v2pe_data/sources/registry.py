"""Source names -> source objects. A source has `name`, `item(index) -> Item` and `__len__`."""

from __future__ import annotations


def open_source(name: str, split: str, seed: int, image_format: str = "jpg"):
    if name == "synthetic":
        from .synthetic import SyntheticSource

        return SyntheticSource(split=split, seed=seed, image_format=image_format)
    raise ValueError(f"source: unknown source {name!r}; available: ['synthetic']")
