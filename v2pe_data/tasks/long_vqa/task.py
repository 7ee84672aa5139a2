"""Long-VQA (V2PE's `image/` and `paste/` subsets): a mix of VQA sources, each planned in concat or paste mode.

Sample i's source is drawn by share from (seed, "mix", split, i), so a mix is as reproducible and
worker-independent as one source. A source without a local copy (or without valid items of the split) is
reported and skipped unless the build is strict. Options (`options.LongVQAOptions`) are the build's
top-level keys `sources`, `mode`, `paste_grid` and `depth` (a float, or None for uniform).
"""

from __future__ import annotations

from dataclasses import dataclass

from v2pe_common.recipe import ConfigError

from ...plan import Accounting, Budget, SamplePlan
from ...seeding import stable_rng
from ...sources.registry import ExplainedLoads, SourceUnavailable, open_source
from ..base import Input, check_bin, control_of
from . import concat, paste
from .canvas import CanvasLayout
from .options import LongVQAOptions


@dataclass
class Slot:
    """One entry of the mix, opened: its input and planning context (None when unavailable)."""

    input: Input
    ctx: concat.TaskContext | None

    @property
    def mode(self) -> str:
        return self.input.entry["mode"]

    def plan(self, index: int, layout: CanvasLayout) -> SamplePlan:
        if self.mode == "paste":
            return paste.plan(self.ctx, index, layout)
        return concat.plan(self.ctx, index)

    def min_tokens(self, layout: CanvasLayout) -> int:
        if self.mode == "paste":
            return paste.min_sample_tokens(self.ctx, layout)
        return concat.min_sample_tokens(self.ctx)


class LongVQATask:
    name = "long_vqa"

    def __init__(self, slots: list[Slot], seed: int, split: str, layout: CanvasLayout):
        self.slots, self.seed, self.split, self.layout = slots, seed, split, layout
        self.live = [s for s in slots if s.ctx is not None]
        if not self.live:
            raise ConfigError("no source is available: " + "; ".join(s.input.status for s in slots))
        self.inputs = [s.input for s in slots]

    @classmethod
    def open(cls, cfg, acc: Accounting) -> LongVQATask:
        options = LongVQAOptions.from_config(cfg)
        budget = Budget(cfg.min_length, cfg.length)
        return cls([_open_slot(cfg, acc, budget, entry, options.depth) for entry in options.sources], cfg.seed,
                   cfg.split, CanvasLayout(grid=options.paste_grid))

    def check_feasible(self, min_len: int, max_len: int) -> None:
        floors = []
        for slot in self.live:
            floor = slot.min_tokens(self.layout)
            check_bin(floor, 0, max_len, f"one image plus its prompt (source {slot.input.entry['name']!r}, "
                                         f"{slot.mode} mode)")
            floors.append(floor)
        check_bin(min(floors), min_len, max_len, "one image plus its prompt")

    def slot_for(self, index: int) -> Slot:
        """Which source sample `index` comes from: drawn by share from a stable seed."""
        if len(self.live) == 1:
            return self.live[0]
        rng = stable_rng(self.seed, "mix", self.split, index)
        return rng.choices(self.live, weights=[s.input.entry["share"] for s in self.live])[0]

    def plan(self, index: int) -> SamplePlan:
        return self.slot_for(index).plan(index, self.layout)


def _open_slot(cfg, acc: Accounting, budget: Budget, entry: dict, depth: float | None) -> Slot:
    try:
        source = open_source(entry, cfg.split, cfg.seed, cfg.image_format, strict=cfg.strict)
    except SourceUnavailable as exc:
        if cfg.strict:
            raise ConfigError(f"{exc} (--strict)") from None
        return Slot(Input(entry, None, f"unavailable: {exc}"), None)
    except ValueError as exc:  # strict source errors and bad source configuration
        raise ConfigError(str(exc)) from None
    if hasattr(source, "screen"):  # real rows: question and answers come from outside (generated ones do not)
        try:
            source.screen(control_of(cfg, acc))
        except ValueError as exc:  # a strict build's first special_token row
            raise ConfigError(str(exc)) from None
    if len(source) == 0:
        if cfg.strict:
            raise ConfigError(f"source {entry['name']!r} has no valid {cfg.split} items (--strict)")
        return Slot(Input(entry, None, f"unavailable: no valid {cfg.split} items"), None)
    source = ExplainedLoads(source, entry["name"])
    ctx = concat.TaskContext(task=cfg.task, split=cfg.split, seed=cfg.seed, budget=budget, acc=acc, source=source,
                             depth=depth)
    return Slot(Input(entry, source, "available"), ctx)
