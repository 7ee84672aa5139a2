"""Webdataset tar shards, written one member at a time (the member layout: `v2pe_common.formats.wds`).

Members are streamed, so a sample's images are never all in memory at once.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from v2pe_common.formats.wds import RECORD_SUFFIX, member_info, member_name, record_bytes

from ..plan import SamplePlan
from .protocol import ImageOrder


class TarShardWriter:
    """Append planned samples to an open tar stream."""

    def __init__(self, path: Path):
        self._fh = open(path, "wb")
        self._tar = tarfile.open(fileobj=self._fh, mode="w|", format=tarfile.USTAR_FORMAT)
        self.num_samples = 0

    def _add(self, name: str, data: bytes) -> None:
        self._tar.addfile(member_info(name, len(data)), io.BytesIO(data))

    def write(self, plan: SamplePlan) -> None:
        key = plan.record["id"]
        self._add(member_name(key, RECORD_SUFFIX), record_bytes(plan.record))
        for name, item in zip(plan.record["images"], plan.items):
            self._add(member_name(key, name), item.load())
        self.num_samples += 1

    def close(self) -> None:
        try:
            self._tar.close()
        finally:  # a full disk fails the tar's last blocks; the file handle is closed all the same
            self._fh.close()

    def __enter__(self) -> TarShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WdsWriter(TarShardWriter):
    """The tar writer under the streaming protocol; `write(plan)` and begin/add_image/end give the same bytes."""

    format = "wds"

    def __init__(self, path: Path):
        super().__init__(path)
        self.path = Path(path)
        self._order = ImageOrder()

    def begin(self, record: dict) -> None:
        self._order.start(record)
        self._add(member_name(record["id"], RECORD_SUFFIX), record_bytes(record))

    def add_image(self, name: str, data: bytes) -> None:
        self._order.image(name)
        self._add(member_name(self._order.key, name), data)

    def end(self) -> None:
        self._order.finish()
        self.num_samples += 1

    def size(self) -> int:
        """Bytes on disk so far (what `stat()` of the temporary file says, as byte-capped parts always used)."""
        return os.fstat(self._fh.fileno()).st_size

    def close(self) -> None:
        if not self._fh.closed:
            super().close()
