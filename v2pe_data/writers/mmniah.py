"""The MM-NIAH layout's streaming writer (`MMNIAHWriter`) and the merge of its parts; the codec (lines, layout
names, invariants, reader) is `v2pe_common.formats.mmniah`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from v2pe_common.formats.internvl import line_bytes
from v2pe_common.formats.mmniah import ANNOTATIONS, IMAGES, PARTS, STAGING, file_name, to_line

from .atomic import AtomicFile
from .protocol import Committed, ImageOrder, WriterError


class MMNIAHWriter:
    """Streams records into the layout under `root` (begin / add_image / end, then close()).

    With `part=None` it writes ROOT/annotations/*.jsonl itself. With a part name (one per shard task, so
    workers never share a file) it writes ROOT/parts/<part>/*.jsonl, and `merge_parts` concatenates the
    parts in order into ROOT/annotations with ids renumbered. Images are staged and moved into ROOT/images
    before the annotation files are renamed into place, so a visible line always has its images.
    """

    format = "mmniah"

    def __init__(self, root: str | Path, part: str | None = None):
        self.root = Path(root)
        self.folder = self.root / (ANNOTATIONS if part is None else f"{PARTS}/{part}")
        self.staging = self.root / STAGING / (part or "_")
        shutil.rmtree(self.staging, ignore_errors=True)  # left by a killed run of this part
        self.staging.mkdir(parents=True)
        self._order = ImageOrder()
        self._files: dict[str, tuple[AtomicFile, object]] = {}
        self._next: dict[str, int] = {}
        self._record: dict | None = None
        self._ids: list[str] = []
        self._seen: set[str] = set()
        self._bytes = 0
        self._tally: dict[str, list[int]] = {}  # MM-NIAH file name -> [samples, tokens], for the manifest
        self.staged = self.staging
        self.num_samples = 0

    def begin(self, record: dict) -> None:
        file_name(record)  # an unknown subset fails before any byte is written
        if record["id"] in self._seen:
            raise WriterError(f"sample id {record['id']!r} written twice under {self.folder}")
        self._order.start(record)
        self._record = record
        self._seen.add(record["id"])
        (self.staging / record["id"]).mkdir()

    def add_image(self, name: str, data: bytes) -> None:
        self._order.image(name)
        with open(self.staging / self._order.key / name, "wb") as fh:
            fh.write(data)
        self._bytes += len(data)

    def end(self) -> None:
        self._order.finish()
        record, self._record = self._record, None
        name = file_name(record)
        if name not in self._files:
            target = AtomicFile(self.folder / name)
            self._files[name] = (target, open(target.tmp, "wb"))
        data = line_bytes(to_line(record, self._next.get(name, 0)))
        self._next[name] = self._next.get(name, 0) + 1
        self._files[name][1].write(data)
        self._bytes += len(data)
        self._ids.append(record["id"])
        tally = self._tally.setdefault(name, [0, 0])
        tally[0] += 1
        tally[1] += int(record["meta"]["num_tokens"])
        self.num_samples += 1

    def size(self) -> int:
        return self._bytes

    def close(self) -> list[Path]:
        """Move the images into place, then the annotation files; returns the annotation paths."""
        if self._order.open:
            raise WriterError(f"{self.folder}: close() with sample {self._order.key!r} open")
        images = self.root / IMAGES
        images.mkdir(parents=True, exist_ok=True)
        for key in self._ids:
            if (images / key).exists():  # left by an interrupted close of this part: same bytes
                shutil.rmtree(images / key)
            os.replace(self.staging / key, images / key)
        self._ids = []
        self._drop_staging()
        out = []
        for target, fh in self._files.values():
            fh.close()
            out.append(target.commit())
        self._files = {}
        return sorted(out)

    def commit(self) -> list[Committed]:
        """`close()`, with each annotation file's samples and tokens (the shard protocol, `protocol.ShardWriter`)."""
        return [Committed(path, *self._tally[path.name]) for path in self.close()]

    def abort(self) -> None:
        """Remove the staged images and the temporary annotation files; nothing becomes visible. Never raises:
        it runs while another error is on its way up, and what is left is hidden and never read."""
        try:
            for target, fh in self._files.values():
                fh.close()
                target.abort()
            self._files = {}
            self._drop_staging()
        except Exception:
            pass

    def _drop_staging(self) -> None:
        """Remove this part's staging folder, and ROOT/.tmp once no part stages there (no empty folder left)."""
        shutil.rmtree(self.staging, ignore_errors=True)
        try:
            (self.root / STAGING).rmdir()
        except OSError:  # another part still stages there, or it is gone already
            pass


def merge_parts(root: str | Path, parts: list[str]) -> list[Path]:
    """ROOT/parts/<part>/*.jsonl, in `parts` order, into ROOT/annotations/*.jsonl with ids from 0 per file."""
    root = Path(root)
    names = sorted({p.name for part in parts for p in (root / PARTS / part).glob("*.jsonl")})
    out = []
    for name in names:
        target = AtomicFile(root / ANNOTATIONS / name)
        with open(target.tmp, "wb") as dst:
            n = 0
            for part in parts:
                src = root / PARTS / part / name
                if not src.is_file():
                    continue
                with open(src, encoding="utf-8") as fh:
                    for text in fh:
                        line = json.loads(text)
                        line["id"] = n
                        dst.write(line_bytes(line))
                        n += 1
        out.append(target.commit())
    return out
