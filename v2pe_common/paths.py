"""Files on disk as both sides must see them: where a relative path may lead, and what a file holds.

`resolve_inside` is the one rule for a path read from data (an image path in a record or a source's
table): it must stay inside its root, lexically and after symlinks. `file_digest` is the size and
sha256 a manifest records for a shard; `cached_digest` is the same for a reader that checks a file once
per process rather than once per epoch.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path


class PathEscape(ValueError):
    """A path taken from data leads outside the folder it must stay in."""


def inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_inside(root: Path, rel: str, base: Path | None = None) -> Path:
    """The real path (symlinks followed) of `rel`, relative to `base` (default `root`), if it stays in `root`.

    Raises PathEscape ("path escapes the root: ...") for a path whose normal form climbs out of its base
    (`../`), an absolute path outside `root`, or one whose real path leaves `root` (a symlink out). The
    path need not exist; the caller decides what a missing file means. Backslashes count as separators,
    so a Windows-written `..\\x` is caught too. A path that cannot be resolved at all (a symlink loop, a
    NUL byte) raises a plain ValueError.
    """
    root = Path(root).resolve()
    norm = os.path.normpath(rel.replace("\\", "/"))
    if os.path.isabs(norm):
        cand = Path(norm)  # judged by its real path below: it may spell the root through a symlink
    elif norm == ".." or norm.startswith("../"):
        raise PathEscape(f"path escapes the root: {rel!r} climbs out of it")
    else:
        cand = Path(os.path.normpath((Path(base).resolve() if base is not None else root) / norm))
        if not inside(cand, root):
            raise PathEscape(f"path escapes the root: {rel!r} under {base} is outside {root}")
    try:
        real = cand.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, names too long, NUL bytes
        raise ValueError(f"{rel!r} cannot be resolved: {exc}") from None
    if not inside(real, root):
        raise PathEscape(f"path escapes the root: {rel!r} resolves to {real}, outside {root}")
    return real


def file_digest(path: str | Path, chunk: int = 1 << 20) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file, read in chunks (never whole into memory)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


# A file changed again within its file system's timestamp granularity keeps its (size, mtime): a digest
# taken that soon after a change is not cached (git's "racy" rule), so a quick edit is still noticed.
_RACY_NS = 2_000_000_000
_CACHE_MAX = 1 << 16
_digests: dict[tuple, tuple[int, str]] = {}


def cached_digest(path: str | Path) -> tuple[int, str]:
    """`file_digest`, remembered for this process while the file keeps its (path, inode, size, mtime, ctime).

    Raises OSError (FileNotFoundError, ...) as `open` does.
    """
    st = os.stat(path)
    key = (os.fspath(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    hit = _digests.get(key)
    if hit is not None:
        return hit
    started = time.time_ns()
    result = file_digest(path)
    if started - max(st.st_mtime_ns, st.st_ctime_ns) > _RACY_NS and result[0] == st.st_size:
        if len(_digests) >= _CACHE_MAX:
            _digests.pop(next(iter(_digests)))  # oldest first; a run rarely lists this many shards
        _digests[key] = result
    return result


def forget_digests() -> None:
    """Drop every remembered digest (benchmarks time the first, uncached check with it)."""
    _digests.clear()
