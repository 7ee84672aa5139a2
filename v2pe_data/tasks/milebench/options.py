"""MileBench's typed options (`--option KEY=VALUE` or a recipe's `options:`); errors name their key.

    path        the MileBench root: one folder per task, `<root>/<Task>/<Task>.json` + `<Task>/images/`
    tasks       task folder names, in build order: a list or a comma string ("ALFRED,CLEVR-Change");
                default: every task folder under `path`, sorted by name
    combined    N in [1, 64]: read `<Task>_combined_<N>.json`, whose images are MileBench's combined grids in
                `<Task>/combined_<N>_images/` (MileBench's `--combine_image N`); default: the plain files
    max_pixels  images with more pixels are rejected (`too_many_pixels`), as the real sources do; [1, 2**32]
"""

from __future__ import annotations

from dataclasses import dataclass

from v2pe_common.recipe import ConfigError, construct, unknown_key

from ...sources.base import DEFAULT_MAX_PIXELS

MAX_COMBINED = 64  # MileBench combines images into grids of a few (2 to 4); a grid of 64 is already absurd
MAX_PIXELS = 2**32  # a 65536 x 65536 image: beyond it no decode fits in memory


@dataclass(frozen=True)
class MileBenchOptions:
    path: str = ""
    tasks: tuple[str, ...] = ()
    combined: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ConfigError("path: milebench needs the MileBench root folder (--option path=/data/MileBench)")
        for name in self.tasks:
            if not name or "/" in name or "\\" in name or name in (".", ".."):
                raise ConfigError(f"tasks: {name!r} is not a MileBench task folder name")
        if self.combined is not None and (isinstance(self.combined, bool) or not isinstance(self.combined, int)
                                          or not 1 <= self.combined <= MAX_COMBINED):
            raise ConfigError(f"combined: expected an int N in [1, {MAX_COMBINED}] (reads "
                              f"<Task>_combined_<N>.json), got {self.combined!r}")
        if isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int) \
                or not 1 <= self.max_pixels <= MAX_PIXELS:
            raise ConfigError(f"max_pixels: expected an int in [1, {MAX_PIXELS}], got {self.max_pixels!r}")

    @classmethod
    def from_dict(cls, raw: dict | None, where: str = "options") -> MileBenchOptions:
        return construct(cls, dict(raw or {}), where, _kwargs)


def _kwargs(key: str, value, known: dict) -> dict:
    if key not in known:
        raise unknown_key(key, known)
    if key == "tasks":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"tasks: expected task folder names (a list or 'A,B'), got {value!r}")
        return {key: tuple(dict.fromkeys(value))}
    if key == "path" and not isinstance(value, str):
        raise ConfigError(f"path: expected str, got {value!r}")
    return {key: value}
