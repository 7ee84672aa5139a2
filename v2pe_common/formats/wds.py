"""Webdataset tar shards: member names, record bytes, header fields, and the one streaming tar reader.

A sample is `KEY.json` (the record, compact JSON with sorted keys) followed by `KEY.<image name>` for each
name of `record["images"]` (`KEY.0.jpg`, `KEY.1.png`, ...). Samples are grouped as webdataset groups them:
consecutive members sharing a key, the key being the member path up to the first dot of its base name
(`s000012.json`, `s000012.0.jpg` -> key `s000012`). Every header field is fixed (mtime 0, uid 0, mode
0444), so the same samples give the same bytes.

A tar is read with the standard library's `tarfile` in stream mode (`r|*`) rather than through
webdataset: webdataset's reader has no state to save, splits nodes by the global rank (all ranks of a
context-parallel group must see the same samples), and decodes a whole sample's members at once. Here a
sample is handed to its consumer member by member while the tar is read, so an image is decoded as soon
as its bytes arrive and the bytes of a rejected sample's images are skipped, never read into memory.
`tarfile` alone ends quietly at a garbage or zeroed header and at a tar cut short at a member boundary;
the reader checks the end of the archive itself, so such a shard is corrupt, not short.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

from . import ShardReadError, check_count, corrupt, open_shard, skip_to

RECORD_SUFFIX = "json"
COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ")
TAR_ERRORS = (tarfile.TarError, EOFError, OSError, ValueError)  # zlib/lzma errors surface as these too


def member_name(key: str, suffix: str) -> str:
    """'s01', '0.jpg' -> 's01.0.jpg'; the record is suffix RECORD_SUFFIX."""
    return f"{key}.{suffix}"


def record_bytes(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def member_info(name: str, size: int) -> tarfile.TarInfo:
    """The header of one member: only the name and size vary."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def split_member(name: str) -> tuple[str, str] | None:
    """'dir/s01.0.jpg' -> ('dir/s01', '0.jpg'); None for a member without an extension."""
    head, sep, base = name.rpartition("/")
    key, dot, suffix = base.partition(".")
    if not dot:
        return None
    return (head + sep + key, suffix)


class _Cursor:
    """The tar stream with one member of lookahead; drops tarfile's member list as it goes.

    `advance()` raises ShardReadError where the stream ends other than at a proper end of archive.
    """

    def __init__(self, tar: tarfile.TarFile, fh, compressed: bool):
        self.tar, self._fh, self._compressed = tar, fh, compressed
        self.info: tarfile.TarInfo | None = None
        self.key: str | None = None
        self.suffix = ""
        self.advance()

    def advance(self) -> None:
        try:
            while True:
                info = self.tar.next()
                self.tar.members.clear()  # stream mode keeps every TarInfo otherwise
                if info is None:
                    self.info, self.key = None, None
                    self._check_end()
                    return
                parts = split_member(info.name) if info.isfile() else None
                if parts is not None:
                    self.info, (self.key, self.suffix) = info, parts
                    return
        except TAR_ERRORS as exc:
            self.info, self.key = None, None
            raise corrupt(exc) from None

    def _check_end(self) -> None:
        """tarfile ends quietly at a garbage, zeroed or missing header past the first: a tar cut short at a
        member boundary, or with a member header overwritten, reads like a shorter one. A finished tar has a
        zero block there and only zeros after it (a compressed stream cannot be checked so)."""
        if self._compressed:
            return
        end = self.tar.offset
        self._fh.seek(end)
        block = self._fh.read(tarfile.BLOCKSIZE)
        if len(block) < tarfile.BLOCKSIZE:
            raise ShardReadError("corrupt_shard", f"ends at byte {end} without the end-of-archive marker (truncated?)")
        if block != bytes(tarfile.BLOCKSIZE):
            raise ShardReadError("corrupt_shard", f"holds an invalid header at byte {end}")
        while rest := self._fh.read(1 << 16):  # padding to the record size: 10 KiB from tarfile and GNU tar
            if rest.count(0) != len(rest):
                raise ShardReadError("corrupt_shard", f"holds data after an empty header at byte {end} (a zeroed header?)")


class Member:
    """One member of the current sample; `read()` is valid until the next member is requested."""

    __slots__ = ("suffix", "size", "_tar", "_info")

    def __init__(self, suffix: str, info: tarfile.TarInfo, tar: tarfile.TarFile):
        self.suffix, self.size, self._info, self._tar = suffix, info.size, info, tar

    def read(self) -> bytes:
        try:
            data = self._tar.extractfile(self._info).read()
        except TAR_ERRORS as exc:
            raise corrupt(exc) from None
        if len(data) != self.size:
            raise ShardReadError("corrupt_shard", f"member {self._info.name} is cut short")
        return data


class TarSample:
    """A sample being streamed: its key, its index in the shard, and its members in tar order.

    When the stream breaks after one of its members, `members()` ends there and `broken` holds the
    ShardReadError: the sample is good if it had every member it needs (the shard raises the error after
    it), and otherwise was cut off by the shard's fault, not its own (the consumer raises `broken`).
    """

    def __init__(self, key: str, offset: int, cursor: _Cursor):
        self.key, self.offset, self._cursor = key, offset, cursor
        self.broken: ShardReadError | None = None

    def members(self) -> Iterator[Member]:
        cur = self._cursor
        while cur.info is not None and cur.key == self.key:
            yield Member(cur.suffix, cur.info, cur.tar)
            try:
                cur.advance()
            except ShardReadError as exc:
                self.broken = exc
                return

    def _drain(self) -> None:
        cur = self._cursor
        while cur.info is not None and cur.key == self.key:
            cur.advance()  # stream mode skips the data without handing it out


def iter_samples(path: Path, start: int = 0, *, num_samples: int | None = None,
                 root: Path | None = None) -> Iterator[TarSample]:
    """The samples of one tar from offset `start` (`root` is unused: a tar holds its images).

    ShardReadError: missing_shard when the file cannot be opened, corrupt_shard when it cannot be read, is
    cut short, has fewer than `start` samples, or holds other than `num_samples` samples (when given).
    """
    it = _iter_tar(Path(path), num_samples)
    try:
        skip_to(it, start)
        yield from it
    finally:
        it.close()


def _iter_tar(path: Path, num_samples: int | None) -> Iterator[TarSample]:
    with open_shard(path) as fh:
        compressed = fh.read(6).startswith(COMPRESSED_MAGIC)
        fh.seek(0)
        offset = 0
        try:
            with tarfile.open(fileobj=fh, mode="r|*") as tar:
                cursor = _Cursor(tar, fh, compressed)
                while cursor.info is not None:
                    sample = TarSample(cursor.key, offset, cursor)
                    yield sample
                    if sample.broken is not None:
                        raise sample.broken
                    sample._drain()
                    offset += 1
        except TAR_ERRORS as exc:
            raise corrupt(exc) from None
    check_count(offset, num_samples)
