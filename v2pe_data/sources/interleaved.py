"""Interleaved image-text documents (OBELICS style) from local JSONL or parquet: the real Long-MR haystack.

A row is one document: two aligned lists, `texts` and `images`, where position i holds either a text
(`images[i]` is None) or an image (`texts[i]` is None). An image is raw bytes or a `{"bytes", "path"}`
struct (parquet), or a path relative to the file's folder or the source root (both layouts). An optional
`id` column names the document; without it the document is named by its file and line (row).

Layouts, for split SPLIT (`val` also matches `validation`, `valid`, `dev`), as the other real sources:
`ROOT/SPLIT.jsonl`, `ROOT/SPLIT-*.jsonl` (or under `ROOT/data/`), ROOT itself a `.jsonl` named after its
split, or Hub-style parquet (`SPLIT-*.parquet`, `data/SPLIT-*.parquet`, `SPLIT/*.parquet`). The root against
which every image path must stay is ROOT (its folder when ROOT is a file).

Every row is validated when the source is opened; the first failure decides the reason:

* `bad_encoding`: a JSONL line (or a parquet string) holding bytes that are not UTF-8;
* `bad_type`: a line that is not a JSON object, `texts` / `images` not lists, a text that is not a str;
* `missing_field`: no `texts` or no `images` list;
* `misaligned`: lists of different lengths, a position where both or neither are set, or a text holding the
  image placeholder `<image>` (it would shift every later image of a sample);
* `empty_document`: no image and no text with a non-blank character;
* `special_token`: a text holding a control token of the build's tokenizer or template (`<IMG_CONTEXT>`,
  `<|im_start|>`, `</img>`, ...; `v2pe_common.control`), unless the build neutralises them;
* `missing_image`, `path_escape`, `corrupt_image`, `too_many_pixels`: an image, checked as the other real
  sources check theirs (`base.resolve_under`, `base.probe`).

A bad row is skipped whole (a document missing one of its images is not the document any more) and
recorded in `rejected` as `{"reason", "source", "id", "where", "detail"}` with `where` = `FILE:LINE`
(JSONL) or `FILE row group G row R` (parquet); `strict=True` raises `SourceError` at the first one.

Only what planning needs is kept per valid document: its id, where its row is, and each image's size and
locator. `document(i)` reads the row's texts again; images are read only when their item's `load()` runs.
"""

from __future__ import annotations

import codecs
import functools
import io
import json
from dataclasses import dataclass
from pathlib import Path

from ..records import Item
from .base import (DEFAULT_MAX_PIXELS, Embedded, Reject, SourceError, check_id, image_from_cell, printable, probe,
                   read_bytes, split_aliases)
from .layouts import find_parquet, iter_rows, row_where
from .errors import BadRow

IMAGE_PLACEHOLDER = "<image>"
REASONS = ("bad_encoding", "bad_type", "missing_field", "misaligned", "empty_document", "special_token",
           "missing_image", "path_escape", "corrupt_image", "too_many_pixels")
COLUMNS = ("texts", "images", "id")


@dataclass(frozen=True, slots=True)
class Document:
    """One interleaved document: `blocks` in reading order, each a text (str) or an image (`Item`)."""

    dataset: str
    split: str
    doc_id: str
    blocks: tuple[str | Item, ...]

    @property
    def images(self) -> list[Item]:
        return [b for b in self.blocks if isinstance(b, Item)]


@dataclass(frozen=True, slots=True)
class _Image:
    width: int
    height: int
    ext: str
    locator: tuple
    high_depth: bool


@dataclass(frozen=True, slots=True)
class _Entry:
    id: str
    row: tuple  # ("jsonl", file, byte offset) | ("parquet", file, row group, offset)
    layout: tuple[int | _Image, ...]  # per position: a text's index in `texts`, or an image


# ------------------------------------------------------------------------------------------ lazy reads


def read_image(locator: tuple, high_depth: bool = False) -> bytes:
    """Encoded bytes of one image (module-level, so `partial(read_image, ...)` pickles).

    ("parquet-item", file, column, row group, offset, position) is element `position` of a list cell; any
    other locator is `base.read_bytes`'s. High-bit-depth images come back as 8-bit PNG, as the other
    real sources give them, so every reader sees the right pixels.
    """
    if locator[0] == "parquet-item":
        from .imagebytes import parquet_column

        _, path, column, group, offset, pos = locator
        value = parquet_column(path, group, column)[offset].values[pos].as_py()
        data = value.get("bytes") if isinstance(value, dict) else value
        if not data:
            raise OSError(f"{path}: image bytes vanished from row group {group} row {offset} since it was indexed")
        data = bytes(data)
    else:
        data = read_bytes(locator)
    if not high_depth:
        return data
    from PIL import Image

    from v2pe_common.images import to_8bit

    out = io.BytesIO()
    with Image.open(io.BytesIO(data)) as im:  # probed at indexing, under max_pixels
        to_8bit(im).save(out, "PNG")
    return out.getvalue()


@functools.lru_cache(maxsize=4)
def _parquet_texts(path: str, group: int):
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).read_row_group(group, columns=["texts"]).column("texts")


def _read_texts(row: tuple) -> list:
    if row[0] == "jsonl":
        _, path, offset = row
        with open(path, "rb") as fh:
            fh.seek(offset)
            return json.loads(fh.readline().decode("utf-8"))["texts"]
    _, path, group, offset = row
    return _parquet_texts(path, group)[offset].as_py()


# ------------------------------------------------------------------------------------------ the source


class InterleavedSource:
    """A split of an interleaved document set, indexed at open; `document(i)` is the i-th valid row."""

    kind = "interleaved"

    def __init__(self, name: str, path: str, split: str, layout: str, root: Path, strict: bool,
                 max_pixels: int, files: list[Path], control=None):
        self.name, self.path, self.split, self.layout = name, path, split, layout
        self.control = control  # v2pe_common.control policy, or None (texts taken as they are)
        self.root, self.strict, self.max_pixels, self.files = root, strict, max_pixels, files
        self.rejected: list[dict] = []
        self.rows_seen = 0
        self._entries: list[_Entry] = []
        self._ids: set[str] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"InterleavedSource(name={self.name!r}, split={self.split!r}, documents={len(self)}, " \
               f"rejected={len(self.rejected)})"

    def document(self, index: int) -> Document:
        if not 0 <= index < len(self._entries):
            raise IndexError(f"{self.name}: document {index} outside [0, {len(self._entries)})")
        e = self._entries[index]
        try:
            texts = _read_texts(e.row)
            if not isinstance(texts, list) or any(not isinstance(texts[k], str) for k in e.layout
                                                  if isinstance(k, int)):
                raise ValueError("its texts differ from the indexed ones")
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise SourceError(f"{self.name}:{e.id}: document changed since the source was indexed ({exc}); "
                              f"rebuild from an unchanged copy", source=self.name, id=e.id) from None
        doc_id = f"{self.name}:{e.id}"
        blocks: list[str | Item] = []
        for k, part in enumerate(e.layout):
            if isinstance(part, int):
                text = texts[part]
                blocks.append(self.control.neutralise(text) if self.control is not None else text)
                continue
            ext = "png" if part.high_depth else part.ext
            blocks.append(Item(dataset=self.name, split=self.split, id=f"{e.id}#{k}", doc_id=doc_id,
                               width=part.width, height=part.height, ext=ext, question="", answers=("",),
                               load=functools.partial(read_image, part.locator, part.high_depth)))
        return Document(dataset=self.name, split=self.split, doc_id=doc_id, blocks=tuple(blocks))

    def describe(self) -> dict:
        counts = dict.fromkeys(REASONS, 0)
        for row in self.rejected:
            counts[row["reason"]] += 1
        return {"kind": self.kind, "dataset": self.name, "path": self.path, "split": self.split,
                "layout": self.layout, "files": [str(f) for f in self.files], "rows_seen": self.rows_seen,
                "documents_valid": len(self._entries), "rejected": counts, "max_pixels": self.max_pixels}

    # -- the index pass

    def _reject(self, rid: str, where: str, reason: str, detail: str) -> None:
        rid, where, detail = printable(rid), printable(where), printable(detail)
        if self.strict:
            raise SourceError(f"{self.name}:{rid}: {reason}: {detail} ({where})", reason=reason,
                              source=self.name, id=rid)
        self.rejected.append({"reason": reason, "source": self.name, "id": rid, "where": where, "detail": detail})

    def _consider(self, row: dict | Reject, rid: str, where: str, locate, base_dir: Path) -> None:
        """Validate one row; keep its entry or record why not. `locate(pos)` is an embedded image's locator."""
        self.rows_seen += 1
        try:
            if isinstance(row, Reject):
                raise BadRow(row.reason, row.detail)
            rid = _row_id(row) or rid
            check_id(rid, "id")
            layout = self._check(row, locate, base_dir)
        except BadRow as bad:
            self._reject(rid, where, bad.reason, bad.detail)
            return
        except Reject as bad:
            self._reject(bad.id or rid, where, bad.reason, bad.detail)
            return
        if rid in self._ids:  # a repeated id must not make two documents one (doc_id keeps them apart)
            rid = f"{rid}@{where}"
        self._ids.add(rid)
        self._entries.append(_Entry(id=rid, row=locate(None), layout=layout))

    def _check(self, row: dict, locate, base_dir: Path) -> tuple[int | _Image, ...]:
        texts, images = row.get("texts"), row.get("images")
        for key, value in (("texts", texts), ("images", images)):
            if value is None:
                raise BadRow("missing_field", f"{key} is missing" if key not in row else f"{key} is null")
            if not isinstance(value, list):
                raise BadRow("bad_type", f"{key} is {type(value).__name__}, not a list")
        if len(texts) != len(images):
            raise BadRow("misaligned", f"texts has {len(texts)} entries, images {len(images)}")
        layout: list[int | _Image] = []
        content = False
        for pos, (text, image) in enumerate(zip(texts, images)):
            if (text is None) == (image is None):
                state = "both set" if text is not None else "neither set"
                raise BadRow("misaligned", f"position {pos}: texts and images are {state}")
            if text is not None:
                if not isinstance(text, str):
                    raise BadRow("bad_type", f"texts[{pos}] is {type(text).__name__}, not str")
                _check_unicode(text, pos)
                if IMAGE_PLACEHOLDER in text:
                    raise BadRow("misaligned", f"texts[{pos}] holds the image placeholder {IMAGE_PLACEHOLDER!r}")
                token = self.control.find(text) if self.control is not None else None
                if token is not None and self.control.mode == "skip":
                    raise BadRow("special_token", f"texts[{pos}] holds the control token {token!r}")
                if text.strip():
                    layout.append(pos)
                    content = True
                continue
            layout.append(self._image(image, pos, locate, base_dir))
            content = True
        if not content:
            raise BadRow("empty_document", f"no image and no non-blank text in {len(texts)} positions")
        return tuple(layout)

    def _image(self, value, pos: int, locate, base_dir: Path) -> _Image:
        try:
            if isinstance(value, str) and value.startswith(("http://", "https://")):
                raise BadRow("missing_image", f"images[{pos}] is a URL ({value[:80]}); fetch images to local "
                                              f"files first")
            data = value.get("bytes") if isinstance(value, dict) else None
            if data is not None and not isinstance(data, (bytes, bytearray, memoryview)):
                raise BadRow("bad_type", f"images[{pos}].bytes is {type(data).__name__}, not binary (JSONL "
                                         f"images are paths; embedded bytes need parquet)")
            ref = image_from_cell(value, locate(pos), self.root, [base_dir, self.root])
            width, height, ext, high = probe(ref.data if isinstance(ref, Embedded) else ref.path, self.max_pixels)
        except Reject as bad:
            raise BadRow(bad.reason, f"images[{pos}]: {bad.detail}") from None
        locator = ref.locator if isinstance(ref, Embedded) else ("file", str(ref.path))
        return _Image(width, height, ext, locator, high)


def _row_id(row: dict) -> str | None:
    value = row.get("id")
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip():
        return None
    return str(value).strip()


def _check_unicode(text: str, pos: int) -> None:
    from .text import bad_text

    found = bad_text(text, f"texts[{pos}]")
    if found:
        raise BadRow("bad_encoding", found)


# ------------------------------------------------------------------------------------------ opening


def _jsonl_files(root: Path, split: str) -> list[Path]:
    aliases = split_aliases(split)
    if root.is_file():
        stem = root.name.split(".")[0]
        if root.suffix == ".jsonl" and any(stem == a or stem.startswith(f"{a}-") for a in aliases):
            return [root]
        return []
    for d in (root, root / "data"):
        for alias in aliases:
            files = ([d / f"{alias}.jsonl"] if (d / f"{alias}.jsonl").is_file() else []) + sorted(
                d.glob(f"{alias}-*.jsonl"))
            if files:
                return files
    return []


def open_interleaved(path, split: str, *, name: str = "interleaved", strict: bool = False,
                     max_pixels: int = DEFAULT_MAX_PIXELS, control=None) -> InterleavedSource:
    """Open split `split` of the documents at `path` (a folder, or one `.jsonl` / `.parquet` file); `control`
    (a `v2pe_common.control` policy) rejects or neutralises texts holding control tokens."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise SourceError(f"{name}: max_pixels must be a positive int, got {max_pixels!r}")
    target = Path(path).expanduser().resolve()
    if not target.exists():
        raise SourceError(f"{name}: no such file or folder: {target}")
    root = target.parent if target.is_file() else target
    jsonl = _jsonl_files(target, split)
    if jsonl:
        src = InterleavedSource(name, str(path), split, "jsonl", root, strict, max_pixels, jsonl, control)
        for file in jsonl:
            _index_jsonl(src, file)
        return src
    tables = find_parquet(target, split, None, name)
    if tables is None:
        raise SourceError(f"{name}: no {split!r} split under {target}: looked for SPLIT.jsonl, SPLIT-*.jsonl "
                          f"and SPLIT-*.parquet (also under data/)")
    missing = [c for c in ("texts", "images") if c not in tables.columns]
    if missing:
        raise SourceError(f"{name}: {target} (parquet) lacks columns {missing}; it has {list(tables.columns)}")
    src = InterleavedSource(name, str(path), split, "parquet", root, strict, max_pixels, list(tables.files), control)
    for _, row, prefix in iter_rows(tables, list(COLUMNS)):
        _, file, group, offset = prefix

        def locate(pos, file=file, group=group, offset=offset):
            if pos is None:
                return ("parquet", file, group, offset)
            return ("parquet-item", file, "images", group, offset, pos)
        src._consider(row, f"{Path(file).name}:{group}:{offset}", row_where(prefix), locate, Path(file).parent)
    return src


def _index_jsonl(src: InterleavedSource, file: Path) -> None:
    """Each line read as bytes: a line that is not UTF-8 costs that line only, never the file."""
    with open(file, "rb") as fh:
        lineno, offset = 0, 0
        for raw in fh:
            lineno += 1
            start, offset = offset, offset + len(raw)
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):  # re-reads seek past it too
                start, raw = len(codecs.BOM_UTF8), raw[len(codecs.BOM_UTF8):]
            if not raw.strip():
                continue
            where = f"{file.name}:{lineno}"
            row: dict | Reject
            try:
                parsed = json.loads(raw.decode("utf-8"))
                row = parsed if isinstance(parsed, dict) else Reject(
                    "bad_type", f"a {type(parsed).__name__}, not an object")
            except UnicodeDecodeError as exc:
                row = Reject("bad_encoding", f"byte 0x{raw[exc.start]:02X} at byte {exc.start} of the line is "
                                             f"not UTF-8")
            except ValueError as exc:
                row = Reject("bad_type", f"not JSON: {exc}")

            def locate(pos, file=file, start=start):
                return ("jsonl", str(file), start) if pos is None else None
            src._consider(row, where, where, locate, file.parent)
