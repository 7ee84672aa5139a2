"""Long-MR's typed options, validated at the boundary: every error is a ConfigError naming its key.

    subset       one subset, a list of subsets (equal shares), or {subset: share}; default: all eight
    depth        None (uniform), a number in [0, 1] (fixed), or a grid "START:STOP:STEP" ("0:1:0.2" gives
                 0, 0.2, ..., 1.0; sample i takes grid value i mod len(grid), so the grid is covered evenly;
                 at most 1001 points)
    num_needles  how many needles the counting and reasoning subsets draw: an int or [lo, hi]
    haystack     "synthetic" (default), "interleaved=PATH", or {kind: interleaved, path, name?, max_pixels?};
                 the synthetic one also takes {paragraphs, sentences, images: [lo, hi]} per document (at
                 most 200 paragraphs, 100 sentences a paragraph, 8 images), e.g.
                 an image-dominated haystack for position experiments (docs/experiments/v2pe_delta.md)
    needles      where non-generated needle images come from (the jigsaw's picture): "synthetic" (rendered
                 pages and charts, default) or "haystack" (an image of a haystack document not in the sample)
    image_format jpg | png: how the synthetic haystack's rendered images are encoded
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from v2pe_common.recipe import ConfigError, construct, unknown_key

from ...depth import parse_grid
from .haystack import IMAGES_PER_DOC, SHAPE_KEYS

SUBSETS = ("text_retrieval", "text_retrieval_fake", "text_counting", "text_reasoning", "image_retrieval",
           "image_counting", "image_reasoning_jigsaw", "image_reasoning_colour_pair")
# V2PE's Long-MR training mix (repeat factors of its 32K meta); our colour-pair subset stands in for its
# image_reasoning_multiview, whose definition is not published.
V2PE_SHARES = {"text_retrieval": 2.0, "image_retrieval": 4.5, "text_counting": 4.5, "text_reasoning": 4.5,
               "image_counting": 4.5, "image_reasoning_jigsaw": 6.0, "image_reasoning_colour_pair": 6.0,
               "text_retrieval_fake": 4.5}
HAYSTACK_KINDS = ("synthetic", "interleaved")
NEEDLE_SOURCES = ("synthetic", "haystack")
MAX_NEEDLES = 12
# Upper bounds of the synthetic haystack's document shape: a document of 200 paragraphs of 100 sentences is
# far beyond a web page, and a bound keeps a typo from planning documents of billions of sentences.
SHAPE_MAX = {"paragraphs": 200, "sentences": 100, "images": IMAGES_PER_DOC}
_HAYSTACK_KEYS = {"kind", "path", "name", "max_pixels", *SHAPE_KEYS}
_ALIASES = {"subsets": "subset"}


@dataclass(frozen=True)
class LongMROptions:
    subsets: tuple[tuple[str, float], ...] = tuple((s, 1.0) for s in SUBSETS)
    depth: float | str | None = None
    num_needles: tuple[int, int] = (2, 5)
    haystack: dict = field(default_factory=lambda: {"kind": "synthetic", "name": "synthetic"})
    needles: str = "synthetic"
    image_format: str = "jpg"

    def __post_init__(self) -> None:
        if not self.subsets:
            raise ConfigError("subset: at least one subset is needed")
        for name, share in self.subsets:
            if name not in SUBSETS:
                raise ConfigError(f"subset: unknown subset {name!r}; choose from {list(SUBSETS)}")
            if isinstance(share, bool) or not isinstance(share, (int, float)) or not share > 0 \
                    or not math.isfinite(share):
                raise ConfigError(f"subset.{name}: share must be a positive number, got {share!r}")
        if isinstance(self.depth, str):
            parse_grid(self.depth)
        elif self.depth is not None:
            if isinstance(self.depth, bool) or not isinstance(self.depth, (int, float)) \
                    or not 0.0 <= self.depth <= 1.0:
                raise ConfigError(f"depth: expected a number in [0, 1], a grid such as '0:1:0.2', or null; "
                                  f"got {self.depth!r}")
        lo, hi = self.num_needles
        if not 1 <= lo <= hi <= MAX_NEEDLES:
            raise ConfigError(f"num_needles: need 1 <= lo <= hi <= {MAX_NEEDLES}, got [{lo}, {hi}]")
        if self.needles not in NEEDLE_SOURCES:
            raise ConfigError(f"needles: choose one of {list(NEEDLE_SOURCES)}, got {self.needles!r}")
        if self.image_format not in ("jpg", "png"):
            raise ConfigError(f"image_format: choose jpg or png, got {self.image_format!r}")

    @functools.cached_property
    def grid(self) -> tuple[float, ...] | None:
        """The depth grid, parsed once (not per sample)."""
        return parse_grid(self.depth) if isinstance(self.depth, str) else None

    def depth_for(self, index: int) -> float | None:
        """The target depth of sample `index`: fixed, the grid value it covers, or None (drawn uniformly)."""
        grid = self.grid
        if grid is not None:
            return grid[index % len(grid)]
        return None if self.depth is None else float(self.depth)

    @classmethod
    def from_dict(cls, raw: dict | None, where: str = "long_mr") -> LongMROptions:
        return construct(cls, dict(raw or {}), where, _kwargs)


def _kwargs(key: str, value, known: dict) -> dict:
    name = _ALIASES.get(key, key)
    if name == "subset":
        return {"subsets": _subsets(value)}
    if name not in known or name == "subsets":
        raise unknown_key(key, ['subset', *known.keys() - {'subsets'}])
    if name == "num_needles":
        return {name: _needles(value)}
    if name == "haystack":
        return {name: parse_haystack(value)}
    if name == "depth" and isinstance(value, str):
        try:
            return {name: float(value)}  # "0.5" from a command line is a fixed depth, not a grid
        except ValueError:
            parse_grid(value)
            return {name: value}
    if name in ("needles", "image_format") and not isinstance(value, str):
        raise ConfigError(f"{name}: expected str, got {value!r}")
    return {name: value}


def _subsets(value) -> tuple[tuple[str, float], ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"subset: expected subset names, got {value!r}")
        return tuple((v, 1.0) for v in dict.fromkeys(value))
    if isinstance(value, dict):
        return tuple((str(k), v) for k, v in value.items())
    raise ConfigError(f"subset: expected a name, a list of names or {{name: share}}, got {value!r}")


def _needles(value) -> tuple[int, int]:
    pair = [value, value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(pair, (list, tuple)) or len(pair) != 2 or any(
            isinstance(v, bool) or not isinstance(v, int) for v in pair):
        raise ConfigError(f"num_needles: expected an int or [lo, hi] of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def parse_haystack(value) -> dict:
    """'synthetic', 'interleaved=PATH' or a mapping -> {kind, path?, name, max_pixels?}."""
    if isinstance(value, str):
        kind, _, path = value.partition("=")
        value = {"kind": kind.strip(), **({"path": path.strip()} if path else {})}
    if not isinstance(value, dict):
        raise ConfigError(f"haystack: expected 'synthetic', 'interleaved=PATH' or a mapping, got {value!r}")
    unknown = sorted(set(value) - _HAYSTACK_KEYS)
    if unknown:
        raise ConfigError(f"haystack: {unknown_key(unknown[0], _HAYSTACK_KEYS)}")
    entry = dict(value)
    if entry.get("kind") not in HAYSTACK_KINDS:
        raise ConfigError(f"haystack.kind: choose one of {list(HAYSTACK_KINDS)}, got {entry.get('kind')!r}")
    if entry["kind"] == "interleaved":
        if not isinstance(entry.get("path"), str) or not entry["path"]:
            raise ConfigError("haystack.path: an interleaved haystack needs the path of its local copy")
    elif "path" in entry:
        raise ConfigError("haystack.path: the synthetic haystack is generated and takes no path")
    for key in SHAPE_KEYS:
        if key not in entry:
            continue
        if entry["kind"] != "synthetic":
            raise ConfigError(f"haystack.{key}: only the synthetic haystack's document shape can be set")
        pair = entry[key]
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or any(
                isinstance(v, bool) or not isinstance(v, int) for v in pair) or not 0 <= pair[0] <= pair[1]:
            raise ConfigError(f"haystack.{key}: expected [lo, hi] with 0 <= lo <= hi, got {pair!r}")
        if key != "images" and pair[0] < 1:
            raise ConfigError(f"haystack.{key}: a document needs at least 1, got {pair!r}")
        if pair[1] > SHAPE_MAX[key]:
            raise ConfigError(f"haystack.{key}: at most {SHAPE_MAX[key]} a document, got {pair!r}")
        entry[key] = [int(v) for v in pair]
    name = entry.setdefault("name", entry["kind"])
    if not isinstance(name, str) or not name:
        raise ConfigError(f"haystack.name: expected a non-empty str, got {name!r}")
    mp = entry.get("max_pixels")
    if mp is not None and (isinstance(mp, bool) or not isinstance(mp, int) or mp <= 0):
        raise ConfigError(f"haystack.max_pixels: expected a positive int, got {mp!r}")
    return entry
