"""A conversation with images -> token ids, labels and image spans; or just its exact length.

`encode` (used by the trainer's loader) and `count` (used by the data builder) walk the same pieces, so a
count written into a sample's meta is the loader's sequence length by construction. Image context
tokens are never materialised by `count`: a 1M-token sample costs only its text to count.

Both equal tokenizing the whole expanded string at once (what the reference trainer does). Pieces are cut
where the tokenizer itself may not cut: after "assistant\n" a sentencepiece tokenizer's dummy prefix would
put a "▁" on the answer that the whole string never has, and one that prefixes only the start of its input
reads text after `</img>` differently from the same text alone. So a piece is tokenized after its context,
the text back to the last added token before it, and the context's tokens are taken off again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .template import END_OF_TURN, ChatTemplate
from .tiling import IMAGE_PLACEHOLDER, IMG_END, TilingConfig, image_token_count
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


def end_of_turn_id(tokenizer: TextTokenizer) -> int:
    """The id of the template's end-of-turn marker, which must be one token of `tokenizer` to be masked."""
    ids = tokenizer.encode(END_OF_TURN)
    if len(ids) != 1:
        raise ValueError(f"tokenizer {tokenizer.name!r} spells the end-of-turn marker {END_OF_TURN!r} as {len(ids)} "
                         "tokens, so it cannot be taken out of the targets (train_on_eos: false)")
    return ids[0]


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


def _walk(
    conversations: Sequence[dict], template: ChatTemplate, tokenizer: TextTokenizer
) -> Iterator[tuple[str, str | None, bool, str]]:
    """Yield ("text", text, supervised, context) and ("image", None, False, "") in sequence order.

    `context` is the text before a piece that the piece's tokens depend on ("" when none): from the last
    added token before it (an image ends with `</img>`) or from the start of the sequence.
    """
    before: list[str] = []  # text since the last image, oldest first
    for text, supervised in template.pieces(conversations):
        for j, part in enumerate(text.split(IMAGE_PLACEHOLDER)):
            if j:
                yield "image", None, False, ""
                before = [IMG_END]
            if part:
                yield "text", part, supervised, _context(before, part, tokenizer)
                before.append(part)


def _context(before: list[str], part: str, tokenizer: TextTokenizer) -> str:
    if not before or part.startswith(tokenizer.added_tokens):
        return ""  # the tokenizer cuts here itself
    tail: list[str] = []
    for text in reversed(before):
        at = _last_added_token(text, tokenizer.added_tokens)
        tail.append(text[max(at, 0):])
        if at >= 0:
            break
    context = "".join(reversed(tail))
    if context in tokenizer.added_tokens and tokenizer.restarts_after_added_tokens:
        return ""  # keeps bare pieces as the counting memo's keys, shared with per-piece measures
    return context


def _last_added_token(text: str, tokens: tuple[str, ...]) -> int:
    """Start of the last added token in `text`, or -1. Looks at a growing tail first: a piece usually ends
    with one, and scanning a million-character piece once per added token would cost more than needed."""
    window = 256
    while True:
        start = max(0, len(text) - window)
        # An occurrence found inside the window starts after any that straddles the window's start.
        at = max((text.rfind(t, start) for t in tokens), default=-1)
        if at >= 0 or start == 0:
            return at
        window *= 16


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
    for kind, piece, _, context in _walk(conversations, template, tokenizer):
        if kind == "text":
            # Tokens the context's tokens give up to a merge with the piece are the piece's (see `encode`).
            text += text_length(context + piece) - text_length(context) if context else text_length(piece)
        else:
            image += image_token_count(tiles[k], tiling)
            k += 1
    return TokenCount(text=text, image=image)


def encode(
    conversations: Sequence[dict],
    tiles: Sequence[int],
    tokenizer: TextTokenizer,
    template: ChatTemplate,
    tiling: TilingConfig = TilingConfig(),
    *,
    supervise_prompt: bool = False,
    supervise_end_of_turn: bool = True,
) -> EncodedSample:
    """Token ids and labels for a conversation whose i-th image has tiles[i] tiles.

    Labels cover the assistant replies; with `supervise_prompt` every text token (system and user turns,
    template markers) is a target too, images and BOS never (the trainer's `train_on_prompt`). Without
    `supervise_end_of_turn` no end-of-turn marker is a target (the trainer's `train_on_eos: false`): a reply
    of one token then trains that token alone, and generation no longer learns where to stop.
    """
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

    def retract(ids: list[int]) -> None:
        """Take the last len(ids) text tokens back: the end of a context whose tokens merge with the next piece's."""
        nonlocal length, text_tokens
        taken: list[int] = []
        while len(taken) < len(ids):
            last = chunks[-1]
            k = min(len(ids) - len(taken), last.shape[0])
            taken[:0] = last[last.shape[0] - k:].tolist()
            chunks[-1], label_chunks[-1] = last[:last.shape[0] - k], label_chunks[-1][:last.shape[0] - k]
            if not chunks[-1].shape[0]:
                chunks.pop(), label_chunks.pop()
        if taken != ids:
            raise ValueError(f"tokenizer {tokenizer.name!r}: the tokens before a piece are not its context's tokens "
                             f"{ids} but {taken}; the piece cannot be encoded as part of the whole string")
        length -= len(ids)
        text_tokens -= len(ids)

    if template.add_bos and tokenizer.bos_id is not None:
        emit(np.array([tokenizer.bos_id], dtype=np.int64), False)
        text_tokens += 1
    k = 0
    for kind, piece, supervised, context in _walk(conversations, template, tokenizer):
        if kind == "text":
            ids = tokenizer.encode(context + piece)
            if context:
                head = tokenizer.encode(context)
                same = next((i for i, (a, b) in enumerate(zip(head, ids)) if a != b), min(len(head), len(ids)))
                # Equal heads are the rule; a token spanning the cut goes to the piece, as in the whole string.
                retract(head[same:])
                ids = ids[same:]
            ids = np.asarray(ids, dtype=np.int64)
            text_tokens += ids.shape[0]
            emit(ids, supervised or supervise_prompt)
        else:
            n = tiles[k] * tiling.tokens_per_tile
            ids = np.empty(n + 2, dtype=np.int64)
            ids[0], ids[1:-1], ids[-1] = tokenizer.img_start_id, tokenizer.img_context_id, tokenizer.img_end_id
            image_starts.append(length)
            emit(ids, False)
            k += 1
    input_ids = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    labels = np.concatenate(label_chunks) if label_chunks else np.zeros(0, dtype=np.int64)
    if not supervise_end_of_turn:
        labels[input_ids == end_of_turn_id(tokenizer)] = IGNORE_INDEX
    return EncodedSample(
        input_ids=input_ids,
        labels=labels,
        image_starts=image_starts,
        tiles=list(tiles),
        num_text_tokens=text_tokens,
        num_image_tokens=length - text_tokens,
    )
