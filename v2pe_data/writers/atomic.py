"""Write-then-rename, so no partial file is ever visible under its final name."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path


class AtomicFile:
    """A hidden temporary sibling of `final`: `commit()` fsyncs and renames it, `abort()` deletes it."""

    def __init__(self, final: Path):
        self.final = Path(final)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.final.with_name(f".{self.final.name}.tmp")

    def commit(self) -> Path:
        with open(self.tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        self.tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(final: Path):
    """Yield a temporary path that becomes `final` only if the block completes."""
    target = AtomicFile(final)
    try:
        yield target.tmp
    except BaseException:
        target.abort()
        raise
    target.commit()


def write_json_atomic(path: Path, obj: object) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def file_digest(path: Path, chunk: int = 1 << 20) -> tuple[int, str]:
    """(size in bytes, sha256 hex) without reading the file into memory at once."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()
