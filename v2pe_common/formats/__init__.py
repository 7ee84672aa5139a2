"""The on-disk contract: how a sample record becomes a tar member, a parquet row or a JSONL line, and back.

One module per format holds both directions, so the builder's writers, the trainer's loader, `validate`
and `stats` cannot disagree about a byte:

    wds       `wds.py`       KEY.json + KEY.<image name> members, fixed headers; THE streaming tar reader
    parquet   `parquet.py`   columns, Hugging Face features, record <-> row; the row-group reader
    internvl  `internvl.py`  record <-> the reference trainer's JSONL line; image paths kept inside their root
    mmniah    `mmniah.py`    Long-MR record <-> MM-NIAH's annotation line, its prompt and invariants; the reader
                             (written by the builder only: the trainer does not read it as records)

Every format module has `iter_samples(path, start=0, *, num_samples=None, root=None)`: the samples of one
shard from offset `start`, each with `key`, `offset` and `members()` (the record first, suffix "json":
bytes from a tar, the parsed dict otherwise; then its images, each a member whose `read()` gives bytes).
`read_records` turns such a stream into whole (key, record, {image name: bytes}) for readers that want
the record at once (validation, statistics, tests). Format modules are imported on first use, so
a reader of tars never loads pyarrow.

Errors, the same for every format: `ShardReadError` stops the shard (`reason` missing_shard,
corrupt_shard or checksum); `BadMember` spoils one sample (`reason` schema or bad_image) and the shard
goes on.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path

READ_FORMATS = ("wds", "parquet", "internvl")  # what the trainer reads; the builder may write more


class ShardReadError(Exception):
    """A shard cannot be opened or read further (missing, corrupt or truncated)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason  # "missing_shard", "corrupt_shard" or "checksum"


class BadMember(Exception):
    """One sample cannot be used (its record row/line is malformed, an image file is missing); the shard goes on.

    `reason` is a sample-level reason of the loader's stats.REASONS ("schema" or "bad_image").
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def open_shard(path: Path, what: str = "shard file"):
    """The shard opened for binary reading; ShardReadError("missing_shard") naming why it cannot be."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise ShardReadError("missing_shard", f"{what} does not exist") from None
    except OSError as exc:
        raise ShardReadError("missing_shard", f"cannot open: {exc.strerror or exc}") from None


def corrupt(exc: BaseException) -> ShardReadError:
    return ShardReadError("corrupt_shard", f"unreadable: {type(exc).__name__}: {exc}")


def fewer(start: int, n: int) -> ShardReadError:
    return ShardReadError("corrupt_shard", f"has {n} samples, fewer than the saved position {start} needs (shard changed?)")


def check_count(n: int, promised: int | None) -> None:
    if promised is not None and n != promised:
        raise ShardReadError("corrupt_shard", f"holds {n} samples, its manifest says {promised}")


def skip_to(samples: Iterator, count: int) -> None:
    """Advance an `iter_samples` iterator past its next `count` samples without reading their data."""
    for _ in range(count):
        if next(samples, None) is None:
            raise ShardReadError("corrupt_shard", "has fewer samples than the saved position needs (shard changed?)")


class ValueMember:
    """A member whose value is at hand: the parsed record (suffix "json") or an image's bytes."""

    __slots__ = ("suffix", "_value")

    def __init__(self, suffix: str, value):
        self.suffix, self._value = suffix, value

    def read(self):
        return self._value


def iter_samples(fmt: str, path: str | Path, start: int = 0, *, num_samples: int | None = None,
                 root: Path | None = None, **options) -> Iterator:
    """The samples of one shard of format `fmt` (see the module docstring); ValueError for an unknown format.
    `options` are the format's own (internvl: `max_dynamic_patch`)."""
    if fmt not in READ_FORMATS:
        raise ValueError(f"format must be one of {list(READ_FORMATS)}, got {fmt!r}")
    module = importlib.import_module(f"{__name__}.{fmt}")
    return module.iter_samples(Path(path), start, num_samples=num_samples, root=root, **options)


def read_records(samples: Iterator, *, images: bool = True) -> Iterator[tuple[str, dict | None, dict[str, bytes]]]:
    """(key, record, {image name: bytes}) per sample of an `iter_samples` stream.

    `record` is None when a tar sample has no KEY.json member. With `images=False` no image is read (a tar
    skips their bytes). Raises what the stream raises, and BadMember("schema") for a record that is not JSON.
    A sample the stream broke inside is never yielded: its ShardReadError is raised instead; one that
    was whole when the stream broke after it is yielded, and the error comes with the next sample.
    """
    for sample in samples:
        record, found = None, {}
        for member in sample.members():
            if member.suffix == "json":
                value = member.read()
                try:
                    record = json.loads(value) if isinstance(value, bytes) else value
                except ValueError as exc:
                    raise BadMember("schema", f"{sample.key}.json is not JSON: {exc}") from None
            elif images:
                found[member.suffix] = member.read()
        broken = getattr(sample, "broken", None)
        if broken is not None and not _whole(record, found, images):
            raise broken  # the stream broke inside this sample; after a whole one, the stream raises next
        yield sample.key, record, found


def _whole(record, found: dict, images: bool) -> bool:
    if not isinstance(record, dict):
        return False
    return not images or (isinstance(record.get("images"), list) and set(record["images"]) <= set(found))
