"""Long-VQA's answer normalisation, per source, as V2PE's `eval/longvqa/rectify.py:rectify(task, an)` does it,
followed by the evaluators' own line clean-up (`owl_evaluator.py:parser_line`).

Both the reply and the answer go through `rectify(source, text)`:

- every source: strip, then strip periods at both ends;
- `svqa`: the first character when it is A, B, C or D;
- `tabfact`: "Yes" / "No" when the text starts with yes / no in either case ("Nothing" -> "No");
- chartqa, clevr, deepform, okvqa, dvqa, gqa, infovqa, ocrvqa, visualmrc, vizwiz, wikitablequestions, in
  this order: yes / no as tabfact; number words zero..twenty -> digits (space-separated words only);
  commas between digits dropped; "<number> <letters and spaces>" -> the number ("25 kg" -> "25"); a final
  "%" dropped; brackets stripped from the ends; "-ing" words cut to a web2 root ("running" -> "run");
  every space-separated word lowercased and lemmatised as a WordNet noun ("apples" -> "apple"); "a/b" or
  "a:b" of two numbers -> str(a / b) ("1/4" -> "0.25");
- every other source (docvqa, textvqa, textcaps, kleistercharity, and any source V2PE does not list,
  our synthetic one included): nothing more.

Then `clean_line`: newlines removed, stripped, one trailing period dropped.
"""

from __future__ import annotations

import re

from .lemma import noun_lemma, web2_words

CHOICE_SOURCES = ("svqa",)
YES_NO_SOURCES = ("tabfact",)
LEMMATISED_SOURCES = ("chartqa", "clevr", "deepform", "okvqa", "dvqa", "gqa", "infovqa", "ocrvqa", "visualmrc",
                      "vizwiz", "wikitablequestions")
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_WITH_UNIT = re.compile(r"^([0-9]+\.?[0-9]*)\s+[A-Za-z\s]+$", re.DOTALL)
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d)")


def first_choice(s: str) -> str:
    return s[0] if s and s[0] in "ABCD" else s


def yes_or_no(s: str) -> str:
    if s.startswith(("Yes", "yes")):
        return "Yes"
    if s.startswith(("No", "no")):
        return "No"
    return s


def number_words(s: str) -> str:
    return " ".join(_NUMBER_WORDS.get(w.lower(), w) for w in s.split(" "))


def digit_commas(s: str) -> str:
    return _DIGIT_COMMA.sub("", s)


def unit(s: str) -> str:
    m = _WITH_UNIT.match(s)
    return m.group(1) if m else s


def percent(s: str) -> str:
    return s[:-1] if s.endswith("%") else s


def brackets(s: str) -> str:
    return s.strip("[").strip("]").strip("(").strip(")").strip("{").strip("}")


def ing(s: str) -> str:
    """A word ending in "ing" becomes its root when web2 holds the root, the root less a doubled final
    letter ("swimming" -> "swim"), or the root + "e" ("making" -> "make"); roots of one letter are kept."""
    words = web2_words()
    out = s.split(" ")
    for i, w in enumerate(out):
        if not w.endswith("ing"):
            continue
        root = w[:-3].lower()
        if len(root) <= 1:
            continue
        if root in words:
            out[i] = root
        elif root[-1] == root[-2] and root[:-1] in words:
            out[i] = root[:-1]
        elif root + "e" in words:
            out[i] = root + "e"
    return " ".join(out)


def singular(s: str) -> str:
    return " ".join(noun_lemma(w.lower()) for w in s.split(" "))


def fraction(s: str) -> str:
    for mark in (":", "/"):
        parts = s.split(mark)
        if mark not in s or len(parts) != 2:
            continue
        try:
            return str(float(parts[0]) / float(parts[1]))
        except (ValueError, ArithmeticError):
            continue
    return s


def steps(source: str) -> tuple:
    if source in CHOICE_SOURCES:
        return (first_choice,)
    if source in YES_NO_SOURCES:
        return (yes_or_no,)
    if source in LEMMATISED_SOURCES:
        return (yes_or_no, number_words, digit_commas, unit, percent, brackets, ing, singular, fraction)
    return ()


def rectify(source: str, text: str) -> str:
    """V2PE's `rectify(task, an)` for a Long-VQA source name (lowercase)."""
    s = text.strip().strip(".")
    for step in steps(source):
        s = step(s)
    return s.strip()


def clean_line(text: str) -> str:
    """The Long-VQA evaluators' own clean-up of a reply or answer after `rectify`."""
    s = text.replace("\n", "").strip()
    return s[:-1] if s.endswith(".") else s


def normalise(source: str, text: str) -> str:
    return clean_line(rectify(source, text))
