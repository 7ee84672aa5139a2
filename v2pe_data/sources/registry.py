"""Source entries -> source objects. A source has `name`, `split`, `item(index) -> Item`, `__len__`,
and optionally `rejected` (bad rows skipped, by reason) and `describe()` (for the manifest).

`source_files` lists what an opened source may read (size and mtime of each file), so a build can
record its sources' identity and refuse to resume against changed data."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path

from ..errors import V2PEDataError


class SourceUnavailable(V2PEDataError, RuntimeError):
    """The source's local copy is missing (or a Hub id without a network): reported and skipped unless strict."""


class SourceChanged(V2PEDataError, RuntimeError):
    """An image that the index pass checked cannot be read any more: the source changed under the build."""


def open_source(entry: dict, split: str, seed: int, image_format: str = "jpg", strict: bool = False):
    kind = entry["kind"]
    if kind == "synthetic":
        from .synthetic import SyntheticSource

        return SyntheticSource(split=split, seed=seed, kinds=entry.get("kinds"), image_format=image_format)
    path = str(entry["path"])
    if not path.startswith("hub:") and not Path(path).exists():
        raise SourceUnavailable(f"source {entry['name']!r}: no local copy at {path}")
    from .real import open_real_source

    try:
        return open_real_source(kind, path, split, strict=strict, columns=entry.get("columns"),
                                config=entry.get("config"), name=entry.get("name"))
    except OSError as exc:  # HubUnavailable is a ConnectionError: a Hub id with no network
        raise SourceUnavailable(f"source {entry['name']!r}: {exc}") from exc


class ExplainedLoads:
    """An opened source whose items' `load()` failures raise SourceChanged naming the source, item and file.

    Every image was read when the source was indexed, so a read that fails later (an image deleted or
    made unreadable mid-build) means the source changed, and the one-line error must say where.
    """

    def __init__(self, source, name: str):
        self._source, self._name = source, name

    def __getattr__(self, attr: str):
        if attr.startswith("_"):  # never recurse before __init__ ran (copy, pickle)
            raise AttributeError(attr)
        return getattr(self._source, attr)

    def __len__(self) -> int:
        return len(self._source)

    def item(self, index: int):
        item = self._source.item(index)
        return dataclasses.replace(item, load=functools.partial(_load, item.load, self._name, item.id))


def _load(load, source: str, item_id: str) -> bytes:
    try:
        return load()
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise SourceChanged(f"source {source!r}, item {item_id}: cannot read its image: {where}"
                            f"{exc.strerror or exc} (the source changed after it was indexed)") from None


# -- source identity: what a build's identity records of each source, so a resumed build never mixes data


def source_files(entry: dict, source, skip: Path | None = None) -> dict[str, list[int]]:
    """{file: [size, mtime_ns]} of every regular file an opened source may read (empty for `synthetic`).

    A local source may read anything under its root (PATH, or the folder holding PATH when PATH is a
    file: image paths are resolved against it), so every regular file under the root is listed, by
    path relative to it; `skip` (the build's own output folder, should it lie inside) is left out. A
    `hub:` source lists the Arrow cache files it reads, by absolute path. The synthetic source has no
    files: its identity is its generator (the package version) and its seed, split and kinds, all of
    which the build identity records already.

    Size plus mtime_ns, not a content hash: every ordinary write of a file (an editor, `sed -i`, a
    re-download, a copy without `-p`) sets its mtime, and one `stat` per file costs milliseconds where
    hashing gigabytes of images would cost minutes. A copy made with preserved mtimes and identical
    bytes keeps the fingerprint; a copy with new mtimes changes it (a false alarm, never a miss).
    """
    if entry["kind"] == "synthetic":
        return {}
    path = str(entry["path"])
    if path.startswith("hub:"):
        files = [Path(f) for f in (source.describe().get("files") or [])] if hasattr(source, "describe") else []
        return {str(f): _stat(f) for f in sorted(files)}
    root = Path(path).expanduser().resolve()
    if root.is_file():
        root = root.parent
    skip_real = os.path.realpath(skip) if skip is not None else None
    listing, seen = {}, set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop, or a folder linked twice
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) != skip_real)
        for name in filenames:
            full = Path(dirpath, name)
            if full.is_file():
                listing[full.relative_to(root).as_posix()] = _stat(full)
    return dict(sorted(listing.items()))


def _stat(path: Path) -> list[int]:
    try:
        st = path.stat()
    except OSError:  # gone or unreadable: recorded as such, so its return is noticed too
        return [-1, -1]
    return [st.st_size, st.st_mtime_ns]


def listing_digest(listing: dict[str, list[int]]) -> str:
    return hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()


def source_fingerprint(entry: dict, available: bool, listing: dict[str, list[int]]) -> dict:
    """What a build identity records of one source: its availability and a digest of `source_files`.

    Availability counts: a source that appears on a rerun changes the mix of every sample.
    """
    ident = {"name": entry["name"], "kind": entry["kind"], "status": "available" if available else "unavailable"}
    if available and entry["kind"] != "synthetic":
        ident.update(files=len(listing), bytes=sum(max(v[0], 0) for v in listing.values()),
                     sha256=listing_digest(listing))
    return ident


def fingerprint_change(then: list[dict], now: list[dict], listings_then: list | None, listings_now: list,
                       when: str) -> str | None:
    """"source 'x' changed WHEN: a.json (size 1 -> 2)" for the first source whose fingerprint differs, or
    None. The files are named when `listings_then` (as recorded beside the fingerprints) is at hand."""
    for i, (old, new) in enumerate(zip(then, now)):
        if old == new:
            continue
        head = f"source {new['name']!r} changed {when}"
        if old.get("status") != new["status"]:
            return f"{head}: it was {old.get('status')} then and is {new['status']} now"
        if isinstance(listings_then, list) and i < len(listings_then) and isinstance(listings_then[i], dict) \
                and listing_digest(listings_then[i]) == old.get("sha256"):
            return f"{head}: {describe_change(listings_then[i], listings_now[i])}"
        return (f"{head}: {old.get('files')} files of {old.get('bytes')} bytes then, "
                f"{new.get('files')} files of {new.get('bytes')} bytes now")
    return None


def describe_change(old: dict[str, list[int]], new: dict[str, list[int]], limit: int = 3) -> str:
    """'a.json (size 1234 -> 1240), img/7.png (removed)': which files differ between two listings."""
    changes = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if before is None or before[0] < 0:
            changes.append(f"{name} (added)")
        elif after is None or after[0] < 0:
            changes.append(f"{name} (removed)")
        elif before[0] != after[0]:
            changes.append(f"{name} (size {before[0]} -> {after[0]})")
        else:
            changes.append(f"{name} (modified: mtime changed, same size)")
    more = f" and {len(changes) - limit} more" if len(changes) > limit else ""
    return ", ".join(changes[:limit]) + more if changes else "no file differs"
