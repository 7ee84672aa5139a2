"""Shard lists and streaming tar reading, one sample and one member at a time.

Sources are build folders (their `manifest.json`), manifest paths, tar paths or globs of tar paths. A
tar is read with the standard library's `tarfile` in stream mode (`r|*`) rather than through
webdataset: webdataset's reader has no state to save, splits nodes by the global rank (all ranks of a
context-parallel group must see the same samples), and decodes a whole sample's members at once. Here a
sample is handed to its consumer member by member while the tar is read, so an image is decoded as soon
as its bytes arrive and the bytes of a rejected sample's images are skipped, never read into memory.

Samples are grouped as webdataset groups them: consecutive members sharing a key, the key being the
member path up to the first dot of its base name (`s000012.json`, `s000012.0.jpg` -> key `s000012`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from v2pe_common import schema

MANIFEST_FILE = "manifest.json"
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ")


_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, ValueError)  # zlib/lzma errors surface as these too


class ShardReadError(Exception):
    """A shard cannot be opened or read further (missing, corrupt or truncated)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason  # "missing_shard" or "corrupt_shard"


def _corrupt(exc: BaseException) -> ShardReadError:
    return ShardReadError("corrupt_shard", f"unreadable: {type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class ShardRef:
    index: int  # position in the resolved shard list (stable across epochs and ranks)
    path: Path
    name: str  # how messages name it: '<build folder>/<path in manifest>' or the tar path as given
    num_samples: int | None = None  # promised by the manifest; None for a bare tar path


def resolve_sources(sources: Sequence[str | Path]) -> list[ShardRef]:
    """Build folders, manifest.json files, tar paths and globs -> one ordered shard list.

    Raises ValueError for a source that cannot name any shard (a folder without a manifest, a manifest
    that fails its schema, a glob matching nothing). A tar path that does not exist is kept: reading it
    is then counted as a missing shard, like a shard a manifest lists but the folder lacks.
    """
    if isinstance(sources, (str, Path)):
        sources = [sources]
    refs: list[tuple[Path, str, int | None]] = []
    for src in sources:
        src_path = Path(src).expanduser()
        if src_path.is_dir() or src_path.name == MANIFEST_FILE:
            refs.extend(_manifest_shards(src_path if src_path.is_dir() else src_path.parent, src))
        elif any(ch in str(src) for ch in "*?["):
            matches = sorted(glob.glob(str(src_path)))
            if not matches:
                raise ValueError(f"data: {src!r} matches no file")
            refs.extend((Path(m), m, None) for m in matches)
        else:
            refs.append((src_path, str(src), None))
    if not refs:
        raise ValueError("data: no shards given")
    return [ShardRef(i, path, name, n) for i, (path, name, n) in enumerate(refs)]


def _manifest_shards(folder: Path, src) -> list[tuple[Path, str, int | None]]:
    mpath = folder / MANIFEST_FILE
    if not mpath.is_file():
        raise ValueError(f"data: {src!r} has no {MANIFEST_FILE} (not a v2pe-data build, or an unfinished one)")
    try:
        manifest = json.loads(mpath.read_text())
    except ValueError as exc:
        raise ValueError(f"data: {mpath} is not valid JSON: {exc}") from None
    try:
        schema.validate(manifest, schema.MANIFEST, where=str(mpath))
    except schema.SchemaError as exc:
        raise ValueError(f"data: {exc}") from None
    out = []
    for shard in manifest["shards"]:
        if shard["format"] != "wds":
            raise ValueError(
                f"data: {mpath}: shard {shard['path']} has format {shard['format']!r}; the loader reads 'wds' tar shards"
            )
        out.append((folder / shard["path"], f"{folder.name}/{shard['path']}", int(shard["num_samples"])))
    return out


def fingerprint(shards: Sequence[ShardRef]) -> str:
    """Identity of a shard list for resume checks: names and order, not absolute paths (folders may move)."""
    digest = hashlib.sha256()
    for ref in shards:
        digest.update(ref.name.encode() + b"\0")
    return digest.hexdigest()[:16]


def epoch_order(
    shards: Sequence[ShardRef], *, seed: int, epoch: int, shuffle: bool, rank: int, world: int
) -> tuple[list[ShardRef], bool]:
    """This rank's shards for `epoch`, in reading order, and whether samples must be split too.

    The shard order of an epoch is a permutation seeded by (seed, epoch), the same on every rank. With at
    least `world` shards each rank reads every world-th shard of that order (shard granularity); with
    fewer, every rank reads all shards and keeps the samples `owns_sample` gives it (sample granularity:
    every world-th sample). Either way the ranks' samples are disjoint and together are everything.
    """
    n = len(shards)
    perm = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    ordered = [shards[int(i)] for i in perm]
    if n >= world:
        return ordered[rank::world], False
    return ordered, True


def owns_sample(ref: ShardRef, offset: int, rank: int, world: int) -> bool:
    """Sample-granularity split: sample `offset` of shard `ref` belongs to exactly one rank."""
    return (ref.index + offset) % world == rank


def split_member(name: str) -> tuple[str, str] | None:
    """'dir/s01.0.jpg' -> ('dir/s01', '0.jpg'); None for a member without an extension."""
    head, sep, base = name.rpartition("/")
    key, dot, suffix = base.partition(".")
    if not dot:
        return None
    return (head + sep + key, suffix)


class _Cursor:
    """The tar stream with one member of lookahead; drops tarfile's member list as it goes."""

    def __init__(self, tar: tarfile.TarFile):
        self.tar = tar
        self.info: tarfile.TarInfo | None = None
        self.key: str | None = None
        self.suffix = ""
        self.advance()

    def advance(self) -> None:
        while True:
            info = self.tar.next()
            self.tar.members.clear()  # stream mode keeps every TarInfo otherwise
            if info is None:
                self.info, self.key = None, None
                return
            parts = split_member(info.name) if info.isfile() else None
            if parts is not None:
                self.info, (self.key, self.suffix) = info, parts
                return


class Member:
    """One member of the current sample; `read()` is valid until the next member is requested."""

    __slots__ = ("suffix", "size", "_tar", "_info")

    def __init__(self, suffix: str, info: tarfile.TarInfo, tar: tarfile.TarFile):
        self.suffix, self.size, self._info, self._tar = suffix, info.size, info, tar

    def read(self) -> bytes:
        try:
            data = self._tar.extractfile(self._info).read()
        except _TAR_ERRORS as exc:
            raise _corrupt(exc) from None
        if len(data) != self.size:
            raise ShardReadError("corrupt_shard", f"member {self._info.name} is cut short")
        return data


class TarSample:
    """A sample being streamed: its key, its index in the shard, and its members in tar order."""

    def __init__(self, key: str, offset: int, cursor: _Cursor):
        self.key, self.offset, self._cursor = key, offset, cursor

    def members(self) -> Iterator[Member]:
        cur = self._cursor
        while cur.info is not None and cur.key == self.key:
            yield Member(cur.suffix, cur.info, cur.tar)
            try:
                cur.advance()
            except _TAR_ERRORS as exc:
                raise _corrupt(exc) from None

    def _drain(self) -> None:
        cur = self._cursor
        while cur.info is not None and cur.key == self.key:
            cur.advance()  # stream mode skips the data without handing it out


def iter_samples(ref: ShardRef) -> Iterator[TarSample]:
    """Stream the samples of one tar shard. Each must be finished with before the next is requested.

    Raises ShardReadError: missing_shard when the file cannot be opened; corrupt_shard when the tar
    cannot be read, is cut short (no end-of-archive blocks) or holds fewer or more samples than its
    manifest promises. Samples yielded before the error are good and stay delivered.
    """
    try:
        fh = open(ref.path, "rb")
    except FileNotFoundError:
        raise ShardReadError("missing_shard", "shard file does not exist") from None
    except OSError as exc:
        raise ShardReadError("missing_shard", f"cannot open: {exc.strerror or exc}") from None
    with fh:
        compressed = fh.read(6).startswith(_COMPRESSED_MAGIC)
        fh.seek(0)
        offset = 0
        try:
            with tarfile.open(fileobj=fh, mode="r|*") as tar:
                cursor = _Cursor(tar)
                while cursor.info is not None:
                    sample = TarSample(cursor.key, offset, cursor)
                    yield sample
                    sample._drain()
                    offset += 1
                end = tar.offset
        except _TAR_ERRORS as exc:
            raise _corrupt(exc) from None
        if not compressed:
            # tarfile ends quietly at a garbage or missing header past the first: a tar cut short at a
            # member boundary reads like a shorter one. A finished tar has a zero block there.
            fh.seek(end)
            block = fh.read(tarfile.BLOCKSIZE)
            if block != bytes(tarfile.BLOCKSIZE):
                if len(block) < tarfile.BLOCKSIZE:
                    what = "ends without the end-of-archive marker (truncated?)"
                else:
                    what = f"holds an invalid header at byte {end}"
                raise ShardReadError("corrupt_shard", f"{what} after {offset} samples")
    if ref.num_samples is not None and offset != ref.num_samples:
        raise ShardReadError("corrupt_shard", f"holds {offset} samples, its manifest says {ref.num_samples}")


def skip_to(samples: Iterator[TarSample], count: int) -> None:
    """Advance an `iter_samples` iterator past its next `count` samples without reading their data."""
    for _ in range(count):
        if next(samples, None) is None:
            raise ShardReadError("corrupt_shard", "has fewer samples than the saved position needs (shard changed?)")
