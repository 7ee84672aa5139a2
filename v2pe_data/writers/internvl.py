"""The InternVL / V2PE-Data layout written: image files plus JSONL annotations plus a meta JSON.

    OUT/internvl/images/<id>/0.jpg, 1.png, ...             one folder per sample
    OUT/internvl/annotations/<split>-000000.jsonl          one JSONL per shard task (the manifest's shards)
    OUT/internvl/<name>.jsonl                              all shards merged in shard order (finalize)
    OUT/internvl/meta.json                                 {name: {root, annotation, data_augment, repeat_time, length}}

A JSONL line is the reference trainer's `{"id", "image": [...], "conversations"}` plus the keys our
loader needs (the line <-> record codec: `v2pe_common.formats.internvl`).

Atomicity. A shard stages its images in `OUT/internvl/.tmp/<shard>.<pid>/<id>/` and writes its JSONL under
a hidden temporary name (both carry the writing process's id, so two processes never share them).
`commit()` fsyncs, moves each sample folder into `images/` (replacing one left by an interrupted commit
of the same shard), then renames the JSONL last: a JSONL under its final name implies that all its
images are in place. `abort()` deletes the staging folder and the temporary JSONL, and never raises
(it runs while another error, often a full disk, is on its way up).

Why one merged annotation. The reference trainer reads one `annotation` per meta entry and treats each
entry as a dataset of its own: it splits each entry's lines contiguously over ranks and caches a split
per entry, and its packer draws from entries in proportion to their per-rank lengths. One entry per
shard (8 samples) would leave most ranks of a large job with empty datasets and thousands of caches;
V2PE-Data ships one JSONL per task and length. So `finalize_internvl` streams the shard JSONLs, in shard
order, into one `OUT/internvl/<name>.jsonl` (atomic) and names it in `meta.json`. It lives beside
`annotations/`, not inside it, so a glob over `annotations/*.jsonl` never reads a sample twice.

Paths in meta.json. The reference joins `root` with each image path and opens `annotation` as given,
both relative to the trainer's working directory. By default `root` and `annotation` are written
relative to the folder of meta.json ("." and "<name>.jsonl"), so the folder can be moved or uploaded
as is; run the reference trainer from that folder, or build with `internvl_root: absolute` (`absolute=True`)
for absolute paths, the portable choice for the reference, which resolves them from its working directory.
`data_augment` is false unless the build sets `internvl_augment: true` (the released V2PE-Data meta files
set it for training data; our loader honours the trainer's own `data_augment` key for our builds).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from v2pe_common.formats.internvl import ANNOTATIONS_DIR, IMAGES_DIR, META_FILE, annotation_line, line_bytes

from .atomic import AtomicFile, atomic_path, errors_name, write_json_atomic
from .protocol import Committed, ImageOrder, WriterError

STAGING_DIR = ".tmp"
_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _fsync_write(path: Path, data: bytes, fsync: bool) -> None:
    with errors_name(path), open(path, "wb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())


class InternVLShardWriter:
    """One shard of the InternVL layout under `root` (= OUT/internvl): stream, then `commit()` or `abort()`."""

    format = "internvl"

    def __init__(self, root: str | Path, name: str, *, fsync: bool = True):
        if not _SAFE_NAME.match(name):
            raise ValueError(f"shard name {name!r} must match {_SAFE_NAME.pattern}")
        self.root = Path(root)
        self.name = name
        self.fsync = fsync
        self.jsonl = AtomicFile(self.root / ANNOTATIONS_DIR / f"{name}.jsonl")
        self.staging = self.root / STAGING_DIR / f"{name}.{os.getpid()}"
        if self.staging.exists():  # left by a killed run of this shard in a process of the same id
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        try:
            self._fh = open(self.jsonl.tmp, "wb")
        except BaseException:
            self._remove_staging()
            raise
        self._order = ImageOrder()
        self._record: dict | None = None
        self._ids: list[str] = []  # samples with images, in order
        self._seen: set[str] = set()
        self._bytes = 0
        self.staged = self.jsonl.tmp
        self.num_samples = 0
        self.num_tokens = 0

    def begin(self, record: dict) -> None:
        key = record["id"]
        if not isinstance(key, str) or not _SAFE.match(key):
            raise WriterError(f"sample id {key!r} cannot name a folder (need {_SAFE.pattern})")
        if key in self._seen:
            raise WriterError(f"sample id {key!r} written twice in shard {self.name}")
        self._order.start(record)
        self._record = record
        if record["images"]:
            (self.staging / key).mkdir()

    def add_image(self, name: str, data: bytes) -> None:
        self._order.image(name)
        if not _SAFE_NAME.match(name) or name.startswith("."):
            raise WriterError(f"image name {name!r} cannot name a file")
        _fsync_write(self.staging / self._order.key / name, data, self.fsync)
        self._bytes += len(data)

    def end(self) -> None:
        self._order.finish()
        data = line_bytes(annotation_line(self._record))
        with errors_name(self.jsonl.tmp):
            self._fh.write(data)
        self._bytes += len(data)
        self._seen.add(self._record["id"])
        if self._record["images"]:
            self._ids.append(self._record["id"])
        self.num_tokens += int(self._record["meta"]["num_tokens"])
        self._record = None
        self.num_samples += 1

    def size(self) -> int:
        return self._bytes

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def commit(self) -> list[Committed]:
        """Move the images into place, then rename the JSONL; returns the JSONL's final path and tallies."""
        if self._order.open:
            raise WriterError(f"shard {self.name}: commit with sample {self._order.key!r} open")
        with errors_name(self.jsonl.tmp):
            if self.fsync:
                self._fh.flush()
                os.fsync(self._fh.fileno())
            self.close()
        images = self.root / IMAGES_DIR
        images.mkdir(parents=True, exist_ok=True)
        for key in self._ids:
            dest = images / key
            if dest.exists():  # an interrupted commit of this shard left it; the bytes are the same
                shutil.rmtree(dest)
            os.replace(self.staging / key, dest)
        self.staging.rmdir()
        _remove_if_empty(self.root / STAGING_DIR)
        return [Committed(self.jsonl.commit(), self.num_samples, self.num_tokens)]

    def abort(self) -> None:
        """Remove the staged images and the temporary JSONL; never raises."""
        try:
            self.close()
        except OSError:  # a full disk fails the final flush again; the file is closed and goes anyway
            pass
        self._remove_staging()
        self.jsonl.abort()

    def _remove_staging(self) -> None:
        # ignore_errors keeps removing the other files when one removal fails; anything left is swept
        # by the next build that locks the folder
        shutil.rmtree(self.staging, ignore_errors=True)
        _remove_if_empty(self.root / STAGING_DIR)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (another worker's shard is staging) or gone
        pass


def finalize_internvl(out: str | Path, name: str, shards: Sequence[dict], *, absolute: bool = False,
                      max_dynamic_patch: int | None = None, data_augment: bool = False) -> dict:
    """Merge the shard JSONLs into OUT/internvl/<name>.jsonl and write OUT/internvl/meta.json.

    `shards` are manifest shard entries ({"path", "format", "num_samples", ...}, paths relative to
    `out`) in shard order; entries of other formats are ignored. `max_dynamic_patch`, when given, is
    written into the meta entry (pass the build's `max_tiles`, so the reference tiles as we counted).
    `data_augment` is written as given: the reference trainer then JPEG re-encodes this entry's tiles.
    Returns the meta dict. Idempotent: a rerun rewrites the same bytes.
    """
    out = Path(out)
    root = out / "internvl"
    if not _SAFE_NAME.match(name) or name in ("meta",) or name.startswith("."):
        raise ValueError(f"internvl meta name {name!r} must match {_SAFE_NAME.pattern} and not be 'meta'")
    entries = [s for s in shards if s["format"] == "internvl"]
    merged = root / f"{name}.jsonl"
    length = 0
    with atomic_path(merged) as tmp, open(tmp, "wb") as dst:
        for entry in entries:
            n = 0
            with open(out / entry["path"], "rb") as src:
                for raw in src:
                    if raw.strip():
                        dst.write(raw if raw.endswith(b"\n") else raw + b"\n")
                        n += 1
            if n != entry["num_samples"]:
                raise ValueError(f"{entry['path']} holds {n} lines, its manifest entry says {entry['num_samples']}")
            length += n
        dst.flush()
        os.fsync(dst.fileno())
    where = root.resolve() if absolute else None
    item = {
        "root": str(where) if where else ".",
        "annotation": str(where / merged.name) if where else merged.name,
        "data_augment": bool(data_augment),
        "repeat_time": 1,
        "length": length,
    }
    if max_dynamic_patch is not None:
        item["max_dynamic_patch"] = int(max_dynamic_patch)
    meta = {name: item}
    write_json_atomic(root / META_FILE, meta)
    return meta
