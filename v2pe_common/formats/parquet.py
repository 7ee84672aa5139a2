"""Parquet shards that Hugging Face `datasets` reads as they are: one row per sample.

Columns (Arrow type; `datasets` feature from the `huggingface` schema metadata):

    id             string                                   Value("string")
    task           string                                   Value("string")
    subset         string                                   Value("string")
    images         list<struct<bytes: binary, path: string>> List(Image())      bytes as given, path '0.jpg'
    conversations  list<struct<from: string, value: string>> List({"from", "value"})
    answer         string                                   Value("string")     JSON for a non-string answer
    answer_json    bool                                     Value("bool")       True when `answer` is JSON
    meta           string                                   Value("string")     JSON of record["meta"]

`answer_json` is not in the sample schema's columns list; it lets a reader rebuild the record exactly
(a string answer "3" and a number answer 3 would otherwise look alike). A file without it (another
writer's) is read with every answer as the string it holds.

Reading goes a row group at a time (a row group holds few, large rows); a row's columns are converted
only when its members are asked for, and page checksums are verified.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import BadMember, ShardReadError, ValueMember, check_count, corrupt, fewer, read_records

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
TURN_TYPE = pa.struct([("from", pa.string()), ("value", pa.string())])

_STRING = {"dtype": "string", "_type": "Value"}
HF_FEATURES = {
    "id": _STRING,
    "task": _STRING,
    "subset": _STRING,
    "images": {"feature": {"_type": "Image"}, "_type": "List"},
    "conversations": {"feature": {"from": _STRING, "value": _STRING}, "_type": "List"},
    "answer": _STRING,
    "answer_json": {"dtype": "bool", "_type": "Value"},
    "meta": _STRING,
}
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("task", pa.string()),
        ("subset", pa.string()),
        ("images", pa.list_(IMAGE_TYPE)),
        ("conversations", pa.list_(TURN_TYPE)),
        ("answer", pa.string()),
        ("answer_json", pa.bool_()),
        ("meta", pa.string()),
    ],
    metadata={b"huggingface": json.dumps({"info": {"features": HF_FEATURES}}).encode()},
)
COLUMNS = tuple(SCHEMA.names)
# Compressed with the writer's codec; the image bytes (JPEG/PNG, compressed already) are stored as they are.
TEXT_COLUMNS = ("id", "task", "subset", "images.list.element.path", "conversations.list.element.from",
                "conversations.list.element.value", "answer", "answer_json", "meta")
IMAGE_BYTES_COLUMN = "images.list.element.bytes"
REQUIRED_COLUMNS = ("id", "task", "subset", "images", "conversations", "answer", "meta")
_ERRORS = (pa.ArrowException, OSError, ValueError, EOFError)


def _json(obj) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def record_row(record: dict, images: list[dict]) -> dict:
    """The column values of one sample; `images` are {"bytes", "path"} in record order."""
    answer = record["answer"]
    is_json = not isinstance(answer, str)
    return {
        "id": record["id"],
        "task": record["task"],
        "subset": record["subset"],
        "images": images,
        "conversations": [{"from": t["from"], "value": t["value"]} for t in record["conversations"]],
        "answer": _json(answer) if is_json else answer,
        "answer_json": is_json,
        "meta": _json(record["meta"]),
    }


def row_record(row: dict, images: list[str]) -> dict:
    """The record of one row's non-image columns (as `as_py()` gives them) and its image names.

    The inverse of `record_row`. A null `meta` stays None (the sample schema names it); ValueError for
    text that is not the JSON it must be.
    """
    answer, meta = row["answer"], row["meta"]
    return {
        "id": row["id"],
        "task": row["task"],
        "subset": row["subset"],
        "images": images,
        "conversations": row["conversations"],
        "answer": json.loads(answer) if row.get("answer_json") and isinstance(answer, str) else answer,
        "meta": json.loads(meta) if isinstance(meta, str) else meta,
    }


class _RowGroup:
    """One row group of a parquet shard, read whole on first use."""

    def __init__(self, pf: pq.ParquetFile, index: int, columns: list[str]):
        self.pf, self.index, self.columns = pf, index, columns
        self.table = None

    def get(self) -> pa.Table:
        if self.table is None:
            try:
                self.table = self.pf.read_row_group(self.index, columns=self.columns)
            except _ERRORS as exc:
                raise corrupt(exc) from None
        return self.table


class ParquetSample:
    """One row of a parquet shard; its columns are read only when `members()` is asked for."""

    def __init__(self, key: str, offset: int, group: _RowGroup, row: int):
        self.key, self.offset, self._group, self._row = key, offset, group, row

    def members(self) -> Iterator[ValueMember]:
        table = self._group.get()
        i = self._row
        try:
            images = table.column("images")[i]
            if not images.is_valid:
                raise BadMember("schema", "$.images is null")
            values = images.values
            names = values.field("path").to_pylist()
            record = row_record({c: table.column(c)[i].as_py() for c in table.column_names if c != "images"}, names)
        except ValueError as exc:  # json errors
            raise BadMember("schema", f"row {self.offset}: {exc}") from None
        yield ValueMember("json", record)
        blobs = values.field("bytes")
        for j, name in enumerate(names):
            data = blobs[j].as_py()
            if data is None:
                raise BadMember("bad_image", f"image {name} has no bytes")
            yield ValueMember(name, data)


def iter_samples(path: Path, start: int = 0, *, num_samples: int | None = None,
                 root: Path | None = None) -> Iterator[ParquetSample]:
    """The rows of one parquet shard from offset `start` (`root` is unused: a row holds its images).

    ShardReadError as the tar reader raises it; corrupt_shard also for a file without the columns above.
    """
    try:
        pf = pq.ParquetFile(str(path), page_checksum_verification=True)  # native reads, no Python file object
    except FileNotFoundError:
        raise ShardReadError("missing_shard", "shard file does not exist") from None
    except PermissionError as exc:
        raise ShardReadError("missing_shard", f"cannot open: {exc.strerror or exc}") from None
    except _ERRORS as exc:
        raise corrupt(exc) from None
    try:
        try:
            names = pf.schema_arrow.names
            sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
        except _ERRORS as exc:
            raise corrupt(exc) from None
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise ShardReadError("corrupt_shard", f"not a v2pe parquet shard: no column(s) {missing}")
        columns = list(REQUIRED_COLUMNS) + (["answer_json"] if "answer_json" in names else [])
        total = sum(sizes)
        if start > total:
            raise fewer(start, total)
        offset = 0
        for g, rows in enumerate(sizes):
            if offset + rows <= start:
                offset += rows
                continue
            try:
                ids = pf.read_row_group(g, columns=["id"]).column("id").to_pylist()
            except _ERRORS as exc:
                raise corrupt(exc) from None
            group = _RowGroup(pf, g, columns)
            for i in range(max(0, start - offset), rows):
                yield ParquetSample(ids[i] if isinstance(ids[i], str) else f"row {offset + i}", offset + i, group, i)
            offset += rows
    finally:
        pf.close()
    check_count(total, num_samples)


def read_parquet_samples(path: str | Path) -> Iterator[tuple[dict, dict[str, bytes]]]:
    """(record, {image name: bytes}) per row, one row group at a time."""
    for _, record, images in read_records(iter_samples(Path(path))):
        yield record, images
