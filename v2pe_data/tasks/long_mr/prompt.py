"""A Long-MR sample's answer turn: the option letter for choices, the JSON list for counts, else the string.

The question turn is MM-NIAH's prompt (`v2pe_common.formats.mmniah.question_tail`), so a record's human turn
is its MM-NIAH prompt exactly.
"""

from __future__ import annotations

import json

from v2pe_common.choices import option_letter


def answer_text(answer, multiple_choice: bool) -> str:
    """The assistant turn for a raw answer: the option letter, a JSON list such as "[2, 5]", or the string."""
    if multiple_choice:
        return option_letter(answer)
    if isinstance(answer, list):
        return json.dumps(answer)
    return str(answer)
