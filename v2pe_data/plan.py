"""What a sample will be before any pixel is touched: the record (with exact token counts) and its items."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from v2pe_common import encoding
from v2pe_common.template import ChatTemplate
from v2pe_common.tiling import TilingConfig, image_token_count, num_tiles
from v2pe_common.tokenizer import TextTokenizer

from .errors import V2PEDataError
from .records import Item


SHORT_PIECE = 256  # characters: pieces up to this long are remembered by Accounting
SHORT_PIECES = 1 << 16
LONG_PIECE_CHARS = 1 << 24  # ~16 MB of text: a 1M-token sample's haystack with room to spare


class PlanError(V2PEDataError, RuntimeError):
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
    _short: dict = field(default_factory=dict, compare=False, repr=False)
    _long: dict = field(default_factory=dict, compare=False, repr=False)
    _long_chars: list = field(default_factory=lambda: [0], compare=False, repr=False)

    def tiles(self, item: Item) -> int:
        return num_tiles(item.width, item.height, self.tiling)

    def image_cost(self, item: Item) -> int:
        return image_token_count(self.tiles(item), self.tiling)

    def count(self, conversations: Sequence[dict], tiles: Sequence[int]) -> encoding.TokenCount:
        return encoding.count(conversations, tiles, self.tokenizer, self.template, self.tiling,
                              text_length=self.text_length)

    def text_length(self, piece: str) -> int:
        """Tokens of one text piece, remembered: short pieces (labels, separators) recur from image to image;
        long ones (a haystack's text between two images) are counted once while a plan is measured and
        again when its conversation is counted. Long pieces are kept up to LONG_PIECE_CHARS in all."""
        memo = self._short if len(piece) <= SHORT_PIECE else self._long
        n = memo.get(piece)
        if n is None:
            if len(memo) >= SHORT_PIECES or (memo is self._long and self._long_chars[0] > LONG_PIECE_CHARS):
                memo.clear()
                if memo is self._long:
                    self._long_chars[0] = 0
            n = memo[piece] = len(self.tokenizer.encode(piece))
            if memo is self._long:
                self._long_chars[0] += len(piece)
        return n

    def meta(self) -> dict:
        return {"template": self.template.name, "tokenizer": self.tokenizer.identity, "tiling": self.tiling.to_dict()}


def sample_record(*, id: str, task: str, subset: str, items: Sequence[Item], conversations: list[dict], answer,
                  seed: int, index: int, split: str, mode: str, budget: Budget, acc: Accounting,
                  tiles: Sequence[int], counted: encoding.TokenCount, sources: list[dict], **meta) -> dict:
    """The record of one planned sample, the one place its shape is decided: image i is `i.<ext>` of items[i],
    `meta` holds what every task records (seed, bin, exact counts, tiles, sizes, provenance, the counting
    setup) plus the task's own keys (`meta`: they may override the shared ones, the counting setup excepted)."""
    shared = {"seed": seed, "sample_index": index, "split": split, "mode": mode, "target_len": budget.max_len,
              "min_len": budget.min_len, "len_bin": budget.len_bin, "num_tokens": counted.total,
              "text_tokens": counted.text, "image_tokens": counted.image, "tiles": list(tiles),
              "image_sizes": [[it.width, it.height] for it in items], "sources": sources}
    return {"id": id, "task": task, "subset": subset, "images": [f"{i}.{it.ext}" for i, it in enumerate(items)],
            "conversations": conversations, "answer": answer, "meta": {**shared, **meta, **acc.meta()}}


def text_cost(make_conversations: Callable[[int], list[dict]], acc: Accounting) -> Callable[[int], int]:
    """Text tokens of the conversation with n images, as a function of n: exact, counted on the actual pieces.

    Each n is counted once (memoised) with the same piece walk as the loader's encoding; short pieces that
    repeat from image to image ("\n", "Image 7: ") cost a dictionary lookup after their first count.
    """
    memo: dict[int, int] = {}

    def cost(n: int) -> int:
        if n not in memo:
            memo[n] = acc.count(make_conversations(n), [1] * n).text
        return memo[n]

    return cost
