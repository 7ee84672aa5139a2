"""The unit every source yields: one question about one image, with provenance and lazily loaded bytes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Item:
    """A VQA item. `load()` returns the encoded image bytes: as the source encoded them, except that
    high-bit-depth images (16-bit PNGs) come as their 8-bit PNG re-encoding (`v2pe_common.images.to_rgb`)
    so that no reader clips them to white.

    Width and height are known without decoding, so planning and token counting never touch pixels.
    `doc_id` groups items that come from one document: a sample never mixes two items of one doc_id
    unless they are the same item.
    """

    dataset: str
    split: str
    id: str
    doc_id: str
    width: int
    height: int
    ext: str  # "jpg" | "png" | "webp": the format of load()'s bytes
    question: str
    answers: tuple[str, ...]
    load: Callable[[], bytes] = field(compare=False, repr=False)
    # Words that name this document uniquely inside a long sample ("the invoice INV-20931"),
    # so a question about it stays answerable among distractors.
    title: str = ""
    question_type: str = ""

    def provenance(self, role: str) -> dict:
        return {"dataset": self.dataset, "split": self.split, "id": self.id, "doc_id": self.doc_id, "role": role}
