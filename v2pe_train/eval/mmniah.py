"""MM-NIAH's reply rules in their two published forms, selected by `style`.

- `official`: MM-NIAH's `calculate_scores.py:is_correct` (OpenGVLab/MM-NIAH), which produced the benchmark's
  leaderboard. A str answer is VQA-normalised containment only.
- `v2pe`: V2PE's fork of it (`eval/mm_niah/calculate_scores.py:is_correct` in OpenGVLab/V2PE), which produced
  V2PE's MM-NIAH numbers: a str reply and answer are first cut at their first "." and compared exactly
  ("3.7" and "3.5" both become "3": equal), then compared with its own VQA normalisation; an option reply
  "left" / "right" means A / B.

Both: the reply loses surrounding periods; an int answer is an option index (a digit reply compares as the
index, else the parsed reply must be the one letter chr(ord('a') + index)); a list answer is matched position
by position against the reply parsed as JSON, over zip(reply, answer), divided by len(answer). Python's
equality decides a position, as in the reference: 1.0 and true both equal 1.

Where the reference would crash, we raise ValueError naming the field (an empty answer list, an answer of
another type, an option index outside A..Z) or score 0 (a reply of digits int() cannot read, like "²").
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from .normalize import MMNIAH_NUMBERS, has_word, v2pe_vqa_normalize, vqa_normalize

STYLES = ("official", "v2pe")


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"style: choose one of {list(STYLES)}, got {style!r}")


def _simplify(text: str, *, final_strip: bool = True) -> str:
    """Lowercase, drop "the answer is" and "*", then, only if a period remains, cut at it, drop commas and
    strip (commas survive without a period: "B," stays "b,"). V2PE's answer side skips the final strip."""
    text = text.lower().replace("the answer is", "").replace("*", "")
    if "." in text:
        text = text.split(".")[0].replace(",", "").strip()
    return text.strip() if final_strip else text


def option(prediction: str, answer: int, style: str = "official") -> float:
    """An option index, A = 0. The camera replies of MM-NIAH's image tasks map to A and B; V2PE also maps
    a bare "left" / "right"."""
    _check_style(style)
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < 26:
        raise ValueError(f"answer: an MM-NIAH option index is an int in [0, 26), got {answer!r}")
    reply = prediction.strip(".")
    if reply.isdigit():
        try:
            return float(int(reply) == answer)
        except ValueError:  # "²" is a digit int() cannot read: the reference crashes here
            return 0.0
    reply = _simplify(reply)
    if reply == "none":
        return 0.0
    if "the camera is moving left" in reply or (style == "v2pe" and reply == "left"):
        reply = "a"
    elif "the camera is moving right" in reply or (style == "v2pe" and reply == "right"):
        reply = "b"
    return float(len(reply) == 1 and ord(reply) - ord("a") == answer)


def counts(prediction: str, answer: Sequence) -> float:
    """A list: the word "json" and code fences removed, the rest parsed as JSON; a dict becomes its list
    values concatenated (a scalar value makes the reply unreadable: 0); the matches over zip(reply, answer)
    over len(answer): a short reply loses its missing positions, extra entries are ignored."""
    if not answer:
        raise ValueError("answer: an empty list cannot be scored (MM-NIAH divides by its length)")
    reply = prediction.strip(".").replace("json", "").replace("```", "").strip()
    try:
        parsed = json.loads(reply)
    except (ValueError, RecursionError):
        return 0.0
    if isinstance(parsed, dict):
        values = list(parsed.values())
        if not all(isinstance(v, list) for v in values):
            return 0.0  # sum(values, start=[]) raises on a scalar; the reference scores 0
        parsed = [x for v in values for x in v]
    if not isinstance(parsed, list):
        return 0.0
    return sum(r == a for r, a in zip(parsed, answer)) / len(answer)


def text(prediction: str, answer: str, style: str = "official") -> float:
    """A string answer: normalised whole-word containment of the answer in the reply (`official`); V2PE
    first compares both cut at their first period, then uses its own normalisation."""
    _check_style(style)
    reply = prediction.strip(".")
    if style == "official":
        return float(has_word(vqa_normalize(reply, MMNIAH_NUMBERS), vqa_normalize(answer, MMNIAH_NUMBERS)))
    if _simplify(reply) == _simplify(answer, final_strip=False):
        return 1.0
    return float(has_word(v2pe_vqa_normalize(reply), v2pe_vqa_normalize(answer)))


def score(prediction: str, answer, style: str = "official") -> float:
    """MM-NIAH's `is_correct`, dispatched on the answer's type as the reference does."""
    if isinstance(answer, list):
        return counts(prediction, answer)
    if isinstance(answer, int) and not isinstance(answer, bool):
        return option(prediction, answer, style)
    if isinstance(answer, str):
        return text(prediction, answer, style)
    raise ValueError(f"answer: expected int, list or str, got {type(answer).__name__}")


def max_new_tokens(task: str, style: str = "official") -> int:
    """The reply budget of MM-NIAH's `eval_internvl.py` (32 for a counting task, else 16) or V2PE's
    `eval_mm_niah.py` (320 for counting, else 16); `task` is the task file's name (or our subset)."""
    _check_style(style)
    if "counting" in task:
        return 32 if style == "official" else 320
    return 16
