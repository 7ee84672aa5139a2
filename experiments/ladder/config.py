"""A rung of the learning ladder: `rungs/<name>.yaml` -> `RungConfig`, errors naming the key.

A rung is one training stage (experiments/stage_config.py: a Long-MR training set, its evaluation set at
the same length, a model, one run per seed) plus where its model starts: `scratch` (a seeded random
initialisation of the scale's shape) or the final model of another rung (a curriculum).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from v2pe_common.recipe import ConfigError, construct, read_recipe

from v2pe_train.positions import MODES as POSITION_MODES

from ..stage_config import StageConfig, known_key

RUNGS_DIR = Path(__file__).parent / "rungs"
SCRATCH = "scratch"


@dataclass(frozen=True)
class RungConfig(StageConfig):
    description: str = ""
    init: str = SCRATCH  # "scratch" or the name of the rung whose final model (per seed) this rung starts from
    position_mode: str = "default"
    # Evaluate a checkpoint every this many steps too (kept, not pruned): the learning curve, and the first
    # step at which the rung's threshold was reached. None: the final model only.
    curve_every: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.curve_every is not None and not 1 <= self.curve_every <= self.steps:
            raise ConfigError(f"curve_every: must lie in [1, steps = {self.steps}], got {self.curve_every!r}")
        if not self.init:
            raise ConfigError("init: 'scratch' or the name of a rung")
        if self.init == self.name:
            raise ConfigError(f"init: rung {self.name!r} cannot start from itself")
        if self.position_mode not in POSITION_MODES or self.position_mode == "v2pe_fix":
            raise ConfigError(f"position_mode: default or v2pe_rnd, got {self.position_mode!r}")
        if self.init != SCRATCH and self.init_model:
            raise ConfigError("init_model: a rung starting from another rung takes that rung's model")


def rung_path(name: str) -> Path:
    path = Path(name) if name.endswith((".yaml", ".yml")) else RUNGS_DIR / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in RUNGS_DIR.glob("*.yaml"))
        raise ConfigError(f"rung {name!r}: no file {path}; choose one of {names} or give a YAML path")
    return path


def load_rung(name: str, overrides: dict | None = None) -> RungConfig:
    """A rung by name (`rungs/<name>.yaml`) or a YAML path, with `overrides` on top."""
    path = rung_path(name)
    return construct(RungConfig, read_recipe(path, overrides), str(path), known_key)


def chain(name: str, overrides: dict | None = None, common: dict | None = None) -> list[RungConfig]:
    """The rungs `name` starts from, first to last, ending with `name` itself (with `overrides`).

    `common` (e.g. seeds, device, threads) applies to every rung of the chain, so a curriculum's stages
    share them; a rung named twice in the chain is a cycle and refused.
    """
    order: list[RungConfig] = []
    seen: set[str] = set()
    rung = load_rung(name, {**(common or {}), **(overrides or {})})
    while True:
        if rung.name in seen:
            raise ConfigError(f"init: rungs {sorted(seen)} start from each other in a cycle")
        seen.add(rung.name)
        order.append(rung)
        if rung.init == SCRATCH:
            return order[::-1]
        rung = load_rung(rung.init, common)
