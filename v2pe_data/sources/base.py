"""What every real (on-disk or Hub) source shares: the index pass, bad-row accounting and lazy image bytes.

A real source is opened once: the *index pass* reads every row of the requested split, validates it and
keeps, for each valid row, only what an `Item` needs (a few strings, the image size and a *locator* from
which the original encoded bytes can be read again). Decoded pixels and image bytes are never kept.

Validation of one row, in order (the first failure decides the reason):

1. text that is not valid Unicode (`bad_encoding`): a JSON / JSONL row holding a byte that is not UTF-8
   (see `text`), or an Arrow / parquet row whose string cell does not decode; the row's id is read first
   when it can be, so the rejection names it;
2. required fields present and non-empty (`missing_field`) and of the right type (`bad_type`);
3. an id that an earlier item of the source already has (`duplicate_id`): the first row keeps it, the
   detail names the id and both rows' locations;
4. an image is present (`missing_image`): embedded bytes, or a file that exists under the source root; a
   path that resolves outside the root (`../`, an absolute path, a symlink) is `path_escape`;
5. the header is read with Pillow (`corrupt_image` if unreadable); `width * height <= max_pixels` is
   checked *before* decoding (`too_many_pixels`); a format other than JPEG / PNG / WebP is `bad_type`;
6. a full decode (`im.load()`) catches truncated or otherwise corrupt data (`corrupt_image`).

Images are opened through their format's Pillow plugin, not `Image.open`, whose decompression-bomb check
reads the process-wide `Image.MAX_IMAGE_PIXELS`: our `max_pixels` replaces it and that global is never
written. Pillow has no per-call switch for `ImageFile.LOAD_TRUNCATED_IMAGES`; when the caller has turned it
on it is turned off while an image is checked (so truncated data stays `corrupt_image`) and restored
afterwards -- only then is a process global touched, so do not open sources from several threads while
it is on.

High-bit-depth images (16-bit grey PNGs decode to mode `I;16`, which `convert("RGB")` clips to white) are
valid; their items' `load()` returns an 8-bit PNG re-encoding (`v2pe_common.images.to_8bit`), not the
original bytes, so every reader of the shards gets the right pixels; `describe()` counts them
(`images_reencoded`).

Bad rows are skipped and recorded in `source.rejected` as `{"reason", "source", "id", "detail", "where"}`;
the id is the row's original id when it could be read, else `#N` (N = the row number in file order);
`where` locates the row (`FILE:LINE` for JSONL, `FILE data[I]` for JSON, `FILE row N` for tables). With
`strict=True` the first bad row raises `SourceError("SOURCE:ID: reason: detail (where)")` instead.

Item order is file order: files sorted by name (shard numbers are zero-padded), rows in file order;
`item(i)` indexes the valid rows only.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from v2pe_common.text import has_surrogate, printable

from ..records import Item
from .errors import REASONS, Reject, SourceError
from .errors import HubUnavailable, tagged  # noqa: F401  (re-exported: adapters and tests import them from here)
from .imagebytes import FORMAT_EXT, probe, probe_once, read_8bit_png, read_bytes  # noqa: F401  (FORMAT_EXT, probe re-exported)

# Pillow's default decompression-bomb limit (Image.MAX_IMAGE_PIXELS): 0.25 GiB of 24-bit pixels / 3.
DEFAULT_MAX_PIXELS = 89_478_485

# Split names as the caller writes them -> every spelling a layout may use on disk, preferred first.
_SPLIT_GROUPS = (("train",), ("val", "validation", "valid", "dev"), ("test",))


def split_aliases(split: str) -> tuple[str, ...]:
    """'val' -> ('val', 'validation', 'valid', 'dev'): the names a split may carry on disk, the caller's first."""
    low = split.lower()
    for group in _SPLIT_GROUPS:
        if low in group:
            return (split,) + tuple(g for g in group if g != split)
    return (split,)


def same_split(a: str, b: str) -> bool:
    return a.lower() in tuple(s.lower() for s in split_aliases(b))


# ------------------------------------------------------------------------------------------ row fields


def need_str(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None:
        raise Reject("missing_field", f"{key} is missing" if key not in row else f"{key} is null")
    if not isinstance(value, str):
        raise Reject("bad_type", f"{key} is {type(value).__name__}, not str")
    if not value.strip():
        raise Reject("missing_field", f"{key} is empty")
    return value


def check_id(text: str, key: str) -> str:
    """The row-boundary check of an id that will be written (shard records, manifests): a lone surrogate
    cannot be encoded as UTF-8, so the row is `bad_encoding`, named by the id's printable form."""
    ch = has_surrogate(text)
    if ch is not None:
        raise Reject("bad_encoding", f"{key} holds a lone surrogate U+{ord(ch):04X}, which is not valid Unicode",
                     id=printable(text))
    return text


def need_id(row: dict, key: str) -> str:
    """An original id: a non-empty str or an int (JSON releases use ints, Hub copies strings), encodable."""
    value = row.get(key)
    if value is None:
        raise Reject("missing_field", f"{key} is missing" if key not in row else f"{key} is null")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise Reject("bad_type", f"{key} is {type(value).__name__}, not str or int")
    text = str(value).strip()
    if not text:
        raise Reject("missing_field", f"{key} is empty")
    return check_id(text, key)


def opt_id(row: dict, key: str) -> str | None:
    """An id to name a row by, if it has one: printable, so a rejection naming it can always be written."""
    value = row.get(key)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip():
        return None
    return printable(str(value).strip())


def need_answers(row: dict, key: str, allow_str: bool = False) -> tuple[str, ...]:
    """A non-empty list of strings (or one string where the layout stores one); empty strings and repeats
    are dropped, order kept (the first answer is the training target)."""
    value = row.get(key)
    if value is None:
        raise Reject("missing_field", f"{key} is missing" if key not in row else f"{key} is null")
    if isinstance(value, str) and allow_str:
        value = [value]
    if not isinstance(value, (list, tuple)):
        kinds = "a list of str or a str" if allow_str else "a list of str"
        raise Reject("bad_type", f"{key} is {type(value).__name__}, not {kinds}")
    for i, a in enumerate(value):
        if not isinstance(a, str):
            raise Reject("bad_type", f"{key}[{i}] is {type(a).__name__}, not str")
    out = tuple(dict.fromkeys(a for a in value if a.strip()))
    if not out:
        raise Reject("missing_field", f"{key} holds no non-empty answer")
    return out


def opt_label(value) -> str:
    """An optional type / tag field: a str, a list of str (joined with ','), anything else ignored."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    return ""


# ------------------------------------------------------------------------------------------ images


@dataclass(frozen=True, slots=True)
class Embedded:
    """Image bytes stored in a table cell; `locator` reads them again later."""

    data: bytes
    locator: tuple


@dataclass(frozen=True, slots=True)
class OnDisk:
    """An image file under the source root (already resolved and checked to lie inside it)."""

    path: Path


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_under(root: Path, rel: str, bases: Iterable[Path], fallbacks: Iterable[Path] = ()) -> OnDisk:
    """Find image `rel` (relative to one of `bases`, or its file name in one of `fallbacks`) inside `root`.

    A path whose normal form climbs out of its base (`../`), an absolute path outside `root`, and a
    candidate whose real path (symlinks followed) leaves `root` are `path_escape`; no existing candidate
    is `missing_image`. Bases and fallbacks outside `root` are never searched.
    """
    if not isinstance(rel, str):
        raise Reject("bad_type", f"image path is {type(rel).__name__}, not str")
    if not rel.strip():
        raise Reject("missing_image", "image path is empty")
    root = root.resolve()
    norm = os.path.normpath(rel.replace("\\", "/"))
    if os.path.isabs(norm):
        if not _inside(Path(norm), root):
            raise Reject("path_escape", f"{rel!r} is an absolute path outside {root}")
        candidates = [Path(norm)]
    elif norm == ".." or norm.startswith("../"):
        raise Reject("path_escape", f"{rel!r} leaves the source root")
    else:
        candidates = [Path(os.path.normpath(Path(b) / norm)) for b in bases]
        candidates += [Path(os.path.normpath(Path(f) / Path(norm).name)) for f in fallbacks]
        candidates = [c for c in dict.fromkeys(candidates) if _inside(c, root)]
    for cand in candidates:
        try:
            real = cand.resolve()
            if not _inside(real, root):
                raise Reject("path_escape", f"{rel!r} resolves to {real}, outside {root}")
            if real.is_file():
                return OnDisk(real)
        except (OSError, ValueError, RuntimeError) as exc:  # NUL bytes, names too long, symlink loops
            raise Reject("missing_image", f"{rel!r}: cannot resolve: {exc}") from None
    raise Reject("missing_image", f"{rel!r} not found under {root}")


def image_from_cell(value, locator: tuple, root: Path, bases: Iterable[Path] = ()) -> Embedded | OnDisk:
    """A table cell of an image column: a `datasets.Image` struct {bytes, path}, raw binary, or a path."""
    if value is None:
        raise Reject("missing_image", "image is null")
    if isinstance(value, dict):
        data = value.get("bytes")
        if data:
            return Embedded(bytes(data), locator)
        path = value.get("path")
        if path:
            return resolve_under(root, path, bases or [root])
        raise Reject("missing_image", "image struct holds neither bytes nor a path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        if not len(value):
            raise Reject("missing_image", "image bytes are empty")
        return Embedded(bytes(value), locator)
    if isinstance(value, str):
        return resolve_under(root, value, bases or [root])
    raise Reject("bad_type", f"image is {type(value).__name__}, not bytes, an image struct or a path")


# ------------------------------------------------------------------------------------------ the source


@dataclass(frozen=True, slots=True)
class Entry:
    """A valid row: everything an Item needs, without pixels or bytes."""

    id: str
    doc_id: str
    width: int
    height: int
    ext: str
    question: str
    answers: tuple[str, ...]
    question_type: str
    locator: tuple
    reencode: bool = False  # a high-bit-depth image: load() gives an 8-bit PNG of it


@dataclass(frozen=True, slots=True)
class Row:
    """A parsed row whose image has not been checked yet. `doc_id=None`: use the image's content hash."""

    id: str
    question: str
    answers: tuple[str, ...]
    image: Embedded | OnDisk
    doc_id: str | None = None
    question_type: str = ""


def content_doc_id(data: bytes) -> str:
    """How a document without a name is named: its image's content hash."""
    return "sha1:" + hashlib.sha1(data).hexdigest()[:16]


class RealSource:
    """A real dataset's split, indexed at open. `item(i)` is the i-th valid row in file order."""

    def __init__(self, *, name: str, kind: str, path: str, split: str, layout: str, strict: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS, details: dict | None = None):
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
            raise SourceError(f"{name}: max_pixels must be a positive int, got {max_pixels!r}")
        self.name, self.kind, self.path, self.split, self.layout = name, kind, str(path), split, layout
        self.strict, self.max_pixels = strict, max_pixels
        self.details = dict(details or {})
        self.rejected: list[dict] = []
        self.rows_seen = 0
        self.rows_other_split = 0
        self._entries: list[Entry] = []
        self._probed: dict[bytes | str, tuple | Reject] = {}  # content hash / file path -> probe result
        self._ids: dict[str, str] = {}  # item id -> where its row is, during the index pass

    # -- the index pass

    def consider(self, rownum: int, parse: Callable[[], Row], id_hint: str | None = None,
                 where: str | None = None) -> Entry | None:
        """Parse and validate one row; a bad row is recorded (or raised under strict) and None returned.

        `where` locates the row for people (`FILE:LINE`, `FILE row N`); default `row N`."""
        self.rows_seen += 1
        rid = id_hint or f"#{rownum}"
        where = where or f"row {rownum}"
        try:
            row = parse()
            rid = row.id
            first = self._ids.get(rid)
            if first is not None:
                raise Reject("duplicate_id",
                             f"id {rid!r} already taken by the row at {first}; this row is at {where}")
            entry = self._admit(row)
        except Reject as bad:
            self.reject(bad.id or rid, bad.reason, bad.detail, where)
            return None
        self._ids[rid] = where
        self._entries.append(entry)
        return entry

    def fail(self, rownum: int, bad: Reject, where: str | None = None) -> None:
        """Count a row found bad before it could be parsed (an unreadable line, a missing split value)."""
        self.rows_seen += 1
        self.reject(bad.id or f"#{rownum}", bad.reason, bad.detail, where or f"row {rownum}")

    def reject(self, rid: str, reason: str, detail: str, where: str | None = None) -> None:
        # undecodable bytes (lone surrogates) would break whoever writes the manifest as UTF-8
        rid, detail, where = (printable(x) if x is not None else None for x in (rid, detail, where))
        if self.strict:
            at = f" ({where})" if where else ""
            raise SourceError(f"{self.name}:{rid}: {reason}: {detail}{at}", reason=reason,
                              source=self.name, id=rid)
        self.rejected.append({"reason": reason, "source": self.name, "id": rid, "detail": detail,
                              "where": where})

    def _admit(self, row: Row) -> Entry:
        """Check the row's image (each distinct image is decoded once) and make its Entry; raises Reject."""
        if isinstance(row.image, Embedded):
            data, locator = row.image.data, row.image.locator
            digest = hashlib.sha1(data).digest()
            key: bytes | str = digest
        else:
            data, locator, digest = None, ("file", str(row.image.path)), None
            key = str(row.image.path)
        # a file is opened by path: its header is checked before the rest of it is read
        width, height, ext, high_depth = probe_once(self._probed, key,
                                                    data if data is not None else row.image.path, self.max_pixels)
        doc_id = row.doc_id
        if doc_id is None:
            if digest is None:
                try:
                    digest = hashlib.sha1(row.image.path.read_bytes()).digest()
                except OSError as exc:
                    raise Reject("missing_image", f"cannot read {row.image.path}: {exc}") from None
            doc_id = "sha1:" + digest.hex()[:16]
        return Entry(id=row.id, doc_id=doc_id, width=width, height=height, ext=ext, question=row.question,
                     answers=row.answers, question_type=row.question_type, locator=locator, reencode=high_depth)

    def screen(self, control) -> None:
        """Apply a `v2pe_common.control` policy to every kept row's question and answers: a row holding a
        control token is rejected as `special_token` (strict: raised), or its text neutralised."""
        from v2pe_common.control import ControlTokenError

        kept = []
        for e in self._entries:
            try:
                question = control.apply(e.question, "question")
                answers = tuple(control.apply(a, f"answers[{i}]") for i, a in enumerate(e.answers))
            except ControlTokenError as exc:
                self.reject(e.id, "special_token", str(exc), None)
                continue
            changed = question is not e.question or any(a is not b for a, b in zip(answers, e.answers))
            kept.append(dataclasses.replace(e, question=question, answers=answers) if changed else e)
        self._entries = kept

    def finish(self) -> RealSource:
        self._probed.clear()
        self._ids.clear()
        return self

    # -- the Source protocol

    def __len__(self) -> int:
        return len(self._entries)

    def item(self, index: int) -> Item:
        if not 0 <= index < len(self._entries):
            raise IndexError(f"{self.name}: index {index} outside [0, {len(self._entries)})")
        e = self._entries[index]
        # a re-encode is a PNG whatever the original was (only PNG decodes to high-bit-depth modes)
        ext, load = ("png", read_8bit_png) if e.reencode else (e.ext, read_bytes)
        return Item(dataset=self.name, split=self.split, id=e.id, doc_id=e.doc_id, width=e.width,
                    height=e.height, ext=ext, question=e.question, answers=e.answers,
                    load=functools.partial(load, e.locator), title="", question_type=e.question_type)

    def describe(self) -> dict:
        counts = dict.fromkeys(REASONS, 0)
        for row in self.rejected:
            counts[row["reason"]] += 1
        return {"kind": self.kind, "dataset": self.name, "path": self.path, "split": self.split,
                "layout": self.layout, **self.details, "rows_seen": self.rows_seen,
                "rows_other_split": self.rows_other_split, "items_valid": len(self._entries),
                "images_reencoded": sum(e.reencode for e in self._entries), "rejected": counts,
                "max_pixels": self.max_pixels}

    def __repr__(self) -> str:
        return (f"RealSource(name={self.name!r}, split={self.split!r}, layout={self.layout!r}, "
                f"items={len(self)}, rejected={len(self.rejected)})")
