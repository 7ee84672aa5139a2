"""One sample's context: haystack blocks drawn from the stream, needles placed at depths, exact positions.

The context is its blocks joined by "\\n", an image block written as `<image>`. Filling uses per-block
token counts (each paragraph tokenized once, images priced from their size); the result is then measured
exactly the way `v2pe_common.encoding` counts it: the text between two placeholders is one piece,
tokenized as a whole. A needle's position is its first token's index in that measure (offsets mapping of
its own piece), so `placed_depth` is exact, and no step re-tokenizes the context per added block.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import random
from collections.abc import Callable
from dataclasses import dataclass

from v2pe_common.tiling import IMAGE_PLACEHOLDER, image_token_count

from ...plan import Accounting
from ...records import Item
from .pictures import Picture, paste_cells, paste_pictures, paste_side
from .subsets import Design

SEP = "\n"
MAX_MISSES = 64  # blocks that would overshoot the cap, skipped before a fill gives up


@dataclass(slots=True)
class Filled:
    blocks: list[str | Item]
    costs: list[int]  # estimated tokens of each block with the separator before it
    documents: int  # haystack documents the blocks come from
    est: int
    exhausted: bool  # the haystack ran out of documents before the goal


def fill(haystack, rng: random.Random, goal: int, cap: int, cost: Callable[[str | Item], int], sep_cost: int,
         exclude: set[str]) -> Filled:
    """Blocks of consecutive documents from a random start until the estimate reaches `goal`; a block that
    would pass `cap` is skipped (a document may end early: the haystack is a stream, not a library)."""
    blocks: list[str | Item] = []
    costs: list[int] = []
    est = docs = misses = 0
    n = len(haystack)
    start = rng.randrange(n)
    for k in range(n):
        doc = haystack.document((start + k) % n)
        if doc.doc_id in exclude:
            continue
        took = False
        for block in doc.blocks:
            c = cost(block) + (sep_cost if blocks else 0)
            if est + c > cap:
                misses += 1
                if misses >= MAX_MISSES:
                    return Filled(blocks, costs, docs + took, est, False)
                continue
            blocks.append(block)
            costs.append(c)
            est += c
            took = True
            if est >= goal:
                return Filled(blocks, costs, docs + 1, est, False)
        docs += took
    return Filled(blocks, costs, docs, est, True)


@dataclass(slots=True)
class NeedleAt:
    kind: str  # "text" | "image" (inserted on its own) | "pasted" (into a haystack image)
    block: int  # index in the final blocks
    text: str = ""
    key: str = ""
    picture: Picture | None = None
    box: tuple[int, int, int, int] | None = None
    info: dict = dataclasses.field(default_factory=dict)


def place(filled: Filled, design: Design, rng: random.Random, insert_costs: list[int]) -> tuple[list, list] | None:
    """(final blocks, needles in order of appearance), or None when too few haystack images can carry the
    pasted pictures. Inserts go to the block boundary nearest their depth, pastes into the haystack image
    starting nearest theirs; both keep the design's order."""
    pos = [0]
    for c in filled.costs:
        pos.append(pos[-1] + c)
    total = filled.est + sum(insert_costs)
    slots: list[int] = []
    prev, shift = 0, 0
    for ins, c in zip(design.inserts, insert_costs):
        slots.append(prev := _nearest(pos, ins.depth * total - shift, prev))
        shift += c
    hosts = _hosts(filled, design, pos, total)
    if hosts is None:
        return None
    pasted: dict[int, list[tuple[Picture, tuple[int, int, int, int]]]] = {}
    for host, paste in zip(hosts, design.pastes):
        item = filled.blocks[host]
        side = paste_side(item.width, item.height)
        corners = sorted(rng.sample(paste_cells(item.width, item.height, side), len(paste.pictures)))
        pasted[host] = [(p, (x, y, x + side, y + side)) for p, (x, y) in zip(paste.pictures, corners)]
    blocks: list[str | Item] = []
    found: list[NeedleAt] = []
    pending = sorted(range(len(slots)), key=lambda i: (slots[i], i))
    q = 0
    for j in range(len(filled.blocks) + 1):
        while q < len(pending) and slots[pending[q]] == j:
            ins = design.inserts[pending[q]]
            if ins.text is not None:
                found.append(NeedleAt("text", len(blocks), text=ins.text.text, key=ins.text.key))
                blocks.append(ins.text.text)
            else:
                found.append(NeedleAt("image", len(blocks), info=dict(ins.info)))
                blocks.append(ins.item)
            q += 1
        if j == len(filled.blocks):
            break
        block = filled.blocks[j]
        if j in pasted:
            found.extend(NeedleAt("pasted", len(blocks), picture=p, box=b) for p, b in pasted[j])
            block = dataclasses.replace(block, load=functools.partial(paste_pictures, block.load,
                                                                      tuple(pasted[j]), block.ext))
        blocks.append(block)
    return blocks, found


def _nearest(pos: list[int], target: float, lo: int) -> int:
    """The slot in pos[lo:] (sorted) whose position is nearest `target`."""
    j = bisect.bisect_left(pos, target, lo)
    if j >= len(pos):
        return len(pos) - 1
    if j > lo and target - pos[j - 1] <= pos[j] - target:
        return j - 1
    return j


def _hosts(filled: Filled, design: Design, pos: list[int], total: int) -> list[int] | None:
    """Increasing block indices of the haystack images carrying each paste group, nearest their depths,
    leaving enough eligible images after each pick for the groups still to come."""
    if not design.pastes:
        return []
    picks: list[int] = []
    lo = 0
    for g, paste in enumerate(design.pastes):
        need = len(paste.pictures)
        fits = [b for b in range(len(filled.blocks)) if isinstance(filled.blocks[b], Item)
                and len(paste_cells(filled.blocks[b].width, filled.blocks[b].height,
                                    paste_side(filled.blocks[b].width, filled.blocks[b].height))) >= need]
        later = len(design.pastes) - 1 - g
        usable = [b for b in fits if b >= lo]
        if len(usable) <= later:
            return None
        usable = usable[:len(usable) - later] if later else usable
        target = paste.depth * total
        best = min(usable, key=lambda b: (abs(pos[b] - target), b))
        picks.append(best)
        lo = best + 1
    return picks


@dataclass(slots=True)
class Measured:
    """The context string and its exact token positions (pieces between placeholders, tokenized whole)."""

    context: str
    offsets: list[int]  # character offset of each block
    images: list[int]  # block index of each context image, in order
    piece_tokens: list[int]
    image_tokens: list[int]
    tiles: list[int]

    @property
    def text_length(self) -> int:
        return sum(self.piece_tokens)

    @property
    def image_length(self) -> int:
        return sum(self.image_tokens)

    @property
    def length(self) -> int:
        return self.text_length + self.image_length

    def before_piece(self, p: int) -> int:
        return sum(self.piece_tokens[:p]) + sum(self.image_tokens[:p])

    def image_start(self, m: int) -> int:
        """Token index of context image m's first token (its <img> tag)."""
        return self.before_piece(m) + self.piece_tokens[m]


def measure(blocks: list[str | Item], acc: Accounting) -> Measured:
    parts = [IMAGE_PLACEHOLDER if isinstance(b, Item) else b for b in blocks]
    if parts and not isinstance(blocks[0], Item):
        # The template strips each turn, as the reference does: a context opening with whitespace would
        # otherwise be measured with characters and tokens the encoded sample does not have.
        parts[0] = parts[0].lstrip()
    offsets, at = [], 0
    for part in parts:
        offsets.append(at)
        at += len(part) + len(SEP)
    context = SEP.join(parts)
    images = [b for b, block in enumerate(blocks) if isinstance(block, Item)]
    pieces = context.split(IMAGE_PLACEHOLDER)
    if len(pieces) != len(images) + 1:
        raise ValueError(f"context holds {len(pieces) - 1} image placeholders for {len(images)} images")
    tiles = [acc.tiles(blocks[b]) for b in images]
    return Measured(context=context, offsets=offsets, images=images,
                    piece_tokens=[acc.text_length(p) for p in pieces],
                    image_tokens=[image_token_count(t, acc.tiling) for t in tiles], tiles=tiles)


def text_position(m: Measured, acc: Accounting, block: int) -> int:
    """Token index of the first token of text block `block` in the context's exact measure."""
    p = bisect.bisect_left(m.images, block)  # images before the block = its piece
    start = 0 if p == 0 else m.offsets[m.images[p - 1]] + len(IMAGE_PLACEHOLDER)
    piece_end = len(m.context) if p == len(m.images) else m.offsets[m.images[p]]
    piece = m.context[start:piece_end]
    local = m.offsets[block] - start
    enc = acc.tokenizer.hf(piece, add_special_tokens=False, return_offsets_mapping=True)
    first = next((i for i, (_, end) in enumerate(enc["offset_mapping"]) if end > local), len(enc["input_ids"]))
    return m.before_piece(p) + first
