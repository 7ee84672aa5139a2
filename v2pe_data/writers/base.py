"""One shard task's output, per format and for all requested formats at once.

`FormatOutput` wraps one format's shard writer (opened through the format registry, `formats.SPECS`) for
one shard task, or one part of a byte-capped task: samples stream in through the writer protocol
(`protocol`), `commit()` makes the output visible under its final name(s) and returns its manifest
entries, `abort()` removes everything it wrote. `ShardOutputs` fans one sample stream out to several
formats. Where each format's files lie: `formats`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from .atomic import errors_name, file_digest
from .formats import FORMATS, ROLL_OVER, shard_relpath, spec
from .protocol import WriterError


class _WholeSample:
    """`write()` for classes that stream a sample as begin / add_image ... / end."""

    def write(self, record: dict, images: Iterable[bytes]) -> None:
        """One whole sample; `images[i]` are the bytes of `record["images"][i]`."""
        self.begin(record)
        for name, data in zip(record["images"], images, strict=True):
            self.add_image(name, data)
        self.end()


class FormatOutput(_WholeSample):
    """One format's output of one shard task: stream samples in, then `commit()` or `abort()`.

    Each format's writer stages its output under hidden temporary names and makes it visible on commit
    (see the writer modules). A manifest entry describes one file the commit made visible (the tar, the
    parquet file, the shard JSONL; an MM-NIAH part gives one per MM-NIAH file). An OSError that names no
    file (a failed write on a full disk) is raised naming the temporary being written (`staged`).
    """

    def __init__(self, fmt: str, out: str | Path, split: str, index: int, part: int | None = None, **options):
        self.format = fmt
        self.out = Path(out)
        self.relpath = shard_relpath(fmt, split, index, part)
        self.writer = spec(fmt).open(self.out, split, index, part, **options)
        self.staged = self.writer.staged
        self._done = False

    # -- the sample stream ------------------------------------------------------------------------
    def begin(self, record: dict) -> None:
        with errors_name(self.staged):
            self.writer.begin(record)

    def add_image(self, name: str, data: bytes) -> None:
        with errors_name(self.staged):
            self.writer.add_image(name, data)

    def end(self) -> None:
        with errors_name(self.staged):
            self.writer.end()

    @property
    def num_samples(self) -> int:
        return self.writer.num_samples

    def size(self) -> int:
        """Bytes written so far (for byte-capped parts)."""
        return self.writer.size()

    # -- the atomic step --------------------------------------------------------------------------
    def commit(self) -> list[dict]:
        """Make the output visible under its final name(s); return its manifest entries."""
        if self._done:
            raise WriterError(f"{self.relpath}: already committed or aborted")
        try:
            with errors_name(self.staged):
                committed = self.writer.commit()
            entries = []
            for done in committed:
                size, digest = file_digest(done.path)
                entries.append({"path": Path(done.path).relative_to(self.out).as_posix(), "format": self.format,
                                "num_samples": done.num_samples, "bytes": size, "sha256": digest,
                                "num_tokens": done.num_tokens})
        except BaseException:
            self.abort()  # a commit that fails halfway leaves nothing staged
            raise
        self._done = True
        return entries

    def abort(self) -> None:
        """Remove whatever this output wrote; nothing appears under a final name. Safe to call twice.

        Never raises: it runs while the error that stopped the shard is on its way up.
        """
        if self._done:
            return
        self._done = True
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
        self.outputs: list[FormatOutput] = []
        try:
            for fmt in formats:
                self.outputs.append(FormatOutput(fmt, out, split, index, part, **(options or {}).get(fmt, {})))
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

    def size(self, fmt: str = ROLL_OVER) -> int:
        """Bytes written so far by `fmt`'s output (default: the tar's, whatever order the formats were listed in).

        Byte-capped parts roll over on this size, so the tar shards of a build do not depend on which
        other formats are written beside them. ValueError when `fmt` is not among the outputs.
        """
        for o in self.outputs:
            if o.format == fmt:
                return o.size()
        raise ValueError(f"no {fmt!r} output to measure among {[o.format for o in self.outputs]}")

    def commit(self) -> list[dict]:
        """Commit every format (in the order requested); if one fails, the uncommitted rest is aborted."""
        entries = []
        try:
            for o in self.outputs:
                entries.extend(o.commit())
        except BaseException:
            self.abort()
            raise
        return entries

    def abort(self) -> None:
        for o in self.outputs:
            o.abort()
