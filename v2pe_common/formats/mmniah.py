"""MM-NIAH's file format: record <-> line codec, its prompt, the invariant check and the reader.

The streaming writer is `v2pe_data/writers/mmniah.py`; Long-MR (`v2pe_data/tasks/long_mr/`) builds the records.

Layout (as MM-NIAH ships `mm_niah_val/`, whose evaluation joins `images_list` to `root` = `.../images`):

    ROOT/annotations/<task>-<text|image>.jsonl   one JSON object a line, `id` numbered from 0 per file
    ROOT/images/<sample id>/<i>.<ext>            image i of the record; paths in a line are relative to
                                                 ROOT/images: "<sample id>/<i>.<ext>"

Subsets map to MM-NIAH's six files: text_retrieval and text_retrieval_fake -> retrieval-text (a fake is a
retrieval question whose right answer is "not mentioned"), text_counting -> counting-text,
text_reasoning -> reasoning-text, image_retrieval -> retrieval-image, image_counting -> counting-image,
image_reasoning_jigsaw and image_reasoning_colour_pair -> reasoning-image.

A line: `id`, `images_list` (context images in `<image>` order, choice images excluded), `context`,
`question` (bare: MM-NIAH's evaluation appends the options and the instruction), `answer` (int option,
list of counts, or str), `meta` {placed_depth, context_length, context_length_text, context_length_image,
num_images, needles (a text needle's sentence; an image needle's image path: the image it was pasted into,
or the inserted image itself), choices, choices_image_path}. The record's human turn is exactly
`context + "\\n" + question` + options + instruction, as MM-NIAH prompts; `to_line` checks it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..choices import option_letter
from ..tiling import IMAGE_PLACEHOLDER

FILES = {"text_retrieval": "retrieval-text", "text_retrieval_fake": "retrieval-text",
         "text_counting": "counting-text", "text_reasoning": "reasoning-text", "image_retrieval": "retrieval-image",
         "image_counting": "counting-image", "image_reasoning_jigsaw": "reasoning-image",
         "image_reasoning_colour_pair": "reasoning-image"}
ANNOTATIONS, IMAGES, PARTS, STAGING = "annotations", "images", "parts", ".tmp"
META_KEYS = ("placed_depth", "context_length", "context_length_text", "context_length_image", "num_images",
             "needles", "choices", "choices_image_path")


# The question turn as MM-NIAH's evaluation builds it (`utils/tools.py:get_input`, then
# f"{context}\n{question}"): text choices as "\nA. c0", image choices as "\nA. <image>", then the instruction.
CONTEXT_SEP = "\n"  # between the context and the question
CHOICE_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
OPEN_SUFFIX = "\nAnswer the question using a single word or phrase."


def question_tail(question: str, choices: list[str] | None, num_choice_images: int) -> str:
    """The question with its options and instruction: everything after `context + CONTEXT_SEP`."""
    if choices:
        return question + "".join(f"\n{option_letter(i)}. {c}" for i, c in enumerate(choices)) + CHOICE_SUFFIX
    if num_choice_images:
        return question + "".join(f"\n{option_letter(i)}. {IMAGE_PLACEHOLDER}" for i in range(num_choice_images)) \
            + CHOICE_SUFFIX
    return question + OPEN_SUFFIX


class MMNIAHError(ValueError):
    """A record that cannot become an MM-NIAH line, or a line that breaks MM-NIAH's invariants."""


def file_name(record: dict) -> str:
    try:
        return f"{FILES[record['subset']]}.jsonl"
    except KeyError:
        raise MMNIAHError(f"{record.get('id')}: subset {record.get('subset')!r} has no MM-NIAH task file") from None


def image_path(record: dict, name: str) -> str:
    """Where image `name` of the record lies, relative to the images root."""
    return f"{record['id']}/{name}"


def to_line(record: dict, line_id: int) -> dict:
    """The MM-NIAH line of a Long-MR record (pure); MMNIAHError when the record does not fit the format."""
    meta, rid = record["meta"], record["id"]
    human = record["conversations"][0]["value"]
    at = meta["question_offset"]
    context, question = human[:at - len(CONTEXT_SEP)], meta["question"]
    choice_images = meta.get("choice_images") or []
    if human != context + CONTEXT_SEP + question_tail(question, meta.get("choices"), len(choice_images)):
        raise MMNIAHError(f"{rid}: conversations[0] is not context + question + options as MM-NIAH prompts")
    paths = [image_path(record, name) for name in record["images"]]
    chosen = set(choice_images)
    needles = [n["text"] if n["kind"] == "text" else paths[n["image"]] for n in meta["needles"]]
    line = {
        "id": line_id,
        "images_list": [p for i, p in enumerate(paths) if i not in chosen],
        "context": context,
        "question": question,
        "answer": record["answer"],
        "meta": {
            "placed_depth": meta["placed_depth"], "context_length": meta["context_length"],
            "context_length_text": meta["context_length_text"], "context_length_image": meta["context_length_image"],
            "num_images": len(paths) - len(chosen), "needles": needles, "choices": meta.get("choices"),
            "choices_image_path": [paths[i] for i in choice_images] or None,
        },
    }
    check_line(line, rid)
    return line


def check_line(line: dict, where: str = "") -> None:
    """MM-NIAH's invariants; MMNIAHError naming `where` and the field."""
    def bad(field: str, why: str) -> MMNIAHError:
        return MMNIAHError(f"{where + ': ' if where else ''}{field}: {why}")

    if not isinstance(line, dict):
        raise bad("line", f"expected an object, got {type(line).__name__}")
    for key, kinds in (("id", int), ("images_list", list), ("context", str), ("question", str), ("meta", dict)):
        if key not in line:
            raise bad(key, "missing")
        if isinstance(line[key], bool) or not isinstance(line[key], kinds):
            raise bad(key, f"expected {kinds.__name__}, got {type(line[key]).__name__}")
    if not all(isinstance(p, str) and p for p in line["images_list"]):
        raise bad("images_list", "expected relative image paths (non-empty str)")
    answer = line.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, (int, list, str)):
        raise bad("answer", f"expected int, list or str, got {type(answer).__name__}")
    meta = line["meta"]
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise bad(f"meta.{missing[0]}", "missing")
    found = line["context"].count(IMAGE_PLACEHOLDER) + line["question"].count(IMAGE_PLACEHOLDER)
    if found != len(line["images_list"]):
        raise bad("images_list", f"{len(line['images_list'])} paths for {found} {IMAGE_PLACEHOLDER} placeholders "
                                 f"in context and question")
    choices, choice_paths = meta["choices"], meta["choices_image_path"]
    if choices is not None and choice_paths is not None:
        raise bad("meta.choices", "choices and choices_image_path are both set; at most one may be")
    options = choices if choices is not None else choice_paths
    if options is not None and not (isinstance(answer, int) and 0 <= answer < len(options)):
        raise bad("answer", f"a multiple-choice answer is an option index in [0, {len(options)}), got {answer!r}")
    depths = meta["placed_depth"] if isinstance(meta["placed_depth"], list) else [meta["placed_depth"]]
    if not depths or not all(isinstance(d, (int, float)) and not isinstance(d, bool) and 0 <= d <= 1 for d in depths):
        raise bad("meta.placed_depth", f"expected a depth in [0, 1] or a list of them, got {meta['placed_depth']!r}")
    if meta["context_length"] != meta["context_length_text"] + meta["context_length_image"]:
        raise bad("meta.context_length", "is not context_length_text + context_length_image")
    if meta["num_images"] != len(line["images_list"]):
        raise bad("meta.num_images", f"{meta['num_images']} for {len(line['images_list'])} images_list entries")


# ------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True, slots=True)
class MMNIAHSample:
    file: str  # "retrieval-text.jsonl"
    line: dict
    images: list[Path]  # images_list, resolved
    choice_images: list[Path]  # choices_image_path, resolved (appended after the question's images)


def read(root: str | Path) -> Iterator[MMNIAHSample]:
    """Every line of ROOT/annotations/*.jsonl as MM-NIAH's evaluation reads it: one JSON object a line,
    image paths joined to ROOT/images. MMNIAHError naming FILE:LINE for a bad line or a missing image."""
    root = Path(root)
    images = root / IMAGES
    files = sorted((root / ANNOTATIONS).glob("*.jsonl"))
    if not files:
        raise MMNIAHError(f"{root / ANNOTATIONS}: no *.jsonl annotation files")
    for path in files:
        yield from read_file(path, images)


def read_file(path: Path, images: Path) -> Iterator[MMNIAHSample]:
    """The lines of one annotation file (or part file), image paths joined to `images`; errors as `read`."""
    images = Path(images).resolve()
    with open(path, encoding="utf-8") as fh:
        for lineno, text in enumerate(fh, 1):
            where = f"{path.name}:{lineno}"
            try:
                line = json.loads(text)
            except ValueError as exc:
                raise MMNIAHError(f"{where}: not JSON: {exc}") from None
            check_line(line, where)
            resolved = [_resolve(images, p, where) for p in line["images_list"]]
            choices = [_resolve(images, p, where) for p in line["meta"]["choices_image_path"] or []]
            yield MMNIAHSample(path.name, line, resolved, choices)


def _resolve(images: Path, rel: str, where: str) -> Path:
    path = (images / rel).resolve()
    if images not in path.parents:
        raise MMNIAHError(f"{where}: image path {rel!r} leaves the images root")
    if not path.is_file():
        raise MMNIAHError(f"{where}: image {rel!r} not found under {images}")
    return path
