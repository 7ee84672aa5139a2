"""Shard lists and streaming shard reading, one sample and one member at a time.

Sources are build folders (their `manifest.json`), manifest paths, shard paths or globs of them, and
InternVL meta files. Three shard formats hold the same records (see `v2pe_data.writers`):

- `wds`: tar shards, `KEY.json` then `KEY.0.jpg`, ... (below);
- `parquet`: one row per sample (`_iter_parquet`), read a row group at a time;
- `internvl`: a JSONL of the reference trainer's lines plus image files under a root (`_iter_internvl`).

A build folder can hold several formats of the same samples; `resolve_sources(..., format=)` reads the
shards of one format only, so no sample is read twice. A shard path is read in the format its name
says (`.parquet`, `.jsonl`, else tar); a `meta.json` of the InternVL layout (or a folder holding one and
no manifest) names one JSONL and its image root per entry. Whatever the format, a sample's position is
(shard index, offset in the shard), and `iter_samples(ref, start)` starts at an offset.

A tar is read with the standard library's `tarfile` in stream mode (`r|*`) rather than through
webdataset: webdataset's reader has no state to save, splits nodes by the global rank (all ranks of a
context-parallel group must see the same samples), and decodes a whole sample's members at once. Here a
sample is handed to its consumer member by member while the tar is read, so an image is decoded as soon
as its bytes arrive and the bytes of a rejected sample's images are skipped, never read into memory.

Samples are grouped as webdataset groups them: consecutive members sharing a key, the key being the
member path up to the first dot of its base name (`s000012.json`, `s000012.0.jpg` -> key `s000012`).

Verification. A shard listed by a manifest carries the size and sha256 the manifest records; before the
first sample of it is handed out, `iter_samples` reads the whole file once and compares (`checksum`), so
no sample of an edited or damaged shard is ever used. The digest is remembered per process while the
file keeps its path, inode, size and timestamps (`v2pe_common.paths.cached_digest`): later epochs cost a
`stat`. What the manifest does not hash is not verified: shard paths, globs and InternVL meta files
given without a manifest, and the image files of the InternVL layout (the manifest hashes its JSONL
only; an image file that is missing, unreadable or does not decode is still counted per sample).
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
from v2pe_common.paths import cached_digest, resolve_inside

MANIFEST_FILE = "manifest.json"
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ")


_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, ValueError)  # zlib/lzma errors surface as these too
FORMATS = ("wds", "parquet", "internvl")
INTERNVL_META = "meta.json"


class ShardReadError(Exception):
    """A shard cannot be opened or read further (missing, corrupt or truncated)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason  # "missing_shard", "corrupt_shard" or "checksum"


def _corrupt(exc: BaseException) -> ShardReadError:
    return ShardReadError("corrupt_shard", f"unreadable: {type(exc).__name__}: {exc}")


class BadMember(Exception):
    """One sample cannot be used (its record row/line is malformed, an image file is missing); the shard goes on.

    `reason` is a sample-level reason of stats.REASONS ("schema" or "bad_image").
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ShardRef:
    index: int  # position in the resolved shard list (stable across epochs and ranks)
    path: Path
    name: str  # how messages name it: '<build folder>/<path in manifest>' or the path as given
    num_samples: int | None = None  # promised by the manifest; None for a bare path
    format: str = "wds"  # wds | parquet | internvl
    root: Path | None = None  # internvl: the folder image paths are relative to
    sha256: str | None = None  # the manifest's digest of the file; None (not verifiable) for a bare path
    size: int | None = None  # the manifest's `bytes`


def resolve_sources(sources: Sequence[str | Path], format: str = "wds") -> list[ShardRef]:
    """Build folders, manifest.json files, InternVL meta files, shard paths and globs -> one ordered shard list.

    `format` picks which shards of a build folder (manifest) are read; a shard path is read in the
    format its extension names. Raises ValueError for a source that cannot name any shard (a folder
    without a manifest, a manifest that fails its schema or holds no shard of `format`, a glob matching
    nothing). A shard path that does not exist is kept: reading it is then counted as a missing shard,
    like a shard a manifest lists but the folder lacks.
    """
    if format not in FORMATS:
        raise ValueError(f"data: format must be one of {list(FORMATS)}, got {format!r}")
    if isinstance(sources, (str, Path)):
        sources = [sources]
    refs: list[dict] = []
    for src in sources:
        src_path = Path(src).expanduser()
        if src_path.is_dir() and not (src_path / MANIFEST_FILE).is_file() and (src_path / INTERNVL_META).is_file():
            refs.extend(_internvl_meta_shards(src_path / INTERNVL_META, src))
        elif src_path.is_dir() or src_path.name == MANIFEST_FILE:
            refs.extend(_manifest_shards(src_path if src_path.is_dir() else src_path.parent, src, format))
        elif src_path.suffix == ".json":
            refs.extend(_internvl_meta_shards(src_path, src))
        elif any(ch in str(src) for ch in "*?["):
            matches = sorted(glob.glob(str(src_path)))
            if not matches:
                raise ValueError(f"data: {src!r} matches no file")
            refs.extend(_path_shard(Path(m), m) for m in matches)
        else:
            refs.append(_path_shard(src_path, str(src)))
    if not refs:
        raise ValueError("data: no shards given")
    return [ShardRef(i, **r) for i, r in enumerate(refs)]


def _path_shard(path: Path, name: str) -> dict:
    if path.suffix == ".parquet":
        return {"path": path, "name": name, "format": "parquet"}
    if path.suffix == ".jsonl":
        return {"path": path, "name": name, "format": "internvl", "root": internvl_root(path)}
    return {"path": path, "name": name}


def internvl_root(jsonl: Path) -> Path:
    """The image root of a shard JSONL: the folder above `annotations/`, else the JSONL's own folder."""
    return jsonl.parent.parent if jsonl.parent.name == "annotations" else jsonl.parent


def _manifest_shards(folder: Path, src, format: str) -> list[dict]:
    mpath = folder / MANIFEST_FILE
    try:
        manifest = schema.load_manifest(mpath)
    except ValueError as exc:
        raise ValueError(f"data: {src!r}: {exc}") from None
    present = sorted({shard["format"] for shard in manifest["shards"]})
    out = []
    for shard in manifest["shards"]:
        if shard["format"] != format:
            continue
        path = folder / shard["path"]
        ref = {"path": path, "name": f"{folder.name}/{shard['path']}", "num_samples": int(shard["num_samples"]),
               "format": format, "sha256": shard["sha256"], "size": int(shard["bytes"])}
        if format == "internvl":
            ref["root"] = internvl_root(path)
        out.append(ref)
    if not out and manifest["shards"]:
        raise ValueError(
            f"data: {mpath} holds no {format!r} shards (formats present: {', '.join(present)}); "
            f"set the loader's format to one of them"
        )
    return out


def _internvl_meta_shards(mpath: Path, src) -> list[dict]:
    """One shard per entry of an InternVL meta JSON; relative paths are taken from the meta file's folder."""
    try:
        meta = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise ValueError(f"data: {src!r} does not exist") from None
    except ValueError as exc:
        raise ValueError(f"data: {mpath} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or not meta or not all(
        isinstance(v, dict) and "root" in v and "annotation" in v for v in meta.values()
    ):
        raise ValueError(f"data: {mpath} is not an InternVL meta file ({{name: {{root, annotation, ...}}}})")
    out = []
    for name, item in meta.items():
        root, ann = Path(item["root"]).expanduser(), Path(item["annotation"]).expanduser()
        root = root if root.is_absolute() else mpath.parent / root
        ann = ann if ann.is_absolute() else mpath.parent / ann
        out.append({"path": ann, "name": f"{mpath.parent.name}/{name}", "format": "internvl", "root": root})
    return out


def fingerprint(shards: Sequence[ShardRef]) -> str:
    """Identity of a shard list for resume checks: names and order, not absolute paths (folders may move)."""
    digest = hashlib.sha256()
    for ref in shards:
        digest.update(ref.name.encode() + b"\0")
    return digest.hexdigest()[:16]


def content_fingerprint(shards: Sequence[ShardRef]) -> str:
    """Identity of the shards' content as their manifests record it: a shard rebuilt under its old name changes it."""
    digest = hashlib.sha256()
    for ref in shards:
        digest.update((ref.sha256 or "-").encode() + b"\0")
    return digest.hexdigest()[:16]


def verify_shard(ref: ShardRef) -> None:
    """Raise ShardReadError unless the shard file has the size and sha256 its manifest lists (no-op without one).

    `checksum` for a differing size or digest, `missing_shard` when the file cannot be opened.
    """
    if ref.sha256 is None:
        return
    try:
        size = ref.path.stat().st_size
        if ref.size is not None and size != ref.size:
            raise ShardReadError("checksum", f"is {size} bytes, its manifest says {ref.size} (cut short or replaced)")
        _, digest = cached_digest(ref.path)
    except FileNotFoundError:
        raise ShardReadError("missing_shard", "shard file does not exist") from None
    except OSError as exc:
        raise ShardReadError("missing_shard", f"cannot read: {exc.strerror or exc}") from None
    if digest != ref.sha256:
        raise ShardReadError(
            "checksum", f"sha256 {digest[:16]}… differs from its manifest's {ref.sha256[:16]}… (content changed since "
            "the build; train with --no-verify-shards (verify_shards: false; LoaderConfig.verify=False) to read shards edited on purpose)"
        )


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
        except _TAR_ERRORS as exc:
            self.info, self.key = None, None
            raise _corrupt(exc) from None

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
        except _TAR_ERRORS as exc:
            raise _corrupt(exc) from None
        if len(data) != self.size:
            raise ShardReadError("corrupt_shard", f"member {self._info.name} is cut short")
        return data


class TarSample:
    """A sample being streamed: its key, its index in the shard, and its members in tar order.

    When the stream breaks after one of its members, `members()` ends there and `broken` holds the
    ShardReadError: the sample is good if it had every member it needs (the shard raises the error after
    it), and otherwise was cut off by the shard's fault, not its own (`SampleProcessor` raises `broken`).
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


def iter_samples(ref: ShardRef, start: int = 0, *,
                 verify: bool = True) -> Iterator[TarSample | ParquetSample | InternVLSample]:
    """Stream the samples of one shard from offset `start`. Each must be finished with before the next is requested.

    A sample has `key` (its id), `offset` (its index in the shard) and `members()`: the record first
    (suffix "json"; bytes from a tar, the parsed dict otherwise), then its images. Raises ShardReadError:
    missing_shard when the file cannot be opened; checksum (with `verify`, before any sample) when the
    file differs from its manifest's size or sha256; corrupt_shard when it cannot be read, is cut short,
    has fewer than `start` samples, or holds fewer or more samples than its manifest promises. Samples
    yielded before the error are good and stay delivered.
    """
    if ref.format == "parquet":
        samples = _iter_parquet(ref, start)
    elif ref.format == "internvl":
        samples = _iter_internvl(ref, start)
    else:
        samples = _iter_tar_from(ref, start)
    return _verified(ref, samples) if verify and ref.sha256 is not None else samples


def _verified(ref: ShardRef, samples: Iterator) -> Iterator:
    verify_shard(ref)  # the whole file, before its first sample exists
    yield from samples


def _iter_tar_from(ref: ShardRef, start: int) -> Iterator[TarSample]:
    it = _iter_tar(ref)
    try:
        skip_to(it, start)
        yield from it
    finally:
        it.close()


def _iter_tar(ref: ShardRef) -> Iterator[TarSample]:
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
                cursor = _Cursor(tar, fh, compressed)
                while cursor.info is not None:
                    sample = TarSample(cursor.key, offset, cursor)
                    yield sample
                    if sample.broken is not None:
                        raise sample.broken
                    sample._drain()
                    offset += 1
        except _TAR_ERRORS as exc:
            raise _corrupt(exc) from None
    _check_count(ref, offset)


def skip_to(samples: Iterator, count: int) -> None:
    """Advance an `iter_samples` iterator past its next `count` samples without reading their data."""
    for _ in range(count):
        if next(samples, None) is None:
            raise ShardReadError("corrupt_shard", "has fewer samples than the saved position needs (shard changed?)")


def _fewer(start: int, n: int) -> ShardReadError:
    return ShardReadError("corrupt_shard", f"has {n} samples, fewer than the saved position {start} needs (shard changed?)")


def _check_count(ref: ShardRef, n: int) -> None:
    if ref.num_samples is not None and n != ref.num_samples:
        raise ShardReadError("corrupt_shard", f"holds {n} samples, its manifest says {ref.num_samples}")


class ValueMember:
    """A member whose value is at hand: the parsed record (suffix "json") or an image's bytes."""

    __slots__ = ("suffix", "_value")

    def __init__(self, suffix: str, value):
        self.suffix, self._value = suffix, value

    def read(self):
        return self._value


# -- parquet ---------------------------------------------------------------------------------------
PARQUET_COLUMNS = ("id", "task", "subset", "images", "conversations", "answer", "meta")


class _RowGroup:
    """One row group of a parquet shard, read whole on first use (a row group holds few, large rows)."""

    def __init__(self, pf, index: int, columns: list[str]):
        self.pf, self.index, self.columns = pf, index, columns
        self.table = None

    def get(self):
        if self.table is None:
            import pyarrow as pa

            try:
                self.table = self.pf.read_row_group(self.index, columns=self.columns)
            except (pa.ArrowException, OSError, ValueError, EOFError) as exc:
                raise _corrupt(exc) from None
        return self.table


class ParquetSample:
    """One row of a parquet shard; its columns are read only when `members()` is asked for."""

    def __init__(self, key: str, offset: int, group: _RowGroup, row: int):
        self.key, self.offset, self._group, self._row = key, offset, group, row

    def members(self) -> Iterator[ValueMember]:
        table = self._group.get()
        i = self._row
        try:
            images = table.column("images")[i]
            cols = {c: table.column(c)[i].as_py() for c in table.column_names if c != "images"}
            if not images.is_valid:
                raise BadMember("schema", "$.images is null")
            values = images.values
            paths = values.field("path").to_pylist()
            meta = json.loads(cols["meta"]) if isinstance(cols["meta"], str) else None
            answer = cols["answer"]
            if cols.get("answer_json") and isinstance(answer, str):
                answer = json.loads(answer)
            record = {
                "id": cols["id"], "task": cols["task"], "subset": cols["subset"], "images": paths,
                "conversations": cols["conversations"], "answer": answer, "meta": meta,
            }
        except ValueError as exc:  # json errors
            raise BadMember("schema", f"row {self.offset}: {exc}") from None
        yield ValueMember("json", record)
        blobs = values.field("bytes")
        for j, name in enumerate(paths):
            data = blobs[j].as_py()
            if data is None:
                raise BadMember("bad_image", f"image {name} has no bytes")
            yield ValueMember(name, data)


def _iter_parquet(ref: ShardRef, start: int) -> Iterator[ParquetSample]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    errors = (pa.ArrowException, OSError, ValueError, EOFError)
    try:
        pf = pq.ParquetFile(str(ref.path), page_checksum_verification=True)  # native reads, no Python file object
    except FileNotFoundError:
        raise ShardReadError("missing_shard", "shard file does not exist") from None
    except PermissionError as exc:
        raise ShardReadError("missing_shard", f"cannot open: {exc.strerror or exc}") from None
    except errors as exc:
        raise _corrupt(exc) from None
    try:
        try:
            names = pf.schema_arrow.names
            sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
        except errors as exc:
            raise _corrupt(exc) from None
        missing = [c for c in PARQUET_COLUMNS if c not in names]
        if missing:
            raise ShardReadError("corrupt_shard", f"not a v2pe parquet shard: no column(s) {missing}")
        columns = list(PARQUET_COLUMNS) + (["answer_json"] if "answer_json" in names else [])
        total = sum(sizes)
        if start > total:
            raise _fewer(start, total)
        offset = 0
        for g, rows in enumerate(sizes):
            if offset + rows <= start:
                offset += rows
                continue
            try:
                ids = pf.read_row_group(g, columns=["id"]).column("id").to_pylist()
            except errors as exc:
                raise _corrupt(exc) from None
            group = _RowGroup(pf, g, columns)
            for i in range(max(0, start - offset), rows):
                yield ParquetSample(ids[i] if isinstance(ids[i], str) else f"row {offset + i}", offset + i, group, i)
            offset += rows
    finally:
        pf.close()
    _check_count(ref, total)


# -- InternVL layout -------------------------------------------------------------------------------
class FileMember:
    """An image file of the InternVL layout, read when asked for."""

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

    def __init__(self, raw: bytes, offset: int, lineno: int, root: Path):
        self.offset, self._root, self._error = offset, root, None
        self._line = None
        try:
            line = json.loads(raw)
            if not isinstance(line, dict):
                raise ValueError("a line must be a JSON object")
            self._line = line
        except ValueError as exc:
            self._error = f"line {lineno} is not a JSON object: {exc}"
        key = self._line.get("id") if self._line is not None else None
        self.key = key if isinstance(key, str) else f"line {lineno}"

    def members(self) -> Iterator:
        if self._error:
            raise BadMember("schema", self._error)
        line = self._line
        paths = line.get("image", [])
        paths = [paths] if isinstance(paths, str) else paths
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise BadMember("schema", "$.image must be a path or a list of paths")
        missing = [k for k in ("task", "subset", "answer", "meta") if k not in line]
        if missing:
            raise BadMember("schema", f"line has no {missing} (not written by v2pe-data; the loader needs meta)")
        names = [p.rsplit("/", 1)[-1] for p in paths]
        if len(set(names)) != len(names):
            raise BadMember("schema", f"$.image file names repeat: {names}")
        files = []
        for rel in paths:  # before anything is read: a line must not make the trainer open files elsewhere
            try:
                files.append(resolve_inside(self._root, rel))
            except ValueError as exc:
                raise BadMember("bad_image", f"image {exc}") from None
        record = {"id": line.get("id"), "task": line["task"], "subset": line["subset"], "images": names,
                  "conversations": line.get("conversations"), "answer": line["answer"], "meta": line["meta"]}
        yield ValueMember("json", record)
        for name, rel, path in zip(names, paths, files):
            yield FileMember(name, path, rel)


def _iter_internvl(ref: ShardRef, start: int) -> Iterator[InternVLSample]:
    root = ref.root if ref.root is not None else internvl_root(ref.path)
    try:
        fh = open(ref.path, "rb")
    except FileNotFoundError:
        raise ShardReadError("missing_shard", "annotation file does not exist") from None
    except OSError as exc:
        raise ShardReadError("missing_shard", f"cannot open: {exc.strerror or exc}") from None
    offset = 0
    with fh:
        try:
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                if offset >= start:
                    yield InternVLSample(raw, offset, lineno, root)
                offset += 1
        except OSError as exc:
            raise _corrupt(exc) from None
    if start > offset:
        raise _fewer(start, offset)
    _check_count(ref, offset)
