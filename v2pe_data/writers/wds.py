"""Webdataset tar shards, written one member at a time (the member layout: `v2pe_common.formats.wds`).

Members are streamed, so a sample's images are never all in memory at once.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from v2pe_common.formats.wds import RECORD_SUFFIX, member_info, member_name, record_bytes

from .protocol import ImageOrder


class WdsWriter:
    """Streams samples into an open tar: begin(record), add_image(name, bytes) per image, end(); then close()."""

    format = "wds"

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fh = open(path, "wb")
        self._tar = tarfile.open(fileobj=self._fh, mode="w|", format=tarfile.USTAR_FORMAT)
        self._order = ImageOrder()
        self.num_samples = 0

    def _add(self, name: str, data: bytes) -> None:
        self._tar.addfile(member_info(name, len(data)), io.BytesIO(data))

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
        if self._fh.closed:
            return
        try:
            self._tar.close()
        finally:  # a full disk fails the tar's last blocks; the file handle is closed all the same
            self._fh.close()
