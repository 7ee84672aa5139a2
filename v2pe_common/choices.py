"""Option letters: what a multi-choice record asks for and what its scorer reads, defined once for both sides.

MileBench's scorer (`evaluate.py:Eval.char`) matches replies against A..Z, then "A" + A..Z, then "B" +
chr(65 + index - 52) (past "BZ" they are no longer letters: "B[", "B\\", ...). Its prompt prints chr(65 + index)
instead, which past Z gives "[", "\\", ...; a record asking for one letter and scored on another would teach
nothing, so `v2pe-data`'s MileBench prompts print the scorer's letters. MM-NIAH's letters (A = 0, at most 26
options) are the first 26 of them.
"""

from __future__ import annotations


def option_letter(index: int) -> str:
    """The letter(s) of option `index` (0-based), as MileBench's scorer writes them; ValueError below 0."""
    if index < 0:
        raise ValueError(f"option index must be >= 0, got {index}")
    if index < 26:
        return chr(65 + index)
    if index < 52:
        return "A" + chr(index + 65 - 26)
    return "B" + chr(index + 65 - 52)
