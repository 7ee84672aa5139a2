"""The turns of a MileBench record, rendered as MileBench's loader (`utils.py:MileBenchDataset`) and V2PE's copy
of it (`eval/milebench/utils.py`) render a row.

Human turn: `task_instruction[id] + "\n" + context`, where every `{image#k}` and `{table#k}` with k in 1..n
(n = len(images_path)) becomes `<image>`. Both references then attach `images_path` **in list order** to the
placeholders **in text order**, whatever their numbers: "{image#2} ... {image#1}" shows images_path[0] first.
So `{table#1}` and `{image#1}` in one row are two placeholders taking two images. A row with one image more
than placeholders gets its first image in front of the context (the references' reverse walk prepends it). A
multi-choice row appends `"\nChoice list: \n"`, one `"A. option"` line per choice (letters A..Z, AA, AB, ...
as the scorer reads them) and V2PE's instruction `"\nAnswer with the option's letter from the given choices
directly."` (MileBench's own loader ends with `"\nYour answer is: "`; V2PE's evaluation, which scores the
models trained on these records, uses the instruction). GPR1200's options carry no letters (MileBench prints
them bare: its 1200-way lists would run past Z), so its lines are the options alone.

With MileBench's combined images (`combined: N`) both references read exactly one combined image per row
(they assert it); V2PE's fork renders `<image>\n` + instruction + `\n` + context. V2PE turns each in-context
placeholder into the literal text "<image> ", which a record cannot hold (there `<image>` is an image slot);
we write MileBench's caption `<Image k> ` in its place.

Gpt turn: the option's letter for a lettered multi-choice row (what the instruction asks for; the scorer's
`match_option` reads a bare letter), the option text for GPR1200 (no letters were shown), the `response`
for an open-ended row.
"""

from __future__ import annotations

import re

from v2pe_common.choices import option_letter

IMAGE = "<image>"
PLACEHOLDER = re.compile(r"\{(image|table)#(\d+)\}")
CHOICE_HEAD = "\nChoice list: \n"
CHOICE_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
UNLETTERED = ("GPR1200",)


def placeholders(context: str) -> list[int]:
    """The image numbers k of the context's `{image#k}` / `{table#k}` placeholders, in text order."""
    return [int(m.group(2)) for m in PLACEHOLDER.finditer(context)]


def _replace(context: str, n: int, by) -> str:
    """Placeholders numbered 1..n replaced (the references loop k over 1..n); others stay text."""
    return PLACEHOLDER.sub(lambda m: by(m) if 1 <= int(m.group(2)) <= n else m.group(0), context)


def choice_block(task: str, choices: list[str]) -> str:
    lettered = task not in UNLETTERED
    lines = [(f"{option_letter(i)}. " if lettered else "") + c for i, c in enumerate(choices)]
    return CHOICE_HEAD + "\n".join(lines) + CHOICE_SUFFIX


def human_turn(task: str, instruction: str, context: str, choices: list[str] | None, n_images: int, *,
               leading_image: bool = False, combined: bool = False) -> str:
    """`n_images` is len(images_path); `leading_image`: the row has one image more than placeholders."""
    tail = choice_block(task, choices) if choices is not None else ""
    if combined:
        return IMAGE + "\n" + instruction + "\n" + _replace(context, n_images, lambda m: f"<Image {m.group(2)}> ") + tail
    return instruction + "\n" + (IMAGE if leading_image else "") + _replace(context, n_images, lambda m: IMAGE) + tail


def gpt_turn(task: str, response: str, choices: list[str] | None, answer_index: int | None) -> str:
    if choices is None:
        return response
    return option_letter(answer_index) if task not in UNLETTERED else choices[answer_index]
