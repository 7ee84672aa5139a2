"""A conversation with images -> token ids, labels and image spans; or just its exact length.

`encode` (used by the trainer's loader) and `count` (used by the data builder) walk the same pieces, so a
count written into a sample's meta is the loader's sequence length by construction. Image context
tokens are never materialised by `count`: a 1M-token sample costs only its text to count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .template import ChatTemplate
from .tiling import IMAGE_PLACEHOLDER, TilingConfig
from .tokenizer import TextTokenizer

IGNORE_INDEX = -100


@dataclass(frozen=True, slots=True)
class TokenCount:
    text: int
    image: int

    @property
    def total(self) -> int:
        return self.text + self.image


@dataclass(slots=True)
class EncodedSample:
    input_ids: np.ndarray  # int64 [L]
    labels: np.ndarray  # int64 [L], IGNORE_INDEX where unsupervised
    image_starts: list[int]  # index of each image's <img> token
    tiles: list[int]  # tiles per image, thumbnail included
    num_text_tokens: int
    num_image_tokens: int

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def normalize_conversations(conversations: Sequence[dict], num_images: int) -> list[dict]:
    """Check the placeholder count; a single-image sample without `<image>` gets one prepended (InternVL rule)."""
    found = sum(t.get("value", "").count(IMAGE_PLACEHOLDER) for t in conversations if isinstance(t, dict))
    if found == 0 and num_images == 1 and conversations:
        first = dict(conversations[0])
        first["value"] = f"{IMAGE_PLACEHOLDER}\n{first['value']}"
        return [first, *conversations[1:]]
    if found != num_images:
        raise ValueError(f"conversations: {found} '{IMAGE_PLACEHOLDER}' placeholders but {num_images} images")
    return list(conversations)


def _walk(conversations: Sequence[dict], template: ChatTemplate) -> Iterator[tuple[str, str | None, bool]]:
    """Yield ("text", text, supervised) and ("image", None, False) in sequence order."""
    for text, supervised in template.pieces(conversations):
        parts = text.split(IMAGE_PLACEHOLDER)
        for j, part in enumerate(parts):
            if j:
                yield "image", None, False
            if part:
                yield "text", part, supervised


def count(
    conversations: Sequence[dict],
    tiles: Sequence[int],
    tokenizer: TextTokenizer,
    template: ChatTemplate,
    tiling: TilingConfig = TilingConfig(),
    text_length: Callable[[str], int] | None = None,
) -> TokenCount:
    """Exact sequence length the loader will produce, split into text and image tokens.

    `text_length(piece)` may stand in for `len(tokenizer.encode(piece))` (a memoising counter); it must
    give the same numbers.
    """
    if text_length is None:
        text_length = lambda piece: len(tokenizer.encode(piece))  # noqa: E731
    conversations = normalize_conversations(conversations, len(tiles))
    text = 1 if (template.add_bos and tokenizer.bos_id is not None) else 0
    image = 0
    k = 0
    for kind, piece, _ in _walk(conversations, template):
        if kind == "text":
            text += text_length(piece)
        else:
            image += tiles[k] * tiling.tokens_per_tile + 2
            k += 1
    return TokenCount(text=text, image=image)


def encode(
    conversations: Sequence[dict],
    tiles: Sequence[int],
    tokenizer: TextTokenizer,
    template: ChatTemplate,
    tiling: TilingConfig = TilingConfig(),
) -> EncodedSample:
    """Token ids and labels for a conversation whose i-th image has tiles[i] tiles."""
    conversations = normalize_conversations(conversations, len(tiles))
    chunks: list[np.ndarray] = []
    label_chunks: list[np.ndarray] = []
    image_starts: list[int] = []
    length = 0
    text_tokens = 0

    def emit(ids: np.ndarray, supervised: bool) -> None:
        nonlocal length
        chunks.append(ids)
        label_chunks.append(ids if supervised else np.full(ids.shape, IGNORE_INDEX, dtype=np.int64))
        length += ids.shape[0]

    if template.add_bos and tokenizer.bos_id is not None:
        emit(np.array([tokenizer.bos_id], dtype=np.int64), False)
        text_tokens += 1
    k = 0
    for kind, piece, supervised in _walk(conversations, template):
        if kind == "text":
            ids = np.asarray(tokenizer.encode(piece), dtype=np.int64)
            text_tokens += ids.shape[0]
            emit(ids, supervised)
        else:
            n = tiles[k] * tiling.tokens_per_tile
            ids = np.empty(n + 2, dtype=np.int64)
            ids[0], ids[1:-1], ids[-1] = tokenizer.img_start_id, tokenizer.img_context_id, tokenizer.img_end_id
            image_starts.append(length)
            emit(ids, False)
            k += 1
    input_ids = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    labels = np.concatenate(label_chunks) if label_chunks else np.zeros(0, dtype=np.int64)
    return EncodedSample(
        input_ids=input_ids,
        labels=labels,
        image_starts=image_starts,
        tiles=list(tiles),
        num_text_tokens=text_tokens,
        num_image_tokens=length - text_tokens,
    )
