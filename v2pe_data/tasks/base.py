"""What the builder asks of a task, and what a task tells it about its inputs.

A task turns a sample index into a `SamplePlan` (`plan(index)`), deterministically from the build's seed,
and owns everything between opened sources and plans: which inputs it draws from, how their samples are
mixed, what the smallest sample costs. The builder owns the rest (tokenizer, shards, workers, manifest),
so adding a task is one package plus one entry of `task_registry.TASKS`.

A task reads the build config (`v2pe_data.config.BuildConfig`) by duck typing and never imports it: the
config validates the keys every task shares, each task its own (its `Options`).

Errors: a task raises `ConfigError` (v2pe_common.recipe) for arguments it cannot work with (an unknown
option, a bin too small for any sample, no usable input): the builder reports them as usage errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from v2pe_common.tiling import TOKENS_PER_TILE

if TYPE_CHECKING:
    from ..plan import Accounting, SamplePlan


@dataclass
class Input:
    """One source a task draws from, opened: its entry (name, kind, path, ...), the source object (None when
    unavailable) and a status ("available" or why not). The builder fingerprints the files of available
    inputs into the build identity and lists every input in the manifest."""

    entry: dict
    source: object | None
    status: str
    role: str = "source"  # what the task uses it for: source (Long-VQA), haystack (Long-MR), ...

    @property
    def available(self) -> bool:
        return self.source is not None

    def describe(self) -> dict:
        info = {k: self.entry[k] for k in ("name", "kind", "mode", "share") if k in self.entry}
        info["path"] = self.entry.get("path")
        info["status"] = self.status
        if self.role != "source":
            info["role"] = self.role
        if self.source is not None:
            info.update(self.source.describe() if hasattr(self.source, "describe") else {"split": self.source.split})
        return info

    def rejected(self) -> list[dict]:
        """Rows the source skipped while indexing, by reason (empty for generated sources)."""
        return list(getattr(self.source, "rejected", []) or []) if self.source is not None else []


class Task(Protocol):
    """A build task: `open(cfg, acc)` (a classmethod) gives a ready task; then only pure planning."""

    name: str
    inputs: list[Input]

    @classmethod
    def open(cls, cfg, acc: Accounting) -> Task: ...

    def plan(self, index: int) -> SamplePlan: ...

    def check_feasible(self, min_len: int, max_len: int) -> None:
        """Raise ConfigError when no sample can land in [min_len, max_len]."""
        ...


def control_of(cfg, acc: Accounting):
    """The build's policy for control tokens in source text (`v2pe_common.control`); ConfigError names the key."""
    from v2pe_common.control import control_tokens
    from v2pe_common.recipe import ConfigError

    try:
        return control_tokens(acc.tokenizer, getattr(cfg, "control_tokens", "skip"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def check_bin(floor: int, min_len: int, max_len: int, what: str) -> None:
    """The bin checks every task shares: the top must hold the smallest sample, and a bin narrower than one
    tile (TOKENS_PER_TILE tokens) above that smallest sample may be impossible to hit exactly."""
    from v2pe_common.recipe import ConfigError

    if max_len < floor:
        raise ConfigError(f"--len {max_len} is smaller than {what} ({floor} tokens): no sample can be built; "
                          "use a larger --len")
    if max_len - min_len < TOKENS_PER_TILE and min_len > floor:
        raise ConfigError(f"bin [{min_len}, {max_len}] is narrower than one image tile ({TOKENS_PER_TILE} tokens); "
                          "widen it with --min-len")
