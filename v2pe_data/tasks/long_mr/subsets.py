"""The eight Long-MR subsets: what each inserts, asks and answers, decided before the haystack is drawn.

A `Design` lists its needles in order of appearance with target depths (nondecreasing), so the answer
is known up front; planning places them at those depths without reordering. Answers:

| subset                      | needles                                         | answer                              |
|-----------------------------|-------------------------------------------------|-------------------------------------|
| text_retrieval              | one fact sentence                               | str, the fact's value               |
| text_retrieval_fake         | none ("absent") or the same fact about another  | str, "not mentioned"                |
|                             | invented name ("near_miss")                     |                                     |
| text_counting               | N statements "There are n X in the NAME Y."     | list[int], the counts in order      |
| text_reasoning              | N "NAME has n X." sentences                     | str: their sum, or who has the most |
| image_retrieval             | a picture pasted into one haystack image, or    | int, index of the matching choice   |
|                             | inserted on its own; 4 choice pictures          | picture                             |
| image_counting              | one picture pasted 1-3 times into each of N     | list[int], copies per carrying      |
|                             | haystack images                                 | image, in image order               |
| image_reasoning_jigsaw      | one image cut into N horizontal strips placed   | list[int], each strip's position    |
|                             | shuffled through the context                    | from the top (1-based), in order    |
| image_reasoning_colour_pair | N >= 3 shapes pasted into N images; exactly two | int, index of the text choice       |
|                             | share a colour                                  | naming those two shapes             |
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ...records import Item
from . import needles as nd
from .pictures import CHOICE_SIDE, COLOURS, SHAPES, Picture, crop_piece, picture_png, strip_boxes

NUM_CHOICES = 4
MAX_PIECES = 6
MIN_PIECE_HEIGHT = 64


@dataclass(slots=True)
class Insert:
    """A needle placed between two blocks of the context: a sentence, or an image of its own."""

    depth: float
    text: nd.TextNeedle | None = None
    item: Item | None = None
    info: dict = field(default_factory=dict)  # for the record's meta (what the image shows)


@dataclass(slots=True)
class Paste:
    """Pictures pasted into one haystack image, the one starting closest to `depth`."""

    depth: float
    pictures: list[Picture]


@dataclass(slots=True)
class Design:
    subset: str
    question: str
    answer: str | int | list
    inserts: list[Insert] = field(default_factory=list)
    pastes: list[Paste] = field(default_factory=list)
    keys: dict[str, int] = field(default_factory=dict)  # invented word -> occurrences the context must hold
    choices: list[str] | None = None
    choice_items: list[Item] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # subset-specific facts for the meta

    def reserve_exclude(self) -> set[str]:
        """Documents the haystack must not use: those a needle image was taken from."""
        return {i.item.doc_id for i in self.inserts if i.item is not None}


@dataclass(frozen=True)
class DesignContext:
    sample_id: str
    split: str
    num_needles: tuple[int, int]
    needle_image: Callable[[random.Random], Item]  # a whole image for the jigsaw, not from the haystack


def spread(rng: random.Random, k: int, depth: float | None) -> list[float]:
    """k sorted depths: uniform when `depth` is None, else drawn around it with mean exactly `depth`."""
    u = [rng.random() for _ in range(k)]
    if depth is None:
        return sorted(u)
    if k == 1:
        return [depth]
    mean = sum(u) / k
    dev = [x - mean for x in u]
    scale = 1.0
    for x in dev:  # shrink the spread until every depth stays in [0, 1]
        if x > 0:
            scale = min(scale, (1.0 - depth) / x)
        elif x < 0:
            scale = min(scale, depth / -x)
    return sorted(min(1.0, max(0.0, depth + scale * x)) for x in dev)


def _picture_item(ctx: DesignContext, tag: str, picture: Picture) -> Item:
    pid = f"{ctx.sample_id}-{tag}"
    return Item(dataset="long_mr_pictures", split=ctx.split, id=pid, doc_id=pid, width=CHOICE_SIDE,
                height=CHOICE_SIDE, ext="png", question="", answers=("",), title=picture.name,
                load=functools.partial(picture_png, picture, CHOICE_SIDE))


def _all_pictures() -> list[Picture]:
    return [Picture(s, c) for s in SHAPES for c in COLOURS]


def _picture_choices(rng: random.Random, ctx: DesignContext, needle: Picture) -> tuple[list[Item], int]:
    others = rng.sample([p for p in _all_pictures() if p != needle], NUM_CHOICES - 1)
    answer = rng.randrange(NUM_CHOICES)
    options = others[:answer] + [needle] + others[answer:]
    return [_picture_item(ctx, f"choice{j}", p) for j, p in enumerate(options)], answer


def _count(rng: random.Random, ctx: DesignContext, lo: int = 1, hi: int | None = None) -> int:
    k = rng.randint(*ctx.num_needles)
    return max(lo, min(hi or k, k))


# ------------------------------------------------------------------------------------------ text


def text_retrieval(rng, ctx, depth):
    (name,) = nd.draw_names(rng, 1)
    needle, question, answer = nd.retrieval(rng, name)
    return Design("text_retrieval", question, answer, inserts=[Insert(spread(rng, 1, depth)[0], text=needle)],
                  keys={name: 1})


def text_retrieval_fake(rng, ctx, depth):
    asked, other = nd.draw_names(rng, 2)
    kind = rng.choice(("absent", "near_miss"))
    found, question, answer = nd.retrieval_fake(rng, asked, other, kind)
    at = spread(rng, 1, depth)[0]
    keys = {asked: 0, **({other: 1} if found else {})}
    return Design("text_retrieval_fake", question, answer, inserts=[Insert(at, text=n) for n in found], keys=keys,
                  extra={"fake_kind": kind, "depth_if_absent": at})


def text_counting(rng, ctx, depth):
    k = _count(rng, ctx)
    (name,) = nd.draw_names(rng, 1)
    found, question, counts = nd.counting(rng, name, k)
    depths = spread(rng, k, depth)
    return Design("text_counting", question, counts, inserts=[Insert(d, text=n) for d, n in zip(depths, found)],
                  keys={name: k})


def text_reasoning(rng, ctx, depth):
    k = _count(rng, ctx, lo=2)
    names = nd.draw_names(rng, k)
    found, question, answer, kind = nd.reasoning(rng, names)
    depths = spread(rng, k, depth)
    return Design("text_reasoning", question, answer, inserts=[Insert(d, text=n) for d, n in zip(depths, found)],
                  keys={n: 1 for n in names}, extra={"reasoning_kind": kind})


# ------------------------------------------------------------------------------------------ image


def image_retrieval(rng, ctx, depth):
    needle = rng.choice(_all_pictures())
    items, answer = _picture_choices(rng, ctx, needle)
    at = spread(rng, 1, depth)[0]
    placement = rng.choice(("pasted", "standalone"))
    question = ("One of the images above shows a small framed picture (pasted into it, or as an image of its "
                "own). Which of the following pictures is it?")
    design = Design("image_retrieval", question, answer, choice_items=items,
                    extra={"placement": placement, "picture": needle.name})
    if placement == "pasted":
        design.pastes = [Paste(at, [needle])]
    else:
        item = _picture_item(ctx, "needle0", needle)
        design.inserts = [Insert(at, item=item, info={"description": needle.name})]
    return design


def image_counting(rng, ctx, depth):
    picture = rng.choice(_all_pictures())
    k = _count(rng, ctx)
    copies = [rng.randint(1, 3) for _ in range(k)]
    question = (f"A small framed picture of {picture.with_article} was pasted into some of the images above, possibly "
                f"several times into one image. For each image that contains it, in order, how many copies does "
                f"it hold? Answer with a list such as [1, 3].")
    pastes = [Paste(d, [picture] * c) for d, c in zip(spread(rng, k, depth), copies)]
    return Design("image_counting", question, copies, pastes=pastes, extra={"picture": picture.name})


def image_reasoning_jigsaw(rng, ctx, depth):
    source = ctx.needle_image(rng)
    k = _count(rng, ctx, lo=2, hi=max(2, min(MAX_PIECES, source.height // MIN_PIECE_HEIGHT)))
    boxes = strip_boxes(source.width, source.height, k)
    order = list(range(k))
    while order == sorted(order):  # shuffled for real: the identity would give the answer away
        rng.shuffle(order)
    inserts = []
    for d, strip in zip(spread(rng, k, depth), order):
        x0, y0, x1, y1 = boxes[strip]
        piece = Item(dataset=source.dataset, split=source.split, id=f"{source.id}#strip{strip + 1}of{k}",
                     doc_id=source.doc_id, width=x1 - x0, height=y1 - y0, ext=source.ext, question="",
                     answers=("",), load=functools.partial(crop_piece, source.load, boxes[strip], source.ext))
        inserts.append(Insert(d, item=piece, info={"description": f"strip {strip + 1} of {k} from the top",
                                                   "piece": strip + 1, "source_box": list(boxes[strip])}))
    question = (f"The context contains {k} pieces of one picture, cut into horizontal strips and shuffled. In "
                f"order of appearance, give each piece's position in the original picture, counting from the "
                f"top starting at 1, as a list such as [2, 1, 3].")
    return Design("image_reasoning_jigsaw", question, [s + 1 for s in order], inserts=inserts,
                  extra={"pieces": k, "source": source.provenance("needle"),
                         "source_size": [source.width, source.height]})


def image_reasoning_colour_pair(rng, ctx, depth):
    k = _count(rng, ctx, lo=3, hi=len(SHAPES))
    shapes = rng.sample(SHAPES, k)
    shared, *rest = rng.sample(list(COLOURS), k - 1)
    i, j = sorted(rng.sample(range(k), 2))
    rest_iter = iter(rest)
    colours = [shared if n in (i, j) else next(rest_iter) for n in range(k)]
    pictures = [Picture(s, c) for s, c in zip(shapes, colours)]
    pairs = [(a, b) for a in range(k) for b in range(a + 1, k)]
    wrong = rng.sample([p for p in pairs if p != (i, j)], min(NUM_CHOICES - 1, len(pairs) - 1))
    answer = rng.randrange(len(wrong) + 1)
    options = wrong[:answer] + [(i, j)] + wrong[answer:]
    question = ("Small framed pictures of coloured shapes were pasted into some of the images above. Exactly two "
                "of them have the same colour. Which two shapes are they?")
    pastes = [Paste(d, [p]) for d, p in zip(spread(rng, k, depth), pictures)]
    return Design("image_reasoning_colour_pair", question, answer, pastes=pastes,
                  choices=[f"the {shapes[a]} and the {shapes[b]}" for a, b in options],
                  extra={"shared_colour": shared, "pictures": [p.name for p in pictures]})


DESIGNS = {f.__name__: f for f in (text_retrieval, text_retrieval_fake, text_counting, text_reasoning,
                                   image_retrieval, image_counting, image_reasoning_jigsaw,
                                   image_reasoning_colour_pair)}


def design(subset: str, rng: random.Random, ctx: DesignContext, depth: float | None) -> Design:
    return DESIGNS[subset](rng, ctx, depth)
