"""MileBench's scoring rules (MileBench `evaluate.py:Eval`; V2PE's `eval/milebench/evaluate.py` is the same
for every rule used here), quirks included, so our numbers stand beside published MileBench numbers.

Text is normalised with `milebench_normalize` (MileBench's `process`) on both sides. Multi-choice replies
are read by `match_option`, which keeps every behaviour of MileBench's `match_choice`:

- an empty reply picks "C";
- step 1 ("letter + option" anywhere) returns the first character of the match, so past Z ("AA. x") it
  returns "A";
- step 2 (an option's text anywhere, spaces removed) finds the option with the regex-escaped text but then
  compares the match with the escaped text: an option holding a regex character after normalisation
  ("2.5 cups", "$5", "a+b") never matches here, and the reply falls through to steps 3 and 4 (with
  options A-D, "2.5 cups" picks "C" from the letter c of "cups"); an empty option matches every reply;
- step 3: a bare one- or two-letter reply; step 4: every character of the reply that is an option letter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from v2pe_common.choices import option_letter

from .normalize import milebench_normalize

# MileBench's `preprocess_option_string` escapes these, one after the other, in this order
_REGEX_CHARS = ("\\", ".", "^", "$", "*", "+", "?", "{", "}", "[", "]", "|", "(", ")")


def _escaped(option: str) -> str:
    text = milebench_normalize(option)
    for ch in _REGEX_CHARS:
        if ch in text:
            text = text.replace(ch, "\\" + ch)
    return text


def match_option(reply: str, options: dict[str, str]) -> str:
    """The option letter(s) a normalised reply picks, as MileBench's `match_choice` returns them."""
    if reply == "":
        return "C"
    try:
        m = re.search("(" + "|".join(_escaped(f"{k} {v}") for k, v in options.items()) + ")", reply, re.S)
        if m:
            return m.group(0)[0].upper()
        texts = {k: _escaped(v).replace(" ", "") for k, v in options.items()}
        m = re.search("(" + "|".join(texts.values()) + ")", reply.replace(" ", ""), re.S)
        if m:
            for k, t in texts.items():
                if m.group(0).strip() == t:
                    return k.upper()
        if len(reply) in (1, 2) and reply.upper() in options:
            return reply.upper()
    except re.error:  # MileBench catches any error here and returns the reply itself
        return reply
    return "".join(ch.upper() for ch in reply if ch.upper() in options)


def milebench_choice(prediction: str, choices: Sequence[str], answer: str) -> float:
    """Multi-choice: reply, choices and answer normalised; right when the option the reply picks is the
    letter of the first choice equal to the answer."""
    options = [milebench_normalize(c) for c in choices]
    gt = milebench_normalize(answer)
    if gt not in options:
        raise ValueError(f"answer: {answer!r} is not one of the {len(options)} choices")
    picked = match_option(milebench_normalize(prediction), {option_letter(i): o for i, o in enumerate(options)})
    return float(picked == option_letter(options.index(gt)))


def _milebench_gt(answer: str) -> str:
    gt = milebench_normalize(answer)
    if not gt:
        raise ValueError(f"answer: {answer!r} is empty after MileBench normalisation")
    return gt


def milebench_needle(prediction: str, answer: str) -> float:
    """Needle tasks: the normalised answer is one of the normalised reply's whitespace-separated words."""
    return float(_milebench_gt(answer) in milebench_normalize(prediction).split())


def milebench_substring(prediction: str, answer: str) -> float:
    """MMCoQA: the normalised answer occurs anywhere in the normalised reply."""
    return float(_milebench_gt(answer) in milebench_normalize(prediction))


def _lcs(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over whitespace tokens: P = LCS / len(prediction), R = LCS / len(reference). 0 when
    either side is empty."""
    pred, ref = prediction.split(), reference.split()
    common = _lcs(pred, ref) if pred and ref else 0
    if not common:
        return 0.0
    p, r = common / len(pred), common / len(ref)
    return 2 * p * r / (p + r)


def milebench_rouge(prediction: str, answer: str) -> float:
    """MileBench open-ended: ROUGE-L F of the normalised strings; an empty reply scores 0. MileBench's
    `rouge` package splits at periods into sentences and counts distinct words (summary-level ROUGE-L);
    on short single-sentence replies without repeated words the two agree."""
    return rouge_l(milebench_normalize(prediction), _milebench_gt(answer))
