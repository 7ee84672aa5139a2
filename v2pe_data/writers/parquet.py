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
(a string answer "3" and a number answer 3 would otherwise look alike).

Rows are written as they end, in row groups of `rows_per_group` rows (default 1: a long-context row
holds megabytes of images, so at most one sample's encoded bytes are in memory, writing or reading).
Image bytes are stored uncompressed (JPEG/PNG are compressed already); the text columns use zstd. The
output is deterministic: pyarrow writes no timestamps, and every option that shapes the bytes is set.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .base import ImageOrder, WriterError

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
_TEXT_COLUMNS = ["id", "task", "subset", "images.list.element.path", "conversations.list.element.from",
                 "conversations.list.element.value", "answer", "answer_json", "meta"]


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


class ParquetShardWriter:
    """Stream samples into one parquet file at `path` (the builder's temporary name)."""

    format = "parquet"

    def __init__(self, path: str | Path, *, rows_per_group: int = 1, compression: str = "zstd",
                 compression_level: int = 3):
        if rows_per_group < 1:
            raise ValueError(f"rows_per_group must be >= 1, got {rows_per_group}")
        self.path = Path(path)
        self.rows_per_group = rows_per_group
        codecs = {col: compression for col in _TEXT_COLUMNS}
        codecs["images.list.element.bytes"] = "none"
        self._writer = pq.ParquetWriter(
            str(self.path),
            SCHEMA,
            compression=codecs,
            compression_level={col: compression_level for col in _TEXT_COLUMNS} if compression == "zstd" else None,
            version="2.6",
            data_page_version="1.0",
            use_dictionary=["task", "subset"],
            write_statistics=["id", "task", "subset"],  # no min/max of image bytes or long text
            write_page_index=False,
            write_page_checksum=True,
            store_schema=True,
        )
        self._order = ImageOrder()
        self._record: dict | None = None
        self._images: list[dict] = []
        self._rows: list[dict] = []
        self.num_samples = 0
        self._closed = False

    def begin(self, record: dict) -> None:
        self._order.start(record)
        self._record = record
        self._images = []

    def add_image(self, name: str, data: bytes) -> None:
        self._order.image(name)
        self._images.append({"bytes": bytes(data), "path": name})

    def end(self) -> None:
        self._order.finish()
        self._rows.append(record_row(self._record, self._images))
        self._record, self._images = None, []
        self.num_samples += 1
        if len(self._rows) >= self.rows_per_group:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        batch = pa.RecordBatch.from_pydict({c: [r[c] for r in rows] for c in COLUMNS}, schema=SCHEMA)
        del rows
        self._writer.write_batch(batch)  # one call, one row group

    def size(self) -> int:
        try:
            return self.path.stat().st_size + sum(len(i["bytes"]) for r in self._rows for i in r["images"])
        except FileNotFoundError:
            return 0

    def close(self) -> None:
        if self._closed:
            return
        if self._order.open:
            self._closed = True
            self._writer.close()
            raise WriterError(f"{self.path}: closed with sample {self._order.key!r} open")
        self._flush()
        self._closed = True
        self._writer.close()

    def __enter__(self) -> ParquetShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def row_record(row: dict) -> dict:
    """A record from one row as `to_pylist()` gives it (the inverse of `record_row`)."""
    answer = row["answer"]
    if row.get("answer_json"):
        answer = json.loads(answer)
    return {
        "id": row["id"],
        "task": row["task"],
        "subset": row["subset"],
        "images": [im["path"] for im in row["images"]],
        "conversations": [{"from": t["from"], "value": t["value"]} for t in row["conversations"]],
        "answer": answer,
        "meta": json.loads(row["meta"]),
    }


def read_parquet_samples(path: str | Path) -> Iterator[tuple[dict, dict[str, bytes]]]:
    """(record, {image name: bytes}) per row, one row group at a time."""
    pf = pq.ParquetFile(str(path), page_checksum_verification=True)
    for rg in range(pf.num_row_groups):
        for row in pf.read_row_group(rg).to_pylist():
            yield row_record(row), {im["path"]: im["bytes"] for im in row["images"]}
