"""Write-then-rename, so no partial file is ever visible under its final name."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from v2pe_common.paths import file_digest  # noqa: F401  (re-exported: writers hash what they commit)


@contextlib.contextmanager
def errors_name(path: str | os.PathLike):
    """OSErrors raised in the block name `path` when they name no file of their own.

    A failed `write()`, `flush()` or `fsync()` (a full disk, `ulimit -f`) raises an OSError without a
    file name; the caller's one-line error must still say which file could not be written.
    """
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = os.fspath(path)
        raise


class AtomicFile:
    """A hidden temporary sibling of `final`: `commit()` fsyncs and renames it, `abort()` deletes it.

    The temporary name carries the process id, so two processes writing the same file never write into
    one temporary; one left by a killed process is removed by the next build that locks the folder.
    """

    def __init__(self, final: Path):
        self.final = Path(final)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.final.with_name(f".{self.final.name}.{os.getpid()}.tmp")

    def commit(self) -> Path:
        with errors_name(self.tmp), open(self.tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        """Delete the temporary; never raises, since it runs while another error is on its way up."""
        try:
            self.tmp.unlink(missing_ok=True)
        except OSError:  # left for the stale-temporary sweep of the next build
            pass


@contextlib.contextmanager
def atomic_path(final: Path):
    """Yield a temporary path that becomes `final` only if the block completes."""
    target = AtomicFile(final)
    try:
        with errors_name(target.tmp):
            yield target.tmp
    except BaseException:
        target.abort()
        raise
    target.commit()


def write_json_atomic(path: Path, obj: object) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
