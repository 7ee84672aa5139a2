"""The published scoring rules, one function per rule, each returning a float in [0, 1].

A rule takes the reply (already cleaned with `clean_reply`: cut at `<|im_end|>`, stripped) and the ground
truth; where a benchmark accepts several answers the rule takes them all and keeps the best. Ground truth
that no reply could ever match (an empty answer list, an option index without a letter, an answer that is
not among its choices) raises ValueError naming the field: such a record is broken, not a wrong reply.

Where the benchmark's own code has a quirk, the rule either keeps it (so our numbers stay comparable with
published ones) or departs from it; each departure is named in the rule's docstring.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from .normalize import MMNIAH_NUMBERS, has_word, milebench_normalize, vqa_normalize

END_OF_TURN = "<|im_end|>"


def clean_reply(text: str) -> str:
    """A generated reply as every scorer sees it: cut at the first `<|im_end|>`, stripped."""
    return text.split(END_OF_TURN, 1)[0].strip()


def _answers(answers: str | Sequence[str], field: str = "answers") -> list[str]:
    out = [answers] if isinstance(answers, str) else [str(a) for a in answers]
    if not out:
        raise ValueError(f"{field}: no ground-truth answer to score against")
    return out


# ------------------------------------------------------------------------------------------ edit distance


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def anls_longvqa(prediction: str, answers: str | Sequence[str]) -> float:
    """Long-VQA's ANLS: lowercase; nld = edit distance / longer length; 1 - nld when nld < 0.5, else 0;
    best over the answers. Two empty strings are equal (nld 0). At nld exactly 0.5 this scores 0, the
    official DocVQA scorer (`anls_official`) scores 0.5."""
    pred = prediction.lower()
    best = 0.0
    for gt in _answers(answers):
        gt = gt.lower()
        longest = max(len(gt), len(pred))
        nld = levenshtein(gt, pred) / longest if longest else 0.0
        best = max(best, 1.0 - nld if nld < 0.5 else 0.0)
    return best


def anls_official(prediction: str, answers: str | Sequence[str]) -> float:
    """The DocVQA / InfoVQA scorer: distance between stripped, lowercased, whitespace-collapsed strings,
    divided by the longer of the strings as given (as the official code does); 1 - the smallest nld over
    the answers, zeroed below 0.5, so nld exactly 0.5 keeps 0.5. Two empty strings score 1."""
    pred = " ".join(prediction.strip().lower().split())
    nlds = []
    for gt in _answers(answers):
        longest = max(len(gt), len(prediction))
        nlds.append(levenshtein(" ".join(gt.strip().lower().split()), pred) / longest if longest else 0.0)
    score = 1.0 - min(nlds)
    return score if score >= 0.5 else 0.0


# ------------------------------------------------------------------------------------------ accuracy

_NUMBER = re.compile(r"^([$€£¥]?)\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?)\s*(%|[a-z°²³/]+)?$")
_GROUPED = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def to_number(text: str) -> float | None:
    """The value of a numeric answer, or None: a currency sign before it and a unit word after it are
    ignored ("$1,200" -> 1200, "12 kg" -> 12), a trailing "%" divides by 100 ("45%" -> 0.45)."""
    m = _NUMBER.match(_GROUPED.sub("", text.strip().lower()))
    if not m:
        return None
    value = float(m.group(2))
    return value / 100 if m.group(3) == "%" else value


def relaxed_accuracy(prediction: str, answers: str | Sequence[str], tolerance: float = 0.05) -> float:
    """ChartQA's relaxed accuracy: a numeric answer is right within `tolerance` relative error (5 %,
    inclusive); a non-numeric one, or a zero target (no relative error exists), needs the same string up
    to case. Best over the answers."""
    pred_value = to_number(prediction)
    for gt in _answers(answers):
        target = to_number(gt)
        if pred_value is not None and target:
            if abs(pred_value - target) / abs(target) <= tolerance:
                return 1.0
        elif prediction.lower() == gt.lower():
            return 1.0
    return 0.0


def exact_match(prediction: str, answers: str | Sequence[str]) -> float:
    return float(prediction in _answers(answers))


def vqa_accuracy(prediction: str, answers: str | Sequence[str]) -> float:
    """VQA accuracy, official form: min(#other annotators who gave the reply / 3, 1), averaged over the
    n leave-one-out subsets of the n human answers (10 choose 9 for VQA / TextVQA). Reply and answers are
    VQA-normalised (always, as TextVQA's evaluator does). With a single answer there is no subset to
    average over; the rule degrades to normalised equality."""
    gts = [vqa_normalize(a) for a in _answers(answers)]
    pred = vqa_normalize(prediction)
    if len(gts) == 1:
        return float(pred == gts[0])
    hits = sum(gt == pred for gt in gts)
    # leaving out a matching answer leaves hits - 1 matches, leaving out another leaves hits
    return (hits * min(1.0, (hits - 1) / 3) + (len(gts) - hits) * min(1.0, hits / 3)) / len(gts)


# ------------------------------------------------------------------------------------------ MM-NIAH


def _mmniah_simplify(text: str) -> str:
    """MM-NIAH's reply parsing: lowercase, drop "the answer is" and "*", then, only if a period remains,
    cut at it and drop commas (the official code drops commas inside that branch only: "B," stays "b,")."""
    text = text.lower().replace("the answer is", "").replace("*", "")
    if "." in text:
        text = text.split(".")[0].replace(",", "").strip()
    return text.strip()


def mmniah_option(prediction: str, answer: int) -> float:
    """An option index: a digit reply compares as the index itself; otherwise the parsed reply must be
    the single letter with ord(r) - ord('a') == answer ("The answer is B." -> "b" -> 1). MM-NIAH's
    letters stop at Z (its prompt would print "[" for a 27th option), so an index past 25 is refused."""
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < 26:
        raise ValueError(f"answer: an MM-NIAH option index is an int in [0, 26), got {answer!r}")
    reply = prediction.strip(".")
    if reply.isascii() and reply.isdigit():
        return float(int(reply) == answer)
    reply = _mmniah_simplify(reply)
    return float(len(reply) == 1 and ord(reply) - ord("a") == answer)


def _values(parsed: dict) -> list:
    """A dict reply's values in order, list values spliced in ({"a": [1], "b": 2} -> [1, 2]). MM-NIAH
    concatenates list values only and scores any scalar value 0 (its sum raises); we take scalars too."""
    out: list = []
    for value in parsed.values():
        out.extend(value if isinstance(value, list) else [value])
    return out


def mmniah_list(prediction: str, answer: Sequence) -> float:
    """A list (counts, or an order): code fences and the word "json" removed, the rest parsed as JSON, a
    dict becomes its values; the score is the matches position by position over zip(reply, answer),
    divided by len(answer): a short reply loses its missing positions, extra entries are ignored (as in
    MM-NIAH). A JSON true does not count as 1. An empty answer is matched only by an empty list."""
    reply = prediction.strip(".").replace("json", "").replace("```", "").strip()
    try:
        parsed = json.loads(reply)
    except (ValueError, RecursionError):
        return 0.0
    if isinstance(parsed, dict):
        parsed = _values(parsed)
    if not isinstance(parsed, list):
        return 0.0
    if not answer:
        return float(parsed == [])
    matches = sum(type(r) is not bool and r == a for r, a in zip(parsed, answer))
    return matches / len(answer)


def mmniah_text(prediction: str, answer: str) -> float:
    """A string: equal after MM-NIAH's reply parsing -> 1; else the VQA-normalised answer must occur in
    the VQA-normalised reply as whole words ("It is not mentioned" holds "not mentioned"). An answer that
    normalises to nothing (say "the") can only match by equality, never by containment."""
    reply = prediction.strip(".")
    if _mmniah_simplify(reply) == _mmniah_simplify(answer):
        return 1.0
    gt = vqa_normalize(answer, MMNIAH_NUMBERS)
    return float(bool(gt) and has_word(vqa_normalize(reply, MMNIAH_NUMBERS), gt))


def mmniah_score(prediction: str, answer: int | list | str) -> float:
    """MM-NIAH's `is_correct`, dispatched on the answer's type."""
    if isinstance(answer, list):
        return mmniah_list(prediction, answer)
    if isinstance(answer, int) and not isinstance(answer, bool):
        return mmniah_option(prediction, answer)
    if isinstance(answer, str):
        return mmniah_text(prediction, answer)
    raise ValueError(f"answer: expected int, list or str, got {type(answer).__name__}")


# ------------------------------------------------------------------------------------------ MileBench


def option_letter(index: int) -> str:
    """MileBench's (V2PE's) option letters: A..Z, then AA..AZ, BA..BZ, and so on."""
    if index < 0:
        raise ValueError(f"option index must be >= 0, got {index}")
    if index < 26:
        return chr(ord("A") + index)
    return option_letter(index // 26 - 1) + chr(ord("A") + index % 26)


def match_option(reply: str, options: dict[str, str]) -> str | None:
    """The option letter a normalised reply picks, MileBench's way, or None.

    1. "letter + option text" anywhere ("a blastomycosis"): the leftmost match wins;
    2. an option's text anywhere, spaces removed on both sides;
    3. the bare letter (one or two characters: "b", "ab");
    4. else every character of the reply that is a one-letter option, joined ("option b" -> "B").
    Departures from MileBench's code: an empty reply picks nothing (MileBench picks "C"), step 1 returns
    the whole matched letter (MileBench returns its first character, wrong for AA and beyond), and an
    empty option text never matches (it would match any reply in step 2).
    """
    if not reply:
        return None
    letters = list(options)
    patterns = [re.escape(milebench_normalize(f"{k} {v}")) for k, v in options.items()]
    m = re.search("|".join(f"({p})" for p in patterns), reply, re.S)
    if m:
        return letters[m.lastindex - 1]
    texts = {k: v.replace(" ", "") for k, v in options.items() if v.replace(" ", "")}
    if texts:
        m = re.search("|".join(f"({re.escape(t)})" for t in texts.values()), reply.replace(" ", ""), re.S)
        if m:
            return next(k for k, t in texts.items() if t == m.group(0))
    if len(reply) in (1, 2) and reply.upper() in options:
        return reply.upper()
    return "".join(ch.upper() for ch in reply if ch.upper() in options) or None


def milebench_choice(prediction: str, choices: Sequence[str], answer: str) -> float:
    """MileBench multi-choice: reply, choices and answer normalised; right when the option the reply picks
    (`match_option`) is the answer's letter (the answer is one of the choices; the first equal one)."""
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
