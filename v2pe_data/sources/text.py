"""A source's JSON and JSONL text, read so that a byte that is not UTF-8 costs its row, never the file.

Files are read as bytes and decoded as UTF-8 with Python's `surrogateescape`: each undecodable byte becomes
a lone surrogate (U+DC80..U+DCFF), so the JSON structure still parses (such bytes can only sit inside
strings for it to parse at all) and `need_text` finds the rows holding them, which are rejected one by one
as `bad_encoding` naming the field and the byte. Lone surrogates written as JSON escapes (`"\\ud800"`) are
not valid Unicode either and are rejected the same way. A JSONL line that does not parse and holds such a
byte is `bad_encoding` too (the byte is the likelier cause). A UTF-8 byte-order mark is skipped; a
whole-file JSON in UTF-16/32 (allowed by RFC 8259) is decoded strictly.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from pathlib import Path

from .base import Reject, SourceError

_SURROGATE = re.compile("[\ud800-\udfff]")


def decode(data: bytes) -> str:
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    return data.decode("utf-8", "surrogateescape")


def _what(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte surrogateescape kept
        return f"byte 0x{code - 0xDC00:02X}, which is not UTF-8"
    return f"a lone surrogate U+{code:04X}, which is not valid Unicode"


def bad_text(value, path: str = "") -> str | None:
    """'FIELD holds byte 0xFF, which is not UTF-8' for the first string in a parsed row (keys included)
    that is not valid Unicode, else None."""
    if isinstance(value, str):
        hit = _SURROGATE.search(value)
        return None if hit is None else f"{path or 'the row'} holds {_what(hit.group())}"
    if isinstance(value, dict):
        for key, item in value.items():
            name = key if isinstance(key, str) else str(key)
            hit = _SURROGATE.search(name)
            if hit is not None:
                return f"a field name{' in ' + path if path else ''} holds {_what(hit.group())}"
            found = bad_text(item, f"{path}.{name}" if path else name)
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = bad_text(item, f"{path}[{i}]")
            if found:
                return found
    return None


def need_text(row: dict) -> None:
    """Raise Reject(`bad_encoding`) when a row read from JSON text holds text that is not valid Unicode."""
    found = bad_text(row)
    if found:
        raise Reject("bad_encoding", found)


def read_json(path: Path, who: str):
    """A whole-file JSON annotation file, parsed; SourceError naming the file and where it fails to parse."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{who}: {path}: unreadable annotation JSON ({exc})") from None
    encoding = json.detect_encoding(data)
    try:
        text = decode(data) if encoding.startswith("utf-8") else data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise SourceError(f"{who}: {path}: not {encoding} at byte {exc.start}: {exc.reason}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if encoding.startswith("utf-8"):
            bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
            at = f"byte {bom + len(text[:exc.pos].encode('utf-8', 'surrogateescape'))}"
        else:
            at = f"character {exc.pos}"
        raise SourceError(f"{who}: {path}: not JSON at line {exc.lineno} column {exc.colno} ({at}): "
                          f"{exc.msg}") from None


def jsonl_rows(path: Path) -> Iterator[tuple[dict | Reject, int]]:
    """(row, line number) for each non-blank line of a JSONL file; a line that is not a JSON object comes as
    a Reject (`bad_encoding` when it holds bytes that are not UTF-8, else `bad_type`)."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = decode(raw) if lineno == 1 else raw.decode("utf-8", "surrogateescape")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                hit = _SURROGATE.search(line)
                if hit is not None:
                    offset = len(line[:hit.start()].encode("utf-8", "surrogateescape"))
                    yield Reject("bad_encoding", f"the line holds {_what(hit.group())} (byte {offset} of the line) "
                                                 f"and is not JSON"), lineno
                else:
                    yield Reject("bad_type", f"not JSON: {exc}"), lineno
                continue
            if not isinstance(row, dict):
                yield Reject("bad_type", f"a {type(row).__name__}, not an object"), lineno
                continue
            yield row, lineno
