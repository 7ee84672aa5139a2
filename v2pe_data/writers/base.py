"""The streaming writer protocol shared by every output format, and one shard's output per format.

Every writer takes a sample as `begin(record)`, then `add_image(name, data)` for each name of
`record["images"]` in order (the encoded bytes, loaded once by the builder and handed to every writer),
then `end()`; `close()` finishes the file(s) and `num_samples` counts the samples written. A writer
never decodes an image and holds at most one sample's encoded bytes.

`ShardOutput` wraps one format's writer for one shard task (or one part of a byte-capped task) with its
atomic step: `commit()` makes the output visible under its final name(s) and returns its manifest entry,
`abort()` removes everything it wrote. `ShardOutputs` fans one sample stream out to several formats.

Paths, relative to the build folder (`NAME` = `<split>-<task:06d>` or `<split>-<task:06d>-<part:03d>`):

    wds       shards/NAME.tar
    parquet   parquet/NAME.parquet
    internvl  internvl/annotations/NAME.jsonl   (+ internvl/images/<id>/<i>.<ext>)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from .atomic import AtomicFile, errors_name, file_digest
from .wds import TarShardWriter, record_bytes

FORMATS = ("wds", "parquet", "internvl")


class WriterError(ValueError):
    """The builder broke the writer protocol (images out of order, a sample left open, ...)."""


class SampleWriter(Protocol):
    format: str
    num_samples: int

    def begin(self, record: dict) -> None: ...

    def add_image(self, name: str, data: bytes) -> None: ...

    def end(self) -> None: ...

    def close(self) -> None: ...

    def size(self) -> int: ...


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


class WdsWriter(TarShardWriter):
    """The tar writer under the streaming protocol; `write(plan)` and begin/add_image/end give the same bytes."""

    format = "wds"

    def __init__(self, path: Path):
        super().__init__(path)
        self.path = Path(path)
        self._order = ImageOrder()

    def begin(self, record: dict) -> None:
        self._order.start(record)
        self._add(f"{record['id']}.json", record_bytes(record))

    def add_image(self, name: str, data: bytes) -> None:
        self._order.image(name)
        self._add(f"{self._order.key}.{name}", data)

    def end(self) -> None:
        self._order.finish()
        self.num_samples += 1

    def size(self) -> int:
        """Bytes on disk so far (what `stat()` of the temporary file says, as byte-capped parts always used)."""
        return os.fstat(self._fh.fileno()).st_size

    def close(self) -> None:
        if not self._fh.closed:
            super().close()


def shard_name(split: str, index: int, part: int | None = None) -> str:
    return f"{split}-{index:06d}" + ("" if part is None else f"-{part:03d}")


def shard_relpath(fmt: str, split: str, index: int, part: int | None = None) -> str:
    """The manifest path of one shard file of `fmt`, relative to the build folder."""
    name = shard_name(split, index, part)
    if fmt == "wds":
        return f"shards/{name}.tar"
    if fmt == "parquet":
        return f"parquet/{name}.parquet"
    if fmt == "internvl":
        return f"internvl/annotations/{name}.jsonl"
    raise ValueError(f"unknown format {fmt!r}; choose from {list(FORMATS)}")


class _WholeSample:
    """`write()` for classes that stream a sample as begin / add_image ... / end."""

    def write(self, record: dict, images: Iterable[bytes]) -> None:
        """One whole sample; `images[i]` are the bytes of `record["images"][i]`."""
        self.begin(record)
        for name, data in zip(record["images"], images, strict=True):
            self.add_image(name, data)
        self.end()


class ShardOutput(_WholeSample):
    """One format's output of one shard task: stream samples in, then `commit()` or `abort()`.

    wds and parquet write one file under a hidden temporary name (`AtomicFile`); internvl stages its
    images in a hidden folder and its JSONL under a temporary name, and on commit moves the images into
    place before renaming the JSONL (see `internvl.InternVLShardWriter`). The manifest entry describes
    the file named by `path` (the tar, the parquet file, the JSONL). An OSError that names no file (a
    failed write on a full disk) is raised naming the temporary being written (`staged`).
    """

    def __init__(self, fmt: str, out: str | Path, split: str, index: int, part: int | None = None, **options):
        self.format = fmt
        self.out = Path(out)
        self.relpath = shard_relpath(fmt, split, index, part)
        final = self.out / self.relpath
        self._file: AtomicFile | None = None
        if fmt == "internvl":
            from .internvl import InternVLShardWriter

            self.writer = InternVLShardWriter(self.out / "internvl", shard_name(split, index, part), **options)
        else:
            self._file = AtomicFile(final)
            if fmt == "wds":
                self.writer = WdsWriter(self._file.tmp, **options)
            else:
                from .parquet import ParquetShardWriter

                self.writer = ParquetShardWriter(self._file.tmp, **options)
        self.staged = self._file.tmp if self._file is not None else self.writer.jsonl.tmp
        self.num_tokens = 0
        self._tokens = 0
        self._done = False

    # -- the sample stream ------------------------------------------------------------------------
    def begin(self, record: dict) -> None:
        self._tokens = int(record["meta"]["num_tokens"])
        with errors_name(self.staged):
            self.writer.begin(record)

    def add_image(self, name: str, data: bytes) -> None:
        with errors_name(self.staged):
            self.writer.add_image(name, data)

    def end(self) -> None:
        with errors_name(self.staged):
            self.writer.end()
        self.num_tokens += self._tokens

    @property
    def num_samples(self) -> int:
        return self.writer.num_samples

    def size(self) -> int:
        """Bytes written so far (for byte-capped parts)."""
        return self.writer.size()

    # -- the atomic step --------------------------------------------------------------------------
    def commit(self) -> dict:
        """Make the output visible under its final name(s); return its manifest entry."""
        if self._done:
            raise WriterError(f"{self.relpath}: already committed or aborted")
        try:
            with errors_name(self.staged):
                if self._file is not None:
                    self.writer.close()
                    final = self._file.commit()
                else:
                    final = self.writer.commit()
            size, digest = file_digest(final)
        except BaseException:
            self.abort()  # a commit that fails halfway leaves nothing staged
            raise
        self._done = True
        return {"path": self.relpath, "format": self.format, "num_samples": self.writer.num_samples,
                "bytes": size, "sha256": digest, "num_tokens": self.num_tokens}

    def abort(self) -> None:
        """Remove whatever this output wrote; nothing appears under a final name. Safe to call twice.

        Never raises: it runs while the error that stopped the shard is on its way up.
        """
        if self._done:
            return
        self._done = True
        if self._file is not None:
            try:
                self.writer.close()
            except Exception:  # a writer broken mid-sample, or a full disk, may fail to close; the file goes anyway
                pass
            self._file.abort()
        else:
            self.writer.abort()


class ShardOutputs(_WholeSample):
    """Several formats of one shard task fed from one sample stream (each image's bytes handed to all)."""

    def __init__(self, formats: Sequence[str], out: str | Path, split: str, index: int, part: int | None = None,
                 options: dict[str, dict] | None = None):
        """`options[fmt]` are keyword arguments of that format's writer (e.g. {"parquet": {"rows_per_group": 4}})."""
        if not formats:
            raise ValueError("no output format requested")
        unknown = [f for f in formats if f not in FORMATS]
        if unknown or len(set(formats)) != len(formats):
            raise ValueError(f"formats must be distinct values of {list(FORMATS)}, got {list(formats)}")
        self.outputs: list[ShardOutput] = []
        try:
            for fmt in formats:
                self.outputs.append(ShardOutput(fmt, out, split, index, part, **(options or {}).get(fmt, {})))
        except BaseException:
            self.abort()
            raise

    def begin(self, record: dict) -> None:
        for o in self.outputs:
            o.begin(record)

    def add_image(self, name: str, data: bytes) -> None:
        for o in self.outputs:
            o.add_image(name, data)

    def end(self) -> None:
        for o in self.outputs:
            o.end()

    @property
    def num_samples(self) -> int:
        return self.outputs[0].num_samples

    def size(self, fmt: str | None = None) -> int:
        """Bytes written so far by `fmt`'s output (default: the first format requested).

        Byte-capped parts should roll over on one format's size (wds, listed first), so that the tar
        shards of a build do not depend on which other formats are written beside them.
        """
        if fmt is None:
            return self.outputs[0].size()
        return next(o for o in self.outputs if o.format == fmt).size()

    def commit(self) -> list[dict]:
        """Commit every format (in the order requested); if one fails, the uncommitted rest is aborted."""
        entries = []
        try:
            for o in self.outputs:
                entries.append(o.commit())
        except BaseException:
            self.abort()
            raise
        return entries

    def abort(self) -> None:
        for o in self.outputs:
            o.abort()
