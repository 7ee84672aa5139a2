"""The question turn as MM-NIAH's evaluation builds it, so a record's human turn is its prompt exactly.

MM-NIAH (`utils/tools.py:get_input`, then `f"{context}\\n{question}"`) appends text choices as "\\nA. c0",
image choices as "\\nA. <image>", then "\\nAnswer with the option's letter from the given choices
directly."; any other question gets "\\nAnswer the question using a single word or phrase." The answer turn
is the option letter for choices, the JSON list for counts, else the string.
"""

from __future__ import annotations

import json

CONTEXT_SEP = "\n"  # between the context and the question
CHOICE_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
OPEN_SUFFIX = "\nAnswer the question using a single word or phrase."


def letter(i: int) -> str:
    return chr(ord("A") + i)


def question_tail(question: str, choices: list[str] | None, num_choice_images: int) -> str:
    """The question with its options and instruction: everything after `context + CONTEXT_SEP`."""
    if choices:
        return question + "".join(f"\n{letter(i)}. {c}" for i, c in enumerate(choices)) + CHOICE_SUFFIX
    if num_choice_images:
        return question + "".join(f"\n{letter(i)}. <image>" for i in range(num_choice_images)) + CHOICE_SUFFIX
    return question + OPEN_SUFFIX


def answer_text(answer, multiple_choice: bool) -> str:
    """The assistant turn for a raw answer: the option letter, a JSON list such as "[2, 5]", or the string."""
    if multiple_choice:
        return letter(answer)
    if isinstance(answer, list):
        return json.dumps(answer)
    return str(answer)
