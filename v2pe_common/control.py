"""Control tokens in text from outside: found, so the row is skipped, or neutralised, so it reads as plain text.

A haystack paragraph, a MileBench context or a foreign InternVL turn that holds `<IMG_CONTEXT>`,
`<|im_start|>` or `</img>` is tokenized to the control token itself: the model then sees an image token
without a feature (training dies with "Image features and image tokens do not match") or a turn boundary
inside the user's turn. Every text that enters a record from outside is checked against the strings the
tokenizer turns into a control id (its special tokens, which include the image tags) and the chat
template's markers; added tokens that are not special are vocabulary and stay.

`skip` (the default) rejects the row, counted as `special_token`. `neutralise` puts a WORD JOINER (U+2060,
invisible) after each marker's first character, so the tokenizer no longer matches it; a replacement that
still yields a control id (a normalizer that drops the joiner) falls back to a plain space, and one that
still does is refused when the policy is made.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from .template import TEMPLATE_MARKERS
from .tokenizer import IMAGE_TOKENS, TextTokenizer

REASON = "special_token"
MODES = ("skip", "neutralise")
_JOINERS = ("\u2060", " ")


class ControlTokenError(ValueError):
    """A text holds a control token (`token`) and the policy is to skip it."""

    def __init__(self, where: str, token: str):
        super().__init__(f"{where} holds the control token {token!r}, which would tokenize as the token itself")
        self.where, self.token = where, token


@dataclass(frozen=True)
class ControlTokens:
    """The markers a text must not hold (longest first) and what to do with one: skip or neutralise."""

    markers: tuple[str, ...]
    mode: str = "skip"
    replacements: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"control_tokens: choose one of {list(MODES)}, got {self.mode!r}")

    @functools.cached_property
    def _pattern(self) -> re.Pattern | None:
        return re.compile("|".join(map(re.escape, self.markers))) if self.markers else None

    def find(self, text: str) -> str | None:
        """The first marker in `text`, or None."""
        if self._pattern is None or not isinstance(text, str):
            return None
        hit = self._pattern.search(text)
        return None if hit is None else hit.group()

    def neutralise(self, text: str) -> str:
        """`text` with every marker broken by an invisible joiner (the text is unchanged when it holds none)."""
        if self.find(text) is None:
            return text
        for _ in range(4):  # a replacement can complete another marker only in contrived cases
            text = self._pattern.sub(lambda m: self.replacements.get(m.group(), m.group()[0] + _JOINERS[0]
                                                                     + m.group()[1:]), text)
            if self.find(text) is None:
                return text
        raise ValueError("cannot neutralise the control tokens of a text: a replacement forms another one")

    def apply(self, text: str, where: str) -> str:
        """The text to keep: as is, or neutralised; ControlTokenError when it holds a marker and mode is skip."""
        token = self.find(text)
        if token is None:
            return text
        if self.mode == "skip":
            raise ControlTokenError(where, token)
        return self.neutralise(text)

    def apply_turns(self, conversations, where: str = "conversations"):
        """`apply` on every turn's value; returns the (maybe neutralised) turns, a new list when any changed."""
        out, changed = [], False
        for i, turn in enumerate(conversations):
            value = turn.get("value") if isinstance(turn, dict) else None
            if isinstance(value, str):
                new = self.apply(value, f"{where}[{i}].value")
                if new is not value:
                    turn, changed = {**turn, "value": new}, True
            out.append(turn)
        return out if changed else conversations


def markers_of(tokenizer: TextTokenizer) -> tuple[str, ...]:
    """Every string the tokenizer turns into a control id, plus the chat templates' markers, longest first.

    Added tokens that are not special are vocabulary (a word added whole, as the δ experiment adds its needle
    names): text holding one is ordinary text, so they are no markers.
    """
    hf = tokenizer.hf
    special = {t.content for t in getattr(hf, "added_tokens_decoder", {}).values() if getattr(t, "special", True)}
    found = special | set(getattr(hf, "all_special_tokens", ())) | set(TEMPLATE_MARKERS)
    found |= set(IMAGE_TOKENS)
    return tuple(sorted((m for m in found if isinstance(m, str) and m.strip()), key=lambda m: (-len(m), m)))


def control_tokens(tokenizer: TextTokenizer, mode: str = "skip") -> ControlTokens:
    """The policy for one tokenizer. For `neutralise`, each marker's replacement is checked once to tokenize
    to no control id; ValueError names a marker no replacement neutralises."""
    markers = markers_of(tokenizer)
    if mode != "neutralise":
        return ControlTokens(markers, mode)
    hf = tokenizer.hf
    control_ids = {hf.convert_tokens_to_ids(m) for m in markers} | set(getattr(hf, "all_special_ids", ()))
    probe = ControlTokens(markers, "skip")
    replacements = {}
    for marker in markers:
        for joiner in _JOINERS:
            rep = marker[0] + joiner + marker[1:]
            if probe.find(rep) is None and not control_ids & set(tokenizer.encode(rep)):
                replacements[marker] = rep
                break
        else:
            raise ValueError(f"control_tokens: neutralise: no replacement of {marker!r} tokenizes as plain text "
                             f"with tokenizer {tokenizer.name!r}; use skip")
    return ControlTokens(markers, mode, replacements)
