"""Text needles: fact sentences keyed by invented names that no haystack prose contains.

Each needle's subject is a word built from syllables that English prose (and the synthetic vocabulary of
`sources/synthetic/text.py`) never produces: "Zorvith", "Quellax". A question names that word, so the only
sentence of the context that can answer it is the needle, and a context that lacks the word cannot
answer it at all (the `text_retrieval_fake` negatives). Planning also counts each key's occurrences in the
final context and re-plans a sample whose haystack happens to contain one (a real haystack could).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_HEADS = ("Zor", "Vex", "Quel", "Thrax", "Nyx", "Drel", "Kesh", "Yvar", "Plov", "Wrenth", "Grax", "Fyl",
          "Jorv", "Zeph", "Quor", "Brix", "Xal", "Vorn", "Skel", "Ixt")
_TAILS = ("vith", "lax", "morn", "quin", "dralt", "zeth", "ovex", "ynth")
NAMES: tuple[str, ...] = tuple(h + t for h in _HEADS for t in _TAILS)

NOT_MENTIONED = "not mentioned"
_UNKNOWN_CLAUSE = f" If the document does not say, answer \"{NOT_MENTIONED}\"."


@dataclass(frozen=True, slots=True)
class Fact:
    """A retrieval fact kind: the needle sentence and the question about it, with the values it takes."""

    sentence: str
    question: str
    values: tuple[str, ...]


FACTS = (
    Fact("The secret ingredient of the {name} cake is {value}.", "What is the secret ingredient of the {name} cake?",
         ("saffron", "cardamom", "nutmeg", "vanilla", "ginger", "cinnamon", "lavender", "anise")),
    Fact("The password of the {name} vault is {value}.", "What is the password of the {name} vault?",
         ("amber", "falcon", "glacier", "meadow", "obsidian", "thistle", "quartz", "harbor")),
    Fact("The {name} lighthouse is painted {value}.", "What colour is the {name} lighthouse painted?",
         ("crimson", "teal", "ochre", "violet", "silver", "olive", "indigo", "coral")),
    Fact("The favourite instrument of {name} is the {value}.", "What is the favourite instrument of {name}?",
         ("cello", "harp", "oboe", "banjo", "flute", "trumpet", "accordion", "sitar")),
)

# text_counting: "There are N OBJECTS in the NAME CONTAINER."
OBJECTS = ("silver spoons", "glass marbles", "brass bells", "paper cranes", "wooden buttons", "clay beads",
           "striped socks", "tin soldiers")
CONTAINERS = ("drawer", "basket", "chest", "cupboard", "crate", "satchel")

# text_reasoning: quantities whose sum or extreme is asked for
HOLDINGS = ("gold coins", "apple trees", "red kites", "blue keys", "old maps", "green lanterns")


@dataclass(frozen=True, slots=True)
class TextNeedle:
    text: str  # inserted as a paragraph of its own
    key: str  # the invented word the question names


def draw_names(rng: random.Random, k: int) -> list[str]:
    return rng.sample(NAMES, k)


def retrieval(rng: random.Random, name: str) -> tuple[TextNeedle, str, str]:
    """(needle, question, answer) of one retrieval fact about `name`."""
    fact = rng.choice(FACTS)
    value = rng.choice(fact.values)
    return (TextNeedle(fact.sentence.format(name=name, value=value), name),
            fact.question.format(name=name) + _UNKNOWN_CLAUSE, value)


def retrieval_fake(rng: random.Random, asked: str, other: str, kind: str) -> tuple[list[TextNeedle], str, str]:
    """A question about `asked`, which the context never mentions; `kind` "near_miss" inserts the same
    fact about `other` (the tempting wrong answer), "absent" inserts nothing. The answer is NOT_MENTIONED."""
    fact = rng.choice(FACTS)
    needles = [] if kind == "absent" else [
        TextNeedle(fact.sentence.format(name=other, value=rng.choice(fact.values)), other)]
    return needles, fact.question.format(name=asked) + _UNKNOWN_CLAUSE, NOT_MENTIONED


def counting(rng: random.Random, name: str, k: int) -> tuple[list[TextNeedle], str, list[int]]:
    """k statements of one count about one container; the answer lists the counts in order of appearance."""
    obj, container = rng.choice(OBJECTS), rng.choice(CONTAINERS)
    counts = [rng.randint(1, 9) for _ in range(k)]
    needles = [TextNeedle(f"There are {n} {obj} in the {name} {container}.", name) for n in counts]
    question = (f"The document states several times how many {obj} there are in the {name} {container}. "
                f"List every count in order of appearance, as a list such as [2, 5].")
    return needles, question, counts


def reasoning(rng: random.Random, names: list[str]) -> tuple[list[TextNeedle], str, str, str]:
    """(needles, question, answer, kind): a sum over all needles ("sum") or the name holding the most
    ("most"); with distinct quantities, so the most is unique."""
    what = rng.choice(HOLDINGS)
    amounts = rng.sample(range(2, 60), len(names))
    needles = [TextNeedle(f"{n} has {a} {what}.", n) for n, a in zip(names, amounts)]
    listed = ", ".join(names[:-1]) + f" and {names[-1]}"
    if rng.random() < 0.5:
        return needles, f"How many {what} do {listed} have in total?", str(sum(amounts)), "sum"
    best = names[amounts.index(max(amounts))]
    return needles, f"Who has the most {what}: {listed}?", best, "most"
