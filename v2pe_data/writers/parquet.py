"""Parquet shards, written a row group at a time (columns and the record <-> row codec: `v2pe_common.formats.parquet`).

Rows are written as they end, in row groups of `rows_per_group` rows (default 1: a long-context row
holds megabytes of images, so at most one sample's encoded bytes are in memory, writing or reading).
Image bytes are stored uncompressed (JPEG/PNG are compressed already); the text columns use zstd. The
output is deterministic: pyarrow writes no timestamps, and every option that shapes the bytes is set.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from v2pe_common.formats.parquet import COLUMNS, IMAGE_BYTES_COLUMN, SCHEMA, TEXT_COLUMNS, record_row

from .protocol import ImageOrder, WriterError


class ParquetShardWriter:
    """Stream samples into one parquet file at `path` (the builder's temporary name)."""

    format = "parquet"

    def __init__(self, path: str | Path, *, rows_per_group: int = 1, compression: str = "zstd",
                 compression_level: int = 3):
        if rows_per_group < 1:
            raise ValueError(f"rows_per_group must be >= 1, got {rows_per_group}")
        self.path = Path(path)
        self.rows_per_group = rows_per_group
        codecs = {col: compression for col in TEXT_COLUMNS}
        codecs[IMAGE_BYTES_COLUMN] = "none"
        self._writer = pq.ParquetWriter(
            str(self.path),
            SCHEMA,
            compression=codecs,
            compression_level={col: compression_level for col in TEXT_COLUMNS} if compression == "zstd" else None,
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
