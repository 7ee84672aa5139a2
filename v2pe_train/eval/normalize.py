"""Text normalisation of the benchmarks' scorers: VQA (the standard VQA eval's punctuation, number-word,
article and contraction rules), MileBench's `process`, and V2PE's MM-NIAH variant.

Every function is pure and total on strings; they differ on purpose, because each benchmark's published
numbers were computed with its own rules:

- `vqa_normalize`: the VQA eval. Punctuation is deleted when it touches a space (or when the text holds a
  "digit,digit" group anywhere), else replaced by a space; a period is deleted unless a digit follows;
  then lowercase, number words -> digits, articles dropped, apostrophe-less contractions restored. The
  number words differ by benchmark: the VQA/TextVQA eval maps none/zero..ten, MM-NIAH's copy maps
  zero..nineteen and the tens (and not "none"); pass `numbers=MMNIAH_NUMBERS` for MM-NIAH.
- `milebench_normalize`: newlines/tabs -> space, strip, the VQA punctuation rule, strip quotes, lowercase
  (no number words, articles or contractions).
- `v2pe_vqa_normalize`: V2PE's fork of MM-NIAH's rules (fewer punctuation marks, commas and "?" dropped).

Long-VQA's per-source normalisation is `rectify.py`.
"""

from __future__ import annotations

import re

# The contractions the VQA eval restores, in canonical form. Its lookup keys are these forms with any one
# apostrophe removed ("dont", "couldnt've", "couldn'tve"), which `_contraction_keys` regenerates. Not
# regenerated: the forms it lists as identities ("let's", "she's"), its capitalised "I" forms (they never fire
# after lowercasing) and its one backwards entry ("somebody'd" -> "somebodyd"), which does fire and is added
# below; the result equals MM-NIAH's table on every lowercase key (checked beside its utils/tools.py).
_CONTRACTIONS = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't "
    "he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've might've "
    "mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't "
    "shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's "
    "something'd something'd've something'll that's there'd there'd've there're there's they'd they'd've "
    "they'll they're they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's where'd "
    "where's where've who'd who'd've who'll who's who've why'll why're why's won't would've wouldn't "
    "wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've"
).split()


def _contraction_keys(forms: tuple[str, ...] | list[str]) -> dict[str, str]:
    table = {}
    for form in forms:
        for i, ch in enumerate(form):
            if ch == "'":
                table[form[:i] + form[i + 1:]] = form
    return table


# the standard table's one backwards entry that fires after lowercasing, kept so normalised text is identical
CONTRACTIONS = {**_contraction_keys(_CONTRACTIONS), "somebody'd": "somebodyd"}
_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
          "sixteen seventeen eighteen nineteen").split()
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
VQA_NUMBERS = {"none": "0", **{w: str(i) for i, w in enumerate(_UNITS[:11])}}
MMNIAH_NUMBERS = {**{w: str(i) for i, w in enumerate(_UNITS)}, **{w: str(n) for w, n in _TENS.items()}}
ARTICLES = frozenset(("a", "an", "the"))
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!")
_DIGIT_COMMA = re.compile(r"\d,\d")
_PERIOD = re.compile(r"\.(?!\d)")  # a period not followed by a digit ("3.5" keeps its point)


def process_punctuation(text: str, marks: tuple[str, ...] = PUNCTUATION) -> str:
    """The VQA eval's punctuation rule (the decision per mark looks at the original text)."""
    delete_all = _DIGIT_COMMA.search(text) is not None
    out = text
    for p in marks:
        if delete_all or p + " " in text or " " + p in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # the published code passes re.UNICODE (32) where `count` goes: at most 32 periods are removed
    return _PERIOD.sub("", out, count=32)


def process_digit_article(text: str, numbers: dict[str, str] = VQA_NUMBERS) -> str:
    words = [numbers.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def _flatten_space(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_normalize(text: str, numbers: dict[str, str] = VQA_NUMBERS) -> str:
    return process_digit_article(process_punctuation(_flatten_space(text)), numbers)


V2PE_MMNIAH_MARKS = ("/", '"')


def v2pe_vqa_normalize(text: str) -> str:
    """V2PE's MM-NIAH normalisation (`eval/mm_niah/tools.py:VQAEval.evaluate`): lowercase, commas and
    question marks dropped, "'s" split off as a word, then the VQA rules with only "/" and '"' as
    punctuation and MM-NIAH's number words."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return process_digit_article(process_punctuation(_flatten_space(text), V2PE_MMNIAH_MARKS), MMNIAH_NUMBERS)


def milebench_normalize(text: str) -> str:
    return process_punctuation(_flatten_space(text)).strip("'").strip('"').strip().lower()


def has_word(text: str, phrase: str) -> bool:
    """`phrase` occurs in `text` between word boundaries (MM-NIAH's containment test)."""
    return re.search(r"\b" + re.escape(phrase) + r"\b", text) is not None
