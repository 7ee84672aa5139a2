"""Haystacks: deterministic streams of interleaved documents (`sources.interleaved.Document`).

`SyntheticHaystack` generates document i from (seed, split, i) alone: 3-20 paragraphs of plain ASCII prose
(the business register of `sources/synthetic/text.py`) with 1-6 images between them, each a rendered page,
chart or table of `SyntheticSource` (varied sizes; rendered only when loaded). Document i owns the image
indices 8i..8i+5 of its own synthetic stream, so no two documents share an image. Its prose never contains
the invented needle names of `needles.NAMES` (tested).

`open_haystack(entry, ...)` opens the synthetic haystack or a local interleaved set (`sources.interleaved`).
A haystack has `name`, `split`, `__len__`, `document(i)`, and, when real, `rejected` and `describe()`.
"""

from __future__ import annotations

import dataclasses

from ...records import Item
from ...seeding import stable_rng, stable_seed
from ...sources.interleaved import Document
from ...sources.synthetic import SyntheticSource
from ...sources.synthetic.ids import SPLIT_SIZE
from ...sources.synthetic.text import paragraph

IMAGES_PER_DOC = 8  # index space reserved per document; at most this many images are used
SHAPE_KEYS = ("paragraphs", "sentences", "images")  # a synthetic document's shape, [lo, hi] each
PARAGRAPHS = (3, 20)
IMAGES = (1, 6)
SENTENCES = (2, 6)


class SyntheticHaystack:
    """An effectively endless stream of generated documents; nothing is rendered until an image is loaded."""

    name = "synthetic"

    def __init__(self, split: str = "train", seed: int = 0, image_format: str = "jpg", *,
                 paragraphs: tuple[int, int] = PARAGRAPHS, sentences: tuple[int, int] = SENTENCES,
                 images: tuple[int, int] = IMAGES):
        if images[1] > IMAGES_PER_DOC:
            raise ValueError(f"synthetic haystack: at most {IMAGES_PER_DOC} images a document, got {images}")
        self.split, self.seed = split, int(seed)
        self.paragraphs, self.sentences, self.images = tuple(paragraphs), tuple(sentences), tuple(images)
        # A seed of its own keeps haystack pages apart from any synthetic source a build also uses.
        self._images = SyntheticSource(split=split, seed=stable_seed("long_mr-haystack", seed) % 2**31,
                                       image_format=image_format)

    def __len__(self) -> int:
        return SPLIT_SIZE // IMAGES_PER_DOC

    def __repr__(self) -> str:
        return f"SyntheticHaystack(split={self.split!r}, seed={self.seed})"

    def document(self, index: int) -> Document:
        if not 0 <= index < len(self):
            raise IndexError(f"synthetic haystack: document {index} outside [0, {len(self)})")
        rng = stable_rng("long_mr-haystack-doc", self.seed, self.split, index)
        doc_id = f"haystack-{self.split}-{index:09d}"
        texts = [paragraph(rng, rng.randint(*self.sentences)) for _ in range(rng.randint(*self.paragraphs))]
        n_images = rng.randint(*self.images)
        # Images go into the gaps after paragraphs, so a document opens with text as web pages mostly do.
        gaps = sorted(rng.choices(range(1, len(texts) + 1), k=n_images))
        blocks: list[str | Item] = []
        k = 0
        for p, text in enumerate(texts, 1):
            blocks.append(text)
            while k < n_images and gaps[k] == p:
                item = self._images.item(index * IMAGES_PER_DOC + k)
                blocks.append(dataclasses.replace(item, dataset="synthetic_haystack", doc_id=doc_id,
                                                  question="", answers=("",)))
                k += 1
        return Document(dataset="synthetic_haystack", split=self.split, doc_id=doc_id, blocks=tuple(blocks))

    def describe(self) -> dict:
        shape = {} if (self.paragraphs, self.sentences, self.images) == (PARAGRAPHS, SENTENCES, IMAGES) else {
            "paragraphs": list(self.paragraphs), "sentences": list(self.sentences), "images": list(self.images)}
        return {"kind": "synthetic", "dataset": "synthetic_haystack", "split": self.split, **shape}


def open_haystack(entry: dict, split: str, seed: int, image_format: str = "jpg", strict: bool = False,
                  control=None):
    """The haystack an options entry names (see `options.parse_haystack`); `control` screens a real one's texts."""
    if entry["kind"] == "synthetic":
        shape = {k: tuple(entry[k]) for k in SHAPE_KEYS if k in entry}
        return SyntheticHaystack(split, seed, image_format, **shape)
    from ...sources.interleaved import open_interleaved

    kwargs = {"max_pixels": entry["max_pixels"]} if entry.get("max_pixels") else {}
    return open_interleaved(entry["path"], split, name=entry.get("name", "interleaved"), strict=strict,
                            control=control, **kwargs)
