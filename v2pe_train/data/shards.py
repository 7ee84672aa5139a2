"""Shard lists: which shards a run reads, in which order on which rank, and whether each is the one built.

Sources are build folders (their `manifest.json`), manifest paths, shard paths or globs of them, and
InternVL meta files. Three shard formats hold the same records; how a record is stored in each, and the
streaming readers that give it back one sample and one member at a time, are the on-disk contract in
`v2pe_common.formats` (shared with the builder's writers):

- `wds`: tar shards, `KEY.json` then `KEY.0.jpg`, ...;
- `parquet`: one row per sample, read a row group at a time;
- `internvl`: a JSONL of the reference trainer's lines plus image files under a root.

A build folder can hold several formats of the same samples; `resolve_sources(..., format=)` reads the
shards of one format only, so no sample is read twice. A shard path is read in the format its name
says (`.parquet`, `.jsonl`, else tar); a `meta.json` of the InternVL layout (or a folder holding one and
no manifest) names one JSONL and its image root per entry. Whatever the format, a sample's position is
(shard index, offset in the shard), and `iter_samples(ref, start)` starts at an offset.

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from v2pe_common import formats, schema
# The sample types and errors of the readers, named here for the loader's sample processor.
from v2pe_common.formats import BadMember, ShardReadError, skip_to  # noqa: F401
from v2pe_common.formats.internvl import META_FILE as INTERNVL_META
from v2pe_common.formats.internvl import InternVLSample, internvl_root, meta_entry_options
from v2pe_common.formats.parquet import ParquetSample  # noqa: F401
from v2pe_common.formats.wds import TarSample
from v2pe_common.paths import cached_digest
from v2pe_common.buildfolder import MANIFEST_FILE

FORMATS = formats.READ_FORMATS


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
    repeat_time: float | None = None  # an InternVL meta entry's; None: not from a meta file (see mixture.py)
    max_dynamic_patch: int | None = None  # an InternVL meta entry's tile cap for foreign lines


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
        entries = meta_entry_options(mpath)
    except FileNotFoundError:
        raise ValueError(f"data: {src!r} does not exist") from None
    except ValueError as exc:
        raise ValueError(f"data: {exc}") from None
    return [{"path": ann, "name": f"{mpath.parent.name}/{name}", "format": "internvl", "root": root, **options}
            for name, root, ann, options in entries]


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
            "the build; train with --no-verify-shards (data.verify_shards: false) to read shards edited on purpose)"
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
    options = {"max_dynamic_patch": ref.max_dynamic_patch} if ref.format == "internvl" else {}
    samples = formats.iter_samples(ref.format, ref.path, start, num_samples=ref.num_samples, root=ref.root, **options)
    return _verified(ref, samples) if verify and ref.sha256 is not None else samples


def _verified(ref: ShardRef, samples: Iterator) -> Iterator:
    verify_shard(ref)  # the whole file, before its first sample exists
    yield from samples
