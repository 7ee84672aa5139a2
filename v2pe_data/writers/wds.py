"""Webdataset tar shards, one member at a time.

A sample is `KEY.json` followed by `KEY.0.jpg`, `KEY.1.png`, ...; webdataset groups members by the key
before the first dot. Members are streamed, so a sample's images are never all in memory at once, and
every header field is fixed (mtime 0, uid 0, mode 0444) so the same samples give the same bytes.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from ..plan import SamplePlan


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def record_bytes(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


class TarShardWriter:
    """Append planned samples to an open tar stream."""

    def __init__(self, path: Path):
        self._fh = open(path, "wb")
        self._tar = tarfile.open(fileobj=self._fh, mode="w|", format=tarfile.USTAR_FORMAT)
        self.num_samples = 0

    def _add(self, name: str, data: bytes) -> None:
        self._tar.addfile(_info(name, len(data)), io.BytesIO(data))

    def write(self, plan: SamplePlan) -> None:
        key = plan.record["id"]
        self._add(f"{key}.json", record_bytes(plan.record))
        for name, item in zip(plan.record["images"], plan.items):
            self._add(f"{key}.{name}", item.load())
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
