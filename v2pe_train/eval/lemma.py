"""The word data behind V2PE's Long-VQA `rectify`: WordNet's noun lemmatiser and the web2 word list.

V2PE lemmatises with NLTK's `WordNetLemmatizer().lemmatize(word, 'n')` and tests word roots against NLTK's
`words` corpus; both need NLTK data that the package index does not ship. The same data comes from two
packages that do:

- WordNet 3.0's noun lemmas and noun exception list, as spaCy's English lookup tables
  (`spacy-lookups-data`: `en_lemma_index`, `en_lemma_exc`). `noun_lemma` is WordNet's `morphy` on them, as
  NLTK (>= 3.8) runs it: the exception list, else each detachment rule applied once; of the forms that are
  WordNet nouns (the word itself included) the shortest, else the word. The tables leave out multi-word
  lemmas, which a single word never is.
- the web2 word list (NLTK's `words` corpus is web2 plus 850 Basic English words), from `english-words`.

Measured against NLTK with WordNet 3.0 on 2,083 words (docs/evaluation.md): the same lemma for all of them.
"""

from __future__ import annotations

import functools
import gzip
import json
from importlib import resources

# WordNet's noun detachment rules (morphy(7WN)), tried in this order
NOUN_RULES = (("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
              ("men", "man"), ("ies", "y"))
_MISSING = ("Long-VQA normalisation needs the packages spacy-lookups-data and english-words "
            "(pip install 'v2pe[eval]'): {exc}")


class WordDataMissing(RuntimeError):
    """The lemmatiser's data packages are not installed."""


def _lookup_table(name: str) -> dict:
    try:
        data = resources.files("spacy_lookups_data").joinpath("data", f"en_lemma_{name}.json.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise WordDataMissing(_MISSING.format(exc=exc)) from None
    return json.loads(gzip.decompress(data))


@functools.cache
def _nouns() -> tuple[frozenset[str], dict[str, list[str]]]:
    return frozenset(_lookup_table("index")["noun"]), _lookup_table("exc")["noun"]


@functools.cache
def web2_words() -> frozenset[str]:
    """The web2 word list, case kept ("Aaron" but not "aaron"), as NLTK's `words.words()` holds it."""
    try:
        from english_words import get_english_words_set
    except ModuleNotFoundError as exc:
        raise WordDataMissing(_MISSING.format(exc=exc)) from None
    return frozenset(get_english_words_set(["web2"]))


def noun_lemma(word: str) -> str:
    """WordNet's noun lemma of `word` (lowercase in, lowercase out): "geese" -> "goose", "was" -> "wa"
    (WordNet holds "WA"), "kg" -> "kg"; a word WordNet cannot reduce is returned as it is."""
    nouns, exceptions = _nouns()
    if word in exceptions:
        forms = [word, *exceptions[word]]
    else:
        forms = [word, *(word[: -len(old)] + new for old, new in NOUN_RULES if word.endswith(old))]
    found = list(dict.fromkeys(f for f in forms if f in nouns))
    return min(found, key=len) if found else word
