"""Text normalisation of the benchmarks' scorers: VQA (the standard VQA eval's punctuation, number-word,
article and contraction rules), MileBench's `process`, and Long-VQA's `rectify`.

Every function is pure and total on strings; they differ on purpose, because each benchmark's published
numbers were computed with its own rules:

- `vqa_normalize`: the VQA eval. Punctuation is deleted when it touches a space (or when the text holds a
  "digit,digit" group anywhere), else replaced by a space; a period is deleted unless a digit follows;
  then lowercase, number words -> digits, articles dropped, apostrophe-less contractions restored. The
  number words differ by benchmark: the VQA/TextVQA eval maps none/zero..ten, MM-NIAH's copy maps
  zero..nineteen and the tens (and not "none"); pass `numbers=MMNIAH_NUMBERS` for MM-NIAH.
- `milebench_normalize`: newlines/tabs -> space, strip, the VQA punctuation rule, strip quotes, lowercase
  (no number words, articles or contractions).
- `rectify`: Long-VQA's normalisation of both reply and answer. V2PE's `eval/longvqa` code is not public
  in a runnable form; §4 of the reference lists what it normalises and the exact rules here are ours (see
  `rectify`).
"""

from __future__ import annotations

import re

# The contractions the VQA eval restores, in canonical form. Its lookup keys are these forms with any one
# apostrophe removed ("dont", "couldnt've", "couldn'tve"), which `_contraction_keys` regenerates. Left out
# on purpose, to stay identical to the standard table: forms it lists as identities ("let's", "she's") or
# backwards ("somebody'd" -> "somebodyd"), and its capitalised "I" forms, which never fire after lowercasing.
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


CONTRACTIONS = _contraction_keys(_CONTRACTIONS)
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


def process_punctuation(text: str) -> str:
    """The VQA eval's punctuation rule (the decision per mark looks at the original text)."""
    delete_all = _DIGIT_COMMA.search(text) is not None
    out = text
    for p in PUNCTUATION:
        if delete_all or p + " " in text or " " + p in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out)


def process_digit_article(text: str, numbers: dict[str, str] = VQA_NUMBERS) -> str:
    words = [numbers.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def _flatten_space(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_normalize(text: str, numbers: dict[str, str] = VQA_NUMBERS) -> str:
    return process_digit_article(process_punctuation(_flatten_space(text)), numbers)


def milebench_normalize(text: str) -> str:
    return process_punctuation(_flatten_space(text)).strip("'").strip('"').strip().lower()


def has_word(text: str, phrase: str) -> bool:
    """`phrase` occurs in `text` between word boundaries (MM-NIAH's containment test)."""
    return re.search(r"\b" + re.escape(phrase) + r"\b", text) is not None


# ------------------------------------------------------------------------------------------ rectify

_NUMBER_WORDS = {**{w: i for i, w in enumerate(_UNITS)}, **_TENS}
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_TENS) + r")-(" + "|".join(_UNITS[1:10]) + r")\b|\b("
                          + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + r")\b")
_YES_NO = re.compile(r"^(yes|no)(?:[,.;:!]|$)")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NUM = r"-?(?:\d+(?:\.\d+)?|\.\d+)"
_PERCENT = re.compile(rf"({_NUM})\s*(?:%|percent\b|per cent\b)")
_CURRENCY = re.compile(r"[$€£¥](?=\s*-?\.?\d)")
_WITH_UNIT = re.compile(rf"^({_NUM})\s*[a-z°²³/]+(?:\s[a-z°²³/]+)?$")
_FRACTION = re.compile(r"^(-?\d+)\s*/\s*(\d+)$")
_PLAIN_NUMBER = re.compile(rf"^{_NUM}$")
_BRACKETS = re.compile(r"[()\[\]{}]")


def _number_word(m: re.Match) -> str:
    if m.group(3):
        return str(_NUMBER_WORDS[m.group(3)])
    return str(_TENS[m.group(1)] + _NUMBER_WORDS[m.group(2)])


def canonical_number(value: float) -> str:
    """Shortest plain decimal of a float: 2.0 -> "2", 0.5 -> "0.5" (no exponent, 10 significant digits)."""
    text = f"{value:.10g}"
    if "e" in text:
        text = f"{value:.10f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def rectify(text: str) -> str:
    """Long-VQA's normalisation, applied to the reply and to every accepted answer alike.

    In order: strip, strip periods at the ends, lowercase, collapse whitespace; a leading "yes"/"no"
    followed by punctuation or the end becomes that word ("Yes, it is." -> "yes"); number words ->
    digits ("twenty-five" -> "25"); thousands commas dropped ("1,234" -> "1234"); percent signs and words,
    currency symbols and brackets dropped; a number followed by at most two unit words becomes the number
    ("12 kg" -> "12"); a fraction becomes its decimal ("1/4" -> "0.25"); a plain number loses trailing
    zeros ("2.50" -> "2.5"); otherwise the last word is made singular ("red apples" -> "red apple").
    Dropping "%" makes "45%" equal "45" (what a chart reader means) and unequal to "0.45".
    """
    s = " ".join(str(text).strip().strip(".").strip().lower().split())
    yes_no = _YES_NO.match(s)
    if yes_no:
        return yes_no.group(1)
    s = _NUMBER_WORD.sub(_number_word, s)
    s = _THOUSANDS.sub("", s)
    s = _PERCENT.sub(r"\1", s)
    s = _CURRENCY.sub("", s)
    s = " ".join(_BRACKETS.sub(" ", s).split()).strip(".")
    with_unit = _WITH_UNIT.match(s)
    if with_unit:
        s = with_unit.group(1)
    fraction = _FRACTION.match(s)
    if fraction and int(fraction.group(2)) != 0:
        return canonical_number(int(fraction.group(1)) / int(fraction.group(2)))
    if _PLAIN_NUMBER.match(s):
        return canonical_number(float(s)) if "." in s else s
    words = s.split(" ")
    words[-1] = _singular(words[-1])
    return " ".join(words)
