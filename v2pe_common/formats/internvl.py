"""The InternVL / V2PE-Data layout: a JSONL line per sample, its images as files under a root.

A line is the reference trainer's `{"id", "image": ["images/<id>/0.jpg", ...], "conversations"}` (image
paths relative to the root) plus the keys it ignores and our loader needs to rebuild the record exactly:
`task`, `subset`, `answer`, `meta`. A sample without images has no `image` key (the reference treats that
as text-only). Keys are sorted and JSON is compact, so the same samples give the same bytes.

A line's image paths are data: each must stay inside the root (`v2pe_common.paths.resolve_inside`),
checked before any file is opened. A meta JSON (`{name: {root, annotation, ...}}`) names one JSONL and
its image root per entry, relative paths taken from the meta file's folder.

Foreign lines. A line without our `meta` (the released V2PE-Data, any InternVL fine-tuning JSONL) is
read as is: `image` a path, a list of paths or absent (text-only), `conversations` any number of
human/gpt turns. Such a sample's first member is a `ForeignRecord`: the conversations, its images named
by their paths (a path used twice gets `#k` appended, k its position), their sizes read from the file
headers (no pixel decoded), and the entry's `max_dynamic_patch`. Tiles and token counts depend on the
trainer's tokenizer, template and tiling, so the loader computes them (`v2pe_train.data.foreign`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from v2pe_common.paths import resolve_inside
from v2pe_common.text import printable

from . import BadMember, ShardReadError, ValueMember, check_count, corrupt, fewer, open_shard, read_records

IMAGES_DIR = "images"
ANNOTATIONS_DIR = "annotations"
META_FILE = "meta.json"
_RECORD_KEYS = ("task", "subset", "answer", "meta")
# A meta entry's numbers, bounded: a tile cap above 64 enumerates aspect ratios for minutes (InternVL uses
# 6 to 24), and `repeat_time` sets how many passes an epoch makes over the entry (V2PE's largest is 6).
MAX_DYNAMIC_PATCH = 64
MAX_REPEAT_TIME = 1000  # beyond the reference's: the loader needs them


class ForeignRecord(dict):
    """A foreign line as the loader needs it: `id`, `images` (names), `conversations`, `image_sizes`
    ([w, h] per image, from the headers) and `max_dynamic_patch` (None: the loader's tiling decides)."""


def is_foreign(line: dict) -> bool:
    """A line our writer did not write: it has no `meta` (ours always does; the loader rebuilds counts from it)."""
    return "meta" not in line


def annotation_line(record: dict) -> dict:
    """The JSONL line of one record (image paths relative to the layout's root)."""
    line = {
        "id": record["id"],
        "conversations": record["conversations"],
        "task": record["task"],
        "subset": record["subset"],
        "answer": record["answer"],
        "meta": record["meta"],
    }
    if record["images"]:
        line["image"] = [f"{IMAGES_DIR}/{record['id']}/{name}" for name in record["images"]]
    return line


def line_bytes(line: dict) -> bytes:
    return (json.dumps(line, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def line_record(line: dict) -> tuple[dict, list[str]]:
    """(the record, its image paths as the line gives them): the inverse of `annotation_line`.

    BadMember("schema") for a line our writer cannot have written; a record's image names are the
    paths' base names, so they must not repeat.
    """
    paths = image_paths(line)
    missing = [k for k in _RECORD_KEYS if k not in line]
    if missing:
        raise BadMember("schema", f"line has no {missing} (not written by v2pe-data; the loader needs meta)")
    names = [p.rsplit("/", 1)[-1] for p in paths]
    if len(set(names)) != len(names):
        raise BadMember("schema", f"$.image file names repeat: {names}")
    record = {"id": line.get("id"), "task": line["task"], "subset": line["subset"], "images": names,
              "conversations": line.get("conversations"), "answer": line["answer"], "meta": line["meta"]}
    return record, paths


def image_paths(line: dict) -> list[str]:
    """The line's `image` as a list (a path, a list of paths, or absent); BadMember("schema") otherwise."""
    paths = line.get("image", [])
    paths = [paths] if isinstance(paths, str) else paths
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise BadMember("schema", "$.image must be a path or a list of paths")
    return paths


def image_size(path: Path, rel: str) -> list[int]:
    """[width, height] from an image file's header (no pixel decoded); BadMember("bad_image") otherwise."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return [int(im.size[0]), int(im.size[1])]
    except FileNotFoundError:
        raise BadMember("bad_image", f"image {rel} is missing (no file under the root)") from None
    except Exception as exc:  # Pillow raises many types for unreadable headers
        raise BadMember("bad_image", f"image {rel} has no readable image header: {type(exc).__name__}: {exc}") from None


def foreign_record(line: dict, key: str, root: Path, max_dynamic_patch: int | None) -> tuple[ForeignRecord, list[Path]]:
    """(the ForeignRecord of a line without our fields, its image files resolved under `root`).

    BadMember("schema") for a malformed `image` or `conversations`; BadMember("bad_image") for a path
    escaping the root, a missing file or an unreadable header: all before any pixel is decoded.
    """
    if line.get("video") is not None:
        raise BadMember("schema", "$.video: video samples are not read (only images)")
    paths = image_paths(line)
    conversations = line.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise BadMember("schema", "$.conversations must be a non-empty list of {from, value} turns")
    files = _resolve(root, paths)
    names = [rel if paths.index(rel) == i else f"{rel}#{i}" for i, rel in enumerate(paths)]
    sizes = [image_size(path, rel) for path, rel in zip(files, paths)]
    record = ForeignRecord(id=key, images=names, conversations=conversations, image_sizes=sizes,
                           max_dynamic_patch=max_dynamic_patch)
    return record, files


def _resolve(root: Path, paths: list[str]) -> list[Path]:
    files = []
    for rel in paths:  # before anything is read: a line must not make the reader open files elsewhere
        try:
            files.append(resolve_inside(root, rel))
        except ValueError as exc:
            raise BadMember("bad_image", f"image {exc}") from None
    return files


def internvl_root(jsonl: Path) -> Path:
    """The image root of a shard JSONL: the folder above `annotations/`, else the JSONL's own folder."""
    return jsonl.parent.parent if jsonl.parent.name == ANNOTATIONS_DIR else jsonl.parent


def meta_entries(mpath: Path) -> list[tuple[str, Path, Path]]:
    """(name, image root, annotation JSONL) per entry of a meta JSON.

    FileNotFoundError as `open` raises it; ValueError naming `mpath` for a file that is not such a meta.
    """
    return [(name, root, ann) for name, root, ann, _ in meta_entry_options(mpath)]


def meta_entry_options(mpath: Path) -> list[tuple[str, Path, Path, dict]]:
    """`meta_entries` plus each entry's checked `repeat_time` (float in [0, 1000], default 1) and
    `max_dynamic_patch` (int in [1, 64] or None); ValueError naming the file, entry and key for a value out of
    range."""
    try:
        meta = json.loads(Path(mpath).read_text())
    except ValueError as exc:
        raise ValueError(f"{mpath} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or not meta or not all(
        isinstance(v, dict) and "root" in v and "annotation" in v for v in meta.values()
    ):
        raise ValueError(f"{mpath} is not an InternVL meta file ({{name: {{root, annotation, ...}}}})")
    out = []
    for name, item in meta.items():
        bad = next((k for k in ("root", "annotation") if not isinstance(item[k], str) or not item[k].strip()), None)
        if bad is not None:
            raise ValueError(f"{mpath}: {name}.{bad} must be a non-empty path, got {item[bad]!r}")
        try:
            root, ann = Path(item["root"]).expanduser(), Path(item["annotation"]).expanduser()
        except RuntimeError as exc:  # '~someone' without such a user
            raise ValueError(f"{mpath}: {name}: {exc} in {item['root']!r} / {item['annotation']!r}") from None
        repeat, patches = item.get("repeat_time", 1), item.get("max_dynamic_patch")
        if isinstance(repeat, bool) or not isinstance(repeat, (int, float)) or not 0 <= repeat <= MAX_REPEAT_TIME:
            raise ValueError(f"{mpath}: {name}.repeat_time must be a finite number in [0, {MAX_REPEAT_TIME}], "
                             f"got {repeat!r}")
        if patches is not None and (isinstance(patches, bool) or not isinstance(patches, int)
                                    or not 1 <= patches <= MAX_DYNAMIC_PATCH):
            raise ValueError(f"{mpath}: {name}.max_dynamic_patch must be an integer in [1, {MAX_DYNAMIC_PATCH}], "
                             f"got {patches!r}")
        out.append((name, root if root.is_absolute() else mpath.parent / root,
                    ann if ann.is_absolute() else mpath.parent / ann,
                    {"repeat_time": float(repeat), "max_dynamic_patch": patches}))
    return out


class FileMember:
    """An image file of the layout, read when asked for."""

    __slots__ = ("suffix", "_path", "_rel")

    def __init__(self, suffix: str, path: Path, rel: str):
        self.suffix, self._path, self._rel = suffix, path, rel

    def read(self) -> bytes:
        try:
            return self._path.read_bytes()
        except FileNotFoundError:
            raise BadMember("bad_image", f"image {self._rel} is missing (no file under the root)") from None
        except OSError as exc:
            raise BadMember("bad_image", f"image {self._rel} cannot be read: {exc.strerror or exc}") from None


class InternVLSample:
    """One JSONL line; the record is rebuilt from it, the images are files under the root."""

    def __init__(self, raw: bytes, offset: int, lineno: int, root: Path, max_dynamic_patch: int | None = None):
        self.offset, self._root, self._error, self._patches = offset, root, None, max_dynamic_patch
        self._line = None
        try:
            line = json.loads(raw)
            if not isinstance(line, dict):
                raise ValueError("a line must be a JSON object")
            self._line = line
        except ValueError as exc:
            self._error = f"line {lineno} is not a JSON object: {exc}"
        key = self._line.get("id") if self._line is not None else None
        if isinstance(key, int) and not isinstance(key, bool):
            key = str(key)  # foreign data often numbers its lines
        self.key = printable(key) if isinstance(key, str) else f"line {lineno}"  # one line, encodable

    def members(self) -> Iterator:
        if self._error:
            raise BadMember("schema", self._error)
        if is_foreign(self._line):
            record, files = foreign_record(self._line, self.key, self._root, self._patches)
            paths = image_paths(self._line)
        else:
            record, paths = line_record(self._line)
            files = _resolve(self._root, paths)
        yield ValueMember("json", record)
        for name, rel, path in zip(record["images"], paths, files):
            yield FileMember(name, path, rel)


def iter_samples(path: Path, start: int = 0, *, num_samples: int | None = None, root: Path | None = None,
                 max_dynamic_patch: int | None = None) -> Iterator[InternVLSample]:
    """The lines of one JSONL from offset `start` (blank lines are not samples); images under `root`
    (default `internvl_root(path)`); `max_dynamic_patch` (its meta entry's) goes into foreign lines'
    records. ShardReadError as the tar reader raises it."""
    root = root if root is not None else internvl_root(path)
    fh = open_shard(path, "annotation file")
    offset = 0
    with fh:
        try:
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                if offset >= start:
                    yield InternVLSample(raw, offset, lineno, root, max_dynamic_patch)
                offset += 1
        except OSError as exc:
            raise corrupt(exc) from None
    if start > offset:
        raise fewer(start, offset)
    check_count(offset, num_samples)


def count_samples(path: Path) -> int:
    """The samples of one JSONL (its non-blank lines, as `iter_samples` counts them) without parsing a line.
    ShardReadError missing_shard / corrupt_shard as `iter_samples` raises them."""
    try:
        with open(path, "rb") as fh:
            return sum(1 for raw in fh if raw.strip())
    except FileNotFoundError:
        raise ShardReadError("missing_shard", "annotation file does not exist") from None
    except OSError as exc:
        raise corrupt(exc) from None


def read_internvl_samples(root: str | Path, annotation: str | Path | None = None) -> Iterator[tuple[dict, dict[str, bytes]]]:
    """(record, {image name: bytes}) per line of `annotation` (default: every entry of ROOT/meta.json)."""
    root = Path(root)
    files = [(root, Path(annotation))] if annotation is not None else [
        (image_root, ann) for _, image_root, ann in meta_entries(root / META_FILE)]
    for image_root, path in files:
        for _, record, images in read_records(iter_samples(path, root=image_root)):
            yield record, images
