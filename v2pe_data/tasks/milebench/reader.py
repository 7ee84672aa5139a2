"""One MileBench task folder, read and checked: `read_task(root, task, ...)` -> `TaskSource`.

Layout (MileBench's release): `<root>/<Task>/<Task>.json` with `meta_data` {`task_instruction`: [str],
`question_type`: "open-ended" | "multi-choice"} and `data`: [{`sample_id`, `task_instruction_id`,
`task_instance` {`context`, `images_path` (relative to `<Task>/images/`), `choice_list`?,
`combined_<N>_images`?}, `response`, `image_quantity_level`?}]; with `combined=N` the file is
`<Task>_combined_<N>.json` and the images `<Task>/combined_<N>_images/`.

Each row is checked in this order (the first failure is its reason): text that is not valid Unicode
(`bad_encoding`); a missing or empty field (`missing_field`) or one of the wrong type (`bad_type`); an id an
earlier row has (`duplicate_id`); a multi-choice answer that is none of the choices (`answer_not_in_choices`;
compared after stripping surrounding whitespace); `placeholder_mismatch`: placeholders (numbered 1..n, n images,
in any order, `{table#k}` and `{image#k}` alike) that are neither n nor n - 1 in number (the references would
drop images or leave placeholders without one), a placeholder numbered past n (they would leave it as text), a
literal `<image>` in the text, or, with combined images, more than one combined image (both references read
exactly one); a control token of the build's tokenizer or template in the instruction, context, choices or
response (`special_token`, unless the build neutralises them); each image: a path leaving the task folder
(`path_escape`), a missing file (`missing_image`), an unreadable or truncated one (`corrupt_image`), too many
pixels or a format other than JPEG/PNG/WebP (`too_many_pixels`, `bad_type`). A bad row is skipped and
recorded in `rejected` as {reason, source, task, id, detail, where} (`where` = `<Task>/<file> data[I]`);
with `strict=True` the first one raises `SourceError` naming the task, sample id, reason and place.
A file that is not JSON, or whose `meta_data` is unusable, raises `SourceError` naming the file and field.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from ...records import Item
from ...sources.base import Reject, SourceError, need_id, need_str, opt_id, printable, resolve_under
from ...sources.imagebytes import probe_once, read_8bit_png, read_bytes
from ...sources.text import need_text, read_json
from ...sources.errors import BadRow
from . import prompt

QUESTION_TYPES = ("open-ended", "multi-choice")
BENCHMARK = "MileBench"  # an evaluation benchmark: records built from it say so (see v2pe-train's allow_eval_data)
EVAL_SPLIT = "test"
# Our reasons beyond the real sources' (`sources.errors.REASONS`); out_of_bin is counted by the task.
REASONS = ("missing_field", "bad_type", "bad_encoding", "duplicate_id", "answer_not_in_choices",
           "placeholder_mismatch", "special_token", "path_escape", "missing_image", "corrupt_image", "too_many_pixels",
           "out_of_bin")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def key_part(text: str) -> str:
    """`text` as part of a shard key: characters a key cannot hold become '_'."""
    return _UNSAFE.sub("_", text)


@dataclass(frozen=True, slots=True)
class Image:
    path: Path
    rel: str  # relative to the task folder: the image's provenance
    sample_id: str
    width: int
    height: int
    ext: str
    high_depth: bool


@dataclass(frozen=True, slots=True)
class Row:
    """A valid row, rendered: the two turns and the indices of its images in `TaskSource.item`."""

    sample_id: str
    where: str
    human: str
    gpt: str
    response: str
    choices: list | None
    question_type: str
    images: tuple[int, ...]
    extra: dict


class TaskSource:
    """One MileBench task's valid rows (`rows`), its images (`item(k)`), and its rejected rows."""

    kind = "milebench"

    def __init__(self, task: str, folder: Path, file: Path, split: str, strict: bool, max_pixels: int):
        self.name, self.folder, self.file, self.split = task, folder, file, split
        self.strict, self.max_pixels = strict, max_pixels
        self.path = str(folder)
        self.question_type = ""
        self.rows: list[Row] = []
        self.rejected: list[dict] = []
        self.rows_seen = 0
        self.in_bin = 0
        self._images: list[Image] = []

    # -- the Source protocol, over images (so `ExplainedLoads` can wrap it)

    def __len__(self) -> int:
        return len(self._images)

    def item(self, k: int) -> Item:
        im = self._images[k]
        load = read_8bit_png if im.high_depth else read_bytes
        # MileBench is a test set, whatever split the build calls its output
        return Item(dataset=f"MileBench/{self.name}", split=EVAL_SPLIT, id=im.sample_id, doc_id=im.rel,
                    width=im.width, height=im.height, ext="png" if im.high_depth else im.ext, question="",
                    answers=("",), load=functools.partial(load, ("file", str(im.path))))

    def describe(self) -> dict:
        counts = dict.fromkeys(REASONS, 0)
        for row in self.rejected:
            counts[row["reason"]] += 1
        return {"kind": self.kind, "dataset": f"MileBench/{self.name}", "task": self.name, "path": self.path,
                "file": self.file.name, "question_type": self.question_type, "split": EVAL_SPLIT,
                "eval_benchmark": BENCHMARK,
                "rows_seen": self.rows_seen, "rows_valid": len(self.rows), "samples_in_bin": self.in_bin,
                "rejected": counts, "max_pixels": self.max_pixels}

    # -- rejections

    def reject(self, rid: str, reason: str, detail: str, where: str, strict: bool | None = None) -> None:
        rid, detail, where = printable(rid), printable(detail), printable(where)
        if self.strict if strict is None else strict:
            raise SourceError(f"milebench {self.name}:{rid}: {reason}: {detail} ({where})", reason=reason,
                              source=self.name, id=rid)
        self.rejected.append({"reason": reason, "source": self.name, "task": self.name, "id": rid,
                              "detail": detail, "where": where})


def task_file(root: Path, task: str, combined: int | None = None) -> Path:
    """`<root>/<Task>/<Task>.json`, or `<Task>_combined_<N>.json` for MileBench's combined-image variant."""
    return root / task / (f"{task}_combined_{combined}.json" if combined else f"{task}.json")


def read_task(root: Path, task: str, *, split: str, combined: int | None = None, strict: bool = False,
              max_pixels: int, control=None) -> TaskSource:
    file = task_file(root, task, combined)
    source = TaskSource(task, root / task, file, split, strict, max_pixels)
    data = read_json(file, f"milebench {task}")
    meta = data.get("meta_data") if isinstance(data, dict) else None
    rows = data.get("data") if isinstance(data, dict) else None
    if not isinstance(meta, dict) or not isinstance(rows, list):
        raise SourceError(f"milebench {task}: {file}: expected an object with meta_data (object) and data (list)")
    instructions = meta.get("task_instruction")
    if not isinstance(instructions, list) or not instructions or not all(isinstance(s, str) for s in instructions):
        raise SourceError(f"milebench {task}: {file}: meta_data.task_instruction: expected a non-empty list of str")
    if meta.get("question_type") not in QUESTION_TYPES:
        raise SourceError(f"milebench {task}: {file}: meta_data.question_type: expected one of "
                          f"{list(QUESTION_TYPES)}, got {meta.get('question_type')!r}")
    source.question_type = meta["question_type"]
    parse = _Parser(source, instructions, combined, control)
    for i, raw in enumerate(rows):
        source.rows_seen += 1
        where = f"{task}/{file.name} data[{i}]"
        rid = (opt_id(raw, "sample_id") if isinstance(raw, dict) else None) or f"#{i}"
        try:
            row = parse(raw, where)
        except (Reject, BadRow) as bad:
            source.reject(rid, bad.reason, bad.detail, where)
            continue
        source.rows.append(row)
    return source


class _Parser:
    def __init__(self, source: TaskSource, instructions: list[str], combined: int | None, control=None):
        self.source, self.instructions, self.combined, self.control = source, instructions, combined, control
        self.seen: dict[str, str] = {}
        self.probed: dict[Path, tuple | Reject] = {}

    def __call__(self, raw, where: str) -> Row:
        src = self.source
        if not isinstance(raw, dict):
            raise Reject("bad_type", f"the row is a {type(raw).__name__}, not an object")
        need_text(raw)
        sid = need_id(raw, "sample_id")
        k = raw.get("task_instruction_id")
        if k is None:
            raise Reject("missing_field", "task_instruction_id is missing")
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(self.instructions):
            raise Reject("bad_type", f"task_instruction_id {k!r} is not an index into meta_data.task_instruction "
                                     f"(0..{len(self.instructions) - 1})")
        inst = raw.get("task_instance")
        if not isinstance(inst, dict):
            raise Reject("missing_field" if inst is None else "bad_type", "task_instance is missing or not an object")
        context = need_str(inst, "context")
        paths = _str_list(inst, "images_path")
        choices = _str_list(inst, "choice_list") if "choice_list" in inst else None
        if choices is None and src.question_type == "multi-choice":
            raise Reject("missing_field", "task_instance.choice_list is missing in a multi-choice task")
        if choices is not None and not choices:
            raise Reject("missing_field", "task_instance.choice_list is empty")
        response = raw.get("response")
        if response is None:
            raise Reject("missing_field", "response is missing")
        if isinstance(response, bool) or not isinstance(response, (str, int, float)):
            raise Reject("bad_type", f"response is {type(response).__name__}, not str")
        response = str(response)  # MileBench's loader takes str(response)
        if not response.strip():
            raise Reject("missing_field", "response is empty")
        if key_part(sid) in self.seen:  # ids that differ only in characters a shard key cannot hold collide too
            raise Reject("duplicate_id", f"sample_id {sid!r} already taken by {self.seen[key_part(sid)]}")
        answer_index = None
        if choices is not None:
            answer_index = next((i for i, c in enumerate(choices) if c.strip() == response.strip()), None)
            if answer_index is None:
                raise BadRow("answer_not_in_choices", f"response {response!r} is none of the {len(choices)} choices")
        refs = prompt.placeholders(context)
        if any(not 1 <= r <= len(paths) for r in refs) or len(refs) not in (len(paths), len(paths) - 1):
            raise BadRow("placeholder_mismatch", f"context placeholders number images {refs} but images_path "
                                                 f"holds {len(paths)} image(s)")
        text = [self.instructions[k], context, *(choices or [])]
        if any(prompt.IMAGE in t for t in text):
            raise BadRow("placeholder_mismatch", f"the text holds a literal {prompt.IMAGE}")
        instruction = self.instructions[k]
        if self.control is not None:
            instruction, context, response, choices = self._screen(instruction, context, response, choices)
        if self.combined:
            key = f"combined_{self.combined}_images"
            ordered = _str_list(inst, key, where="task_instance.")
            if len(ordered) != 1:
                raise BadRow("placeholder_mismatch", f"task_instance.{key} holds {len(ordered)} images; MileBench "
                                                     "and V2PE read exactly one combined image per row")
            base = src.folder / key
        else:
            ordered, base = paths, src.folder / "images"  # list order, as the references attach them
        found = [self._image(rel, base, sid) for rel in ordered]  # all checked before any is kept
        images = tuple(range(len(src._images), len(src._images) + len(found)))
        src._images.extend(found)
        task = src.name
        human = prompt.human_turn(task, instruction, context, choices, len(paths),
                                  leading_image=len(refs) == len(paths) - 1, combined=bool(self.combined))
        extra = {key: raw[key] for key in ("image_quantity_level",) if isinstance(raw.get(key), str)}
        self.seen[key_part(sid)] = where
        return Row(sample_id=sid, where=where, human=human, gpt=prompt.gpt_turn(task, response, choices, answer_index),
                   response=response, choices=choices, question_type="multi-choice" if choices else "open-ended",
                   images=images, extra=extra)

    def _screen(self, instruction: str, context: str, response: str, choices: list | None):
        """The row's texts under the control-token policy: neutralised, or BadRow `special_token`."""
        from v2pe_common.control import ControlTokenError

        c = self.control
        try:
            return (c.apply(instruction, "meta_data.task_instruction"), c.apply(context, "task_instance.context"),
                    c.apply(response, "response"),
                    None if choices is None else [c.apply(x, f"task_instance.choice_list[{i}]")
                                                  for i, x in enumerate(choices)])
        except ControlTokenError as exc:
            raise BadRow("special_token", str(exc)) from None

    def _image(self, rel: str, base: Path, sid: str) -> Image:
        src = self.source
        path = resolve_under(src.folder, rel, [base]).path
        width, height, ext, high = probe_once(self.probed, path, path, src.max_pixels)
        return Image(path, path.relative_to(src.folder.resolve()).as_posix(), sid, width, height, ext, high)


def _str_list(obj: dict, key: str, where: str = "task_instance.") -> list[str]:
    value = obj.get(key)
    if value is None:
        raise Reject("missing_field", f"{where}{key} is missing")
    if not isinstance(value, list):
        raise Reject("bad_type", f"{where}{key} is {type(value).__name__}, not a list")
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise Reject("bad_type", f"{where}{key}[{i}] is {type(v).__name__}, not str")
    return value
