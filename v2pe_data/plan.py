"""What a sample will be before any pixel is touched: the record (with exact token counts) and its items."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from v2pe_common import encoding
from v2pe_common.template import ChatTemplate
from v2pe_common.tiling import TilingConfig, image_token_count, num_tiles
from v2pe_common.tokenizer import TextTokenizer

from .records import Item


class PlanError(RuntimeError):
    """A sample cannot be planned inside its length bin (reason in the message)."""


@dataclass(frozen=True, slots=True)
class Budget:
    min_len: int
    max_len: int

    @property
    def len_bin(self) -> str:
        # V2PE names bins by their edges in K tokens ("56_64").
        return f"{self.min_len // 1024}_{-(-self.max_len // 1024)}"

    def contains(self, n: int) -> bool:
        return self.min_len <= n <= self.max_len


@dataclass(slots=True)
class SamplePlan:
    """A fully planned sample: `record` is the JSON written to the shard, `items[i]` gives image i's bytes."""

    record: dict
    items: list[Item]
    rejected: dict[str, int]

    @property
    def num_tokens(self) -> int:
        return self.record["meta"]["num_tokens"]


@dataclass(frozen=True)
class Accounting:
    """The tokenizer, template and tiling a build counts with."""

    tokenizer: TextTokenizer
    template: ChatTemplate
    tiling: TilingConfig

    def tiles(self, item: Item) -> int:
        return num_tiles(item.width, item.height, self.tiling)

    def image_cost(self, item: Item) -> int:
        return image_token_count(self.tiles(item), self.tiling)

    def count(self, conversations: Sequence[dict], tiles: Sequence[int]) -> encoding.TokenCount:
        return encoding.count(conversations, tiles, self.tokenizer, self.template, self.tiling)

    def meta(self) -> dict:
        return {"template": self.template.name, "tokenizer": self.tokenizer.identity, "tiling": self.tiling.to_dict()}


def text_cost_model(make_conversations: Callable[[int], list[dict]], acc: Accounting) -> Callable[[int], int]:
    """Text tokens of a conversation with n images as a function of n.

    Text between placeholders is tokenized piece by piece (placeholders split it), so the cost is affine
    in n; two exact counts pin it down and the final record is recounted exactly anyway.
    """
    one = acc.count(make_conversations(1), [1]).text
    two = acc.count(make_conversations(2), [1, 1]).text
    per_image = two - one
    return lambda n: one + (n - 1) * per_image
