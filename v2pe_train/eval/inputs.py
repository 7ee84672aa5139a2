"""What is evaluated: our build folders (any format) and MM-NIAH annotation files, as one stream of items.

An `EvalItem` carries a record the generator can prepare (the loader's contract: `schemas/sample.schema.json`),
its images' bytes (read when asked for), the object its scorer reads (our record, or the MM-NIAH line
itself), and what the report bins by (context tokens, needle/target depth).

MM-NIAH (`<root>/annotations/<task>-<text|image>.jsonl` + `<root>/images/`, or a single annotation file
with `--images`): each line's prompt is built as the benchmark builds it (`tasks.mmniah_prompt`), its
images are read under the images root (paths that leave it are refused), tiled with the given tiling, and
counted exactly; the line becomes a record whose final turn is its answer (needed by teacher forcing).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from v2pe_common import encoding, formats
from v2pe_common.choices import option_letter
from v2pe_common.paths import PathEscape, resolve_inside
from v2pe_common.template import ChatTemplate
from v2pe_common.tiling import TilingConfig, num_tiles
from v2pe_common.tokenizer import TextTokenizer
from v2pe_common.buildfolder import MANIFEST_FILE

from ..data.shards import ShardReadError, iter_samples, resolve_sources
from ..errors import V2PETrainError
from . import tasks

MMNIAH_FILE = re.compile(r"^(?P<task>[a-z]+-(?:text|image))(?:-\d+subset)?\.jsonl$")
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


class EvalInputError(V2PETrainError, ValueError):
    """An input cannot be read as a build folder or MM-NIAH file; the message names the file and the cause."""

    reason = "eval_input"


@dataclass
class EvalItem:
    id: str
    record: dict
    load_images: Callable[[], dict[str, bytes]] = field(repr=False)
    scorable: dict = field(repr=False)  # what the scorer reads: our record, or an MM-NIAH line
    score_kwargs: dict = field(default_factory=dict)
    task: str = ""
    subset: str = ""
    num_tokens: int = 0
    depth: float | list | None = None
    where: str = ""  # the input and line or sample key it came from
    mmniah_split: str = ""  # an MM-NIAH line's split (from its folder's name), for MM-NIAH's aggregation

    def score(self, prediction: str) -> float:
        return tasks.score(self.scorable, prediction, **self.score_kwargs)

    def max_new_tokens(self) -> int:
        return tasks.max_new_tokens(self.scorable, **self.score_kwargs)


def is_mmniah(path: Path) -> bool:
    path = Path(path)
    if path.is_file():
        return bool(MMNIAH_FILE.match(path.name))
    return (path / "annotations").is_dir() and not (path / MANIFEST_FILE).exists()


def iter_items(data: Sequence[str | Path], *, data_format: str = "wds", tokenizer: TextTokenizer | None = None,
               template: ChatTemplate | None = None, tiling: TilingConfig | None = None,
               images_root: str | Path | None = None, style: str = "official",
               images: bool = True) -> Iterator[EvalItem]:
    """Every item of every input, in order: build folders (their `data_format` shards) and MM-NIAH inputs.

    MM-NIAH inputs need `tokenizer`, `template` and `tiling` (the model's): they are counted here.
    Predictions and scores are keyed by item id, so an id met in two inputs is refused (builds of one task
    and split number their samples alike: long_mr-val-00000000 is in every length's build).
    """
    seen: dict[str, str] = {}
    for n, src in enumerate(data, 1):
        src = Path(src)
        if is_mmniah(src):
            if tokenizer is None or template is None or tiling is None:
                raise EvalInputError(f"{src}: MM-NIAH input needs the model's tokenizer, template and tiling")
            files = [src] if src.is_file() else sorted((src / "annotations").glob("*.jsonl"))
            root = Path(images_root) if images_root else (src.parent.parent if src.is_file() else src) / "images"
            items = (item for f in files for item in mmniah_items(f, root, tokenizer, template, tiling, style=style))
        else:
            items = build_items(src, data_format, images=images, style=style)
        for item in items:
            where = f"--data #{n} {src}: {item.where}"
            other = seen.setdefault(item.id, where)
            if other != where:
                raise EvalInputError(f"item id {item.id!r} of {where} is also that of {other}; predictions are keyed "
                                     "by id, so ids must be unique across and within --data inputs (evaluate "
                                     "clashing builds into separate --out folders)")
            yield item


def build_items(src: Path, data_format: str = "wds", *, images: bool = True,
                style: str = "official") -> Iterator[EvalItem]:
    """The samples of one of our builds, verified against the manifest like the loader's. One sample's image
    bytes are held at a time (`images=False` reads none: enough for scoring)."""
    try:
        refs = resolve_sources([str(src)], data_format)
    except ValueError as exc:
        raise EvalInputError(str(exc)) from None
    for ref in refs:
        try:
            for key, record, found in formats.read_records(iter_samples(ref), images=images):
                if record is None:
                    raise EvalInputError(f"{ref.name}:{key}: no record")
                item = _build_item(ref.name, key, record, found if images else None)
                item.score_kwargs["style"] = style
                yield item
        except (ShardReadError, formats.BadMember) as exc:
            raise EvalInputError(f"{ref.name}: {exc}") from None


def _build_item(shard: str, key: str, record: dict, found: dict[str, bytes] | None) -> EvalItem:
    meta = record.get("meta") or {}

    def load() -> dict[str, bytes]:
        if found is None:
            raise EvalInputError(f"{shard}:{key}: images were not read (scoring only)")
        return found

    return EvalItem(id=record["id"], record=record, load_images=load, scorable=record, where=f"{shard}:{key}",
                    task=record.get("task", ""), subset=record.get("subset", ""),
                    num_tokens=int(meta.get("context_length") or meta.get("num_tokens") or 0),
                    depth=meta.get("placed_depth", meta.get("depth")))


def mmniah_items(path: Path, images_root: Path, tokenizer: TextTokenizer, template: ChatTemplate,
                 tiling: TilingConfig, *, style: str = "official") -> Iterator[EvalItem]:
    m = MMNIAH_FILE.match(path.name)
    task = m.group("task") if m else path.stem
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise EvalInputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError as exc:
                raise EvalInputError(f"{path.name}:{lineno}: not JSON: {exc}") from None
            yield mmniah_item(line, task, images_root, tokenizer, template, tiling, where=f"{path.name}:{lineno}",
                              style=style, split=split_of(path))


def split_of(path: Path) -> str:
    """MM-NIAH's split of an annotation file, from its folder (mm_niah_val/annotations/...): val, test or ""."""
    for part in reversed(Path(path).resolve().parts[:-1]):
        for split in ("val", "test"):
            if part == split or part.endswith("_" + split):
                return split
    return ""


def answer_text(answer) -> str:
    """The reply the benchmark expects, as the record's final turn (teacher forcing forces it)."""
    if isinstance(answer, bool):
        raise ValueError(f"answer: expected int, list or str, got {answer!r}")
    if isinstance(answer, int):
        return option_letter(answer)
    if isinstance(answer, list):
        return json.dumps(answer)
    return str(answer)


def mmniah_item(line: dict, task: str, images_root: Path, tokenizer: TextTokenizer, template: ChatTemplate,
                tiling: TilingConfig, *, where: str, style: str = "official", split: str = "") -> EvalItem:
    try:
        text, paths = tasks.mmniah_prompt(line, style=style)
        answer = answer_text(line.get("answer"))
    except ValueError as exc:
        raise EvalInputError(f"{where}: {exc}") from None
    resolved, names, sizes = [], [], []
    for i, rel in enumerate(paths):
        try:
            full = resolve_inside(Path(images_root).resolve(), rel)
        except (PathEscape, ValueError) as exc:
            raise EvalInputError(f"{where}: images_list[{i}]: {exc}") from None
        ext = full.suffix.lower().lstrip(".")
        if ext not in ("jpg", "jpeg", "png", "webp"):
            raise EvalInputError(f"{where}: images_list[{i}]: {rel!r} is not a JPEG, PNG or WebP file")
        resolved.append(full)
        names.append(f"{i}.{ext}")
        sizes.append(_size(full, f"{where}: images_list[{i}]"))
    tiles = [num_tiles(w, h, tiling) for w, h in sizes]
    conv = [{"from": "human", "value": text}, {"from": "gpt", "value": answer}]
    try:
        counted = encoding.count(conv, tiles, tokenizer, template, tiling)
    except ValueError as exc:  # e.g. a choice text holding '<image>': more placeholders than images
        raise EvalInputError(f"{where}: {exc}") from None
    rid = _SAFE.sub("_", f"mmniah-{task}-{line.get('id', where)}")
    meta = line.get("meta") or {}
    record = {
        "id": rid, "task": "long_mr", "subset": f"mmniah_{task}", "images": names, "conversations": conv,
        "answer": line.get("answer") if not isinstance(line.get("answer"), bool) else str(line.get("answer")),
        "meta": {"seed": 0, "sample_index": 0, "target_len": counted.total, "min_len": 0, "len_bin": "",
                 "num_tokens": counted.total, "text_tokens": counted.text, "image_tokens": counted.image,
                 "tiles": tiles, "image_sizes": [list(s) for s in sizes], "template": template.name,
                 "tokenizer": tokenizer.identity, "tiling": tiling.to_dict(),
                 "sources": [{"dataset": "mm_niah", "split": "test", "id": str(p), "role": "haystack"} for p in paths]},
    }

    def load() -> dict[str, bytes]:
        out = {}
        for name, full in zip(names, resolved):
            try:
                out[name] = full.read_bytes()
            except OSError as exc:
                raise EvalInputError(f"{where}: {full}: {exc.strerror or exc}") from None
        return out

    return EvalItem(id=rid, record=record, load_images=load, scorable=line, where=where,
                    score_kwargs={"mmniah_task": task, "style": style}, task="mm_niah", subset=task, mmniah_split=split,
                    num_tokens=int(meta.get("context_length") or counted.total), depth=meta.get("placed_depth"))


MILEBENCH_V2PE_TILES = 1  # V2PE's eval_milebench.py: one 448 px tile per image (no --dynamic-image-size)


def retile(record: dict, max_tiles: int, tokenizer: TextTokenizer) -> dict:
    """`record` with its images tiled at `max_tiles` and its counts redone (tiles, tiling, token counts), so
    the loader's checks hold: how V2PE evaluates MileBench (one tile an image) whatever the build used."""
    from v2pe_common.template import get_template

    meta = record["meta"]
    tiling = TilingConfig(**{**meta["tiling"], "max_tiles": max_tiles, "min_tiles": 1})
    tiles = [num_tiles(int(w), int(h), tiling) for w, h in meta["image_sizes"]]
    counted = encoding.count(record["conversations"], tiles, tokenizer, get_template(meta["template"]), tiling)
    return {**record, "meta": {**meta, "tiles": tiles, "tiling": tiling.to_dict(), "num_tokens": counted.total,
                               "text_tokens": counted.text, "image_tokens": counted.image}}


def _size(path: Path, where: str) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(path.read_bytes())) as im:
            return im.size
    except Exception as exc:  # Pillow raises many types for unreadable headers
        raise EvalInputError(f"{where}: {path}: not a readable image: {type(exc).__name__}: {exc}") from None
