"""The streaming protocol every format's writer follows, and its atomic step.

A writer takes a sample as `begin(record)`, then `add_image(name, data)` for each name of
`record["images"]` in order (the encoded bytes, loaded once by the builder and handed to every writer),
then `end()`; `num_samples` counts the samples written and `size()` the bytes so far. A writer never
decodes an image and holds at most one sample's encoded bytes.

A shard writer (what a format registry entry opens, `ShardWriter`) adds the atomic step: `commit()`
makes its output visible under its final name(s) and says what it made (`Committed`: a file, its
samples and tokens), `abort()` removes everything it wrote and never raises, and `staged` names the
temporary being written (for errors that name no file of their own).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Protocol

from .atomic import AtomicFile

from ..errors import V2PEDataError


class WriterError(V2PEDataError, ValueError):
    """The builder broke the writer protocol (images out of order, a sample left open, ...)."""


class SampleWriter(Protocol):
    format: str
    num_samples: int

    def begin(self, record: dict) -> None: ...

    def add_image(self, name: str, data: bytes) -> None: ...

    def end(self) -> None: ...

    def close(self) -> None: ...

    def size(self) -> int: ...


class Committed(NamedTuple):
    """One file a shard writer made visible: the manifest entry's file, with its samples and tokens."""

    path: Path
    num_samples: int
    num_tokens: int


class ShardWriter(Protocol):
    staged: Path
    num_samples: int

    def begin(self, record: dict) -> None: ...

    def add_image(self, name: str, data: bytes) -> None: ...

    def end(self) -> None: ...

    def size(self) -> int: ...

    def commit(self) -> list[Committed]: ...

    def abort(self) -> None: ...


def shard_name(split: str, index: int, part: int | None = None) -> str:
    """`<split>-<task:06d>`, or `<split>-<task:06d>-<part:03d>` for a part of a byte-capped task."""
    return f"{split}-{index:06d}" + ("" if part is None else f"-{part:03d}")


class ImageOrder:
    """Checks that a sample's images arrive exactly as `record["images"]` lists them."""

    def __init__(self) -> None:
        self.names: list[str] | None = None
        self.next = 0

    def start(self, record: dict) -> None:
        if self.names is not None:
            raise WriterError(f"begin({record.get('id')!r}) while sample {self.key!r} is open")
        self.key = record["id"]
        self.names = list(record["images"])
        self.next = 0

    def image(self, name: str) -> int:
        if self.names is None:
            raise WriterError(f"add_image({name!r}) outside begin()/end()")
        if self.next >= len(self.names) or self.names[self.next] != name:
            expect = self.names[self.next] if self.next < len(self.names) else "no more images"
            raise WriterError(f"sample {self.key!r}: got image {name!r}, expected {expect!r}")
        self.next += 1
        return self.next - 1

    def finish(self) -> None:
        if self.names is None:
            raise WriterError("end() without begin()")
        if self.next != len(self.names):
            raise WriterError(f"sample {self.key!r}: end() after {self.next} of {len(self.names)} images")
        self.names = None

    @property
    def open(self) -> bool:
        return self.names is not None


class FileShard:
    """A shard writer for a format whose shard is one file: the writer, plus how that file is committed.

    `finish()` makes the file visible and returns its final path; `discard()` removes what was written
    and never raises.
    """

    def __init__(self, writer: SampleWriter, staged: Path, finish: Callable[[], Path], discard: Callable[[], None]):
        self.writer, self.staged = writer, Path(staged)
        self._finish, self._discard = finish, discard
        self.num_tokens = 0
        self._tokens = 0

    def begin(self, record: dict) -> None:
        self._tokens = int(record["meta"]["num_tokens"])
        self.writer.begin(record)

    def add_image(self, name: str, data: bytes) -> None:
        self.writer.add_image(name, data)

    def end(self) -> None:
        self.writer.end()
        self.num_tokens += self._tokens

    @property
    def num_samples(self) -> int:
        return self.writer.num_samples

    def size(self) -> int:
        return self.writer.size()

    def commit(self) -> list[Committed]:
        return [Committed(self._finish(), self.writer.num_samples, self.num_tokens)]

    def abort(self) -> None:
        self._discard()


def atomic_file_shard(final: Path, make: Callable[[Path], SampleWriter]) -> FileShard:
    """A one-file shard written by `make(temporary path)` under a hidden temporary, renamed on commit."""
    target = AtomicFile(final)
    writer = make(target.tmp)

    def finish() -> Path:
        writer.close()
        return target.commit()

    def discard() -> None:
        try:
            writer.close()
        except Exception:  # a writer broken mid-sample, or a full disk, may fail to close; the file goes anyway
            pass
        target.abort()

    return FileShard(writer, target.tmp, finish, discard)
