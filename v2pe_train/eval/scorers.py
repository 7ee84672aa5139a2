"""The published scoring rules, one function per rule, each returning a float in [0, 1].

A rule takes the reply (already cleaned with `clean_reply`: cut at `<|im_end|>`, stripped) and the ground
truth; where a benchmark accepts several answers the rule takes them all and keeps the best. Ground truth
that no reply could ever match (an empty answer list, an option index without a letter, an answer that is
not among its choices) raises ValueError naming the field: such a record is broken, not a wrong reply.

Where the benchmark's own code has a quirk, the rule either keeps it (so our numbers stay comparable with
published ones) or departs from it; each departure is named in the rule's docstring.
"""

from __future__ import annotations

from collections.abc import Sequence

from .normalize import vqa_normalize

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


def _plain_float(text: str) -> float | None:
    """A number as the ChartQA reference reads one: Python's float() of the text, a trailing "%" dividing
    by 100; anything float() refuses ("1,200", "$12", "12 kg") is no number. float() itself accepts
    "nan", "inf", " 12 " and "1_000", and so does the reference."""
    try:
        return float(text.rstrip("%")) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        return None


def relaxed_correctness(target: str, prediction: str, tolerance: float = 0.05) -> bool:
    """ChartQA's relaxed correctness (pix2struct `metrics.py:relaxed_correctness`, which the ChartQA paper's
    numbers use): when the prediction is a number and the target a non-zero number, right within
    `tolerance` of the target (inclusive; NaN never is); otherwise equal strings up to case."""
    pred, gold = _plain_float(prediction), _plain_float(target)
    if pred is not None and gold:
        return abs(pred - gold) / abs(gold) <= tolerance
    return prediction.lower() == target.lower()


def chartqa_relaxed(prediction: str, answers: str | Sequence[str], style: str = "official") -> float:
    """Best relaxed correctness over the answers. `official`: relaxed_correctness(answer, prediction).
    `v2pe`: InternVL's and V2PE's `evaluate_vqa.py` call it with the prediction first, so the tolerance is
    relative to the prediction (gold 100, prediction 95.2: 4.8 / 95.2 = 5.04 %, wrong there)."""
    if style not in ("official", "v2pe"):
        raise ValueError(f"style: choose one of ['official', 'v2pe'], got {style!r}")
    for gt in _answers(answers):
        args = (gt, prediction) if style == "official" else (prediction, gt)
        if relaxed_correctness(*args):
            return 1.0
    return 0.0


def longvqa_relaxed(prediction: str, answers: str | Sequence[str]) -> float:
    """Long-VQA's relaxed accuracy (V2PE `eval/longvqa/owl_scorer.py:relaxed_accuracy`, target first): as
    ChartQA's, except that a prediction of 0 also falls back to string equality (it could never be within
    5 % of a non-zero target anyway). Best over the answers."""
    for gt in _answers(answers):
        pred, gold = _plain_float(prediction), _plain_float(gt)
        if pred and gold:
            if abs(pred - gold) / abs(gold) <= 0.05:
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
