"""The turns of a MileBench record, rendered as MileBench's loader renders its prompt.

Human turn: `task_instruction[id] + "\\n" + context`, each `{image#k}` / `{table#k}` placeholder replaced
by `<image>`. Both kinds share one numbering: MileBench's loader replaces `{image#k}` and `{table#k}`
alike with the k-th entry of `images_path` (its tables are images of tables), so the record's images are
`images_path[k - 1]` in placeholder order. A multi-choice row appends `"\\nChoice list: \\n"`, one
`"A. option"` line per choice (letters A..Z, AA, AB, ... as the scorer reads them) and V2PE's instruction
`"\\nAnswer with the option's letter from the given choices directly."` (MileBench's own loader ends with
`"\\nYour answer is: "`; V2PE's evaluation, which scores the models trained on these records, uses the
instruction). GPR1200's options carry no letters (MileBench prints them bare: its 1200-way lists would
run past Z), so its lines are the options alone.

With MileBench's combined images (`combined: N`) the grids come first, one `<image>` each, then a newline,
the instruction and the context, whose placeholders become the grid captions `<Image k> ` (MileBench's
combined mode).

Gpt turn: the option's letter for a lettered multi-choice row (what the instruction asks for; the scorer's
`match_option` reads a bare letter), the option text for GPR1200 (no letters were shown), the `response`
for an open-ended row.
"""

from __future__ import annotations

import re

IMAGE = "<image>"
PLACEHOLDER = re.compile(r"\{(image|table)#(\d+)\}")
CHOICE_HEAD = "\nChoice list: \n"
CHOICE_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
UNLETTERED = ("GPR1200",)


def option_letter(index: int) -> str:
    """A..Z, then AA..AZ, BA..BZ, ...: the letters the MileBench scorer matches replies against."""
    if index < 26:
        return chr(ord("A") + index)
    return option_letter(index // 26 - 1) + chr(ord("A") + index % 26)


def placeholders(context: str) -> list[int]:
    """The image numbers k of the context's `{image#k}` / `{table#k}` placeholders, in text order."""
    return [int(m.group(2)) for m in PLACEHOLDER.finditer(context)]


def choice_block(task: str, choices: list[str]) -> str:
    lettered = task not in UNLETTERED
    lines = [(f"{option_letter(i)}. " if lettered else "") + c for i, c in enumerate(choices)]
    return CHOICE_HEAD + "\n".join(lines) + CHOICE_SUFFIX


def human_turn(task: str, instruction: str, context: str, choices: list[str] | None,
               combined_images: int | None = None) -> str:
    tail = choice_block(task, choices) if choices is not None else ""
    if combined_images is None:
        return instruction + "\n" + PLACEHOLDER.sub(IMAGE, context) + tail
    captioned = PLACEHOLDER.sub(lambda m: f"<Image {m.group(2)}> ", context)
    return IMAGE * combined_images + "\n" + instruction + "\n" + captioned + tail


def gpt_turn(task: str, response: str, choices: list[str] | None, answer_index: int | None) -> str:
    if choices is None:
        return response
    return option_letter(answer_index) if task not in UNLETTERED else choices[answer_index]
