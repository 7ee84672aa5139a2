"""`SyntheticSource`: an effectively endless, deterministic stream of rendered documents with exact answers."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from ...records import Item
from .ids import SPLIT_SIZE, document_code, item_rng
from .questions import ask
from .render import FORMATS, encode
from .sampling import draw_spec
from .spec import KIND_WEIGHTS, KINDS, Spec


class SyntheticSource:
    """Items are generated on demand from (seed, split, index); nothing is stored or rendered up front.

    `item(index)` draws a spec and a question (microseconds, no pixels); the image is rendered and
    encoded only when the item's `load()` is called, and the same (seed, split, index) always gives
    the same bytes. Different splits never share a document identifier, so they are disjoint.
    """

    name = "synthetic"

    def __init__(self, split: str = "train", seed: int = 0, kinds: Sequence[str] | None = None,
                 image_format: str = "jpg"):
        if image_format not in FORMATS:
            raise ValueError(f"synthetic: image_format must be one of {FORMATS}, got {image_format!r}")
        kinds = tuple(KINDS if kinds is None else kinds)
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown or not kinds:
            raise ValueError(f"synthetic: unknown or empty kinds {unknown or list(kinds)}; known: {list(KINDS)}")
        self.split = split
        self.seed = int(seed)
        self.kinds = tuple(k for k in KINDS if k in kinds)  # canonical order: the draw must not depend on input order
        self.image_format = image_format
        self._weights = [KIND_WEIGHTS[k] for k in self.kinds]

    def __len__(self) -> int:
        return SPLIT_SIZE

    def __repr__(self) -> str:
        return f"SyntheticSource(split={self.split!r}, seed={self.seed}, kinds={list(self.kinds)})"

    def _draw(self, index: int):
        if not 0 <= index < SPLIT_SIZE:
            raise IndexError(f"synthetic: index {index} outside [0, {SPLIT_SIZE})")
        rng = item_rng(self.seed, self.split, index)
        kind = rng.choices(self.kinds, weights=self._weights)[0]
        spec = draw_spec(rng, kind, document_code(self.seed, self.split, index))
        return spec, ask(spec, rng)

    def spec(self, index: int) -> Spec:
        """The document behind item(index): what its image shows and its answers are computed from."""
        return self._draw(index)[0]

    def item(self, index: int) -> Item:
        spec, q = self._draw(index)
        key = f"synthetic-{self.split}-{index:09d}"
        return Item(
            dataset=self.name,
            split=self.split,
            id=key,
            doc_id=key,
            width=spec.width,
            height=spec.height,
            ext=self.image_format,
            question=q.text,
            answers=q.answers,
            # A partial of module-level functions pickles, so items can cross process boundaries.
            load=functools.partial(encode, spec, self.image_format),
            title=spec.title,
            question_type=f"{spec.kind}/{q.type}",
        )
