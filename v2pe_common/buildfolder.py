"""A build folder's layout, the one contract the builder, its executors and every reader share.

    OUT/build.json                 identity of the build (arguments, versions, sources' files, build_id)
    OUT/manifest.json              written last, from the markers: present means the build is complete
    OUT/.v2pe/done/000000.json     per-task completion marker with its files, hashes and stats
    OUT/.v2pe/sources.json         per source, the size and mtime of each file it may read
    OUT/.v2pe/paths.json           the real paths of local sources (never published)
    OUT/.v2pe/lock                 flock'ed for the life of a build: one build per folder at a time
    OUT/.v2pe/lock-I-of-N          a sharded run's own lock (`--num-shards N --shard-index I`)
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

MANIFEST_FILE = "manifest.json"
BUILD_FILE = "build.json"
PRIVATE_DIR = ".v2pe"
DONE_DIR = f"{PRIVATE_DIR}/done"
SOURCES_FILE = f"{PRIVATE_DIR}/sources.json"
PATHS_FILE = f"{PRIVATE_DIR}/paths.json"
LOCK_FILE = f"{PRIVATE_DIR}/lock"


class FolderBusy(Exception):
    """Another process holds the lock asked for; `path` is the lock file."""

    def __init__(self, path: Path):
        super().__init__(f"{path} is locked by another process")
        self.path = path


def marker_path(out: Path, index: int) -> Path:
    """The completion marker of shard task `index`."""
    return Path(out) / DONE_DIR / f"{index:06d}.json"


def shard_lock_name(shard_index: int, num_shards: int) -> str:
    return f"{LOCK_FILE}-{shard_index}-of-{num_shards}"


def lock(out: Path, name: str = LOCK_FILE, shared: bool = False) -> int:
    """flock OUT/NAME for this process without waiting (the kernel drops it when the process dies, however it
    dies); returns the descriptor, FolderBusy when another process holds it."""
    path = Path(out) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderBusy(path) from None
    return fd


def unlock(fds: tuple[int, ...]) -> None:
    """Close the descriptors `lock` gave. In a forked child this drops only its copy: flock is per open file, so
    the parent keeps the lock."""
    for fd in fds:
        os.close(fd)
