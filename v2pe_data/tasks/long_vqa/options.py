"""Long-VQA's typed options. They are the build config's top-level keys (where recipes have always put them,
so build ids stay), read once here; the task sees only this object.

    sources     the mix, normalised by the config: [{name, kind, path, mode, share, ...}]
    paste_grid  paste canvases are paste_grid x paste_grid cells of one tile each
    depth       a number in [0, 1] (where the target goes among the images), or None (uniform)
"""

from __future__ import annotations

from dataclasses import dataclass

from v2pe_common.recipe import ConfigError


@dataclass(frozen=True)
class LongVQAOptions:
    sources: tuple[dict, ...]
    paste_grid: int = 3
    depth: float | None = None

    @classmethod
    def from_config(cls, cfg) -> LongVQAOptions:
        if isinstance(cfg.depth, str):
            raise ConfigError(f"depth: long_vqa takes a number in [0, 1] or none, not the grid {cfg.depth!r}")
        if cfg.options:
            raise ConfigError(f"options: long_vqa takes no task options (its keys are sources, mode, paste_grid, "
                              f"depth); got {sorted(cfg.options)}")
        return cls(tuple(cfg.sources), cfg.paste_grid, cfg.depth)
