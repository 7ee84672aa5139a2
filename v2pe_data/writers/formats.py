"""The output formats a build can write: one registry entry each, so a new format is one module plus one entry.

An entry (`FormatSpec`) says where a shard of the format lies (`relpath`, relative to the build folder),
how to open its shard writer (`open`, the streaming protocol plus commit/abort, see `protocol`), what
runs once every shard is written (`finalize`, before the manifest), how to read a shard back
(`read_back`, for `validate` and tests), and which tasks' records it can hold (`tasks`).

    wds       shards/NAME.tar
    parquet   parquet/NAME.parquet
    internvl  internvl/annotations/NAME.jsonl   (+ internvl/images/<id>/<i>.<ext>; finalize: merged JSONL + meta.json)
    mmniah    mmniah/parts/NAME/<file>.jsonl    (+ mmniah/images/<id>/<i>.<ext>; finalize: mmniah/annotations/)

`NAME` = `<split>-<task:06d>` or `<split>-<task:06d>-<part:03d>`. An MM-NIAH part holds one JSONL per
MM-NIAH task file its samples go to (`retrieval-text.jsonl`, ...), each its own manifest entry; MM-NIAH
lines carry fields only Long-MR records have, so it takes long_mr builds only. Its `read_back` gives
MM-NIAH lines, not records (`records=False`), each checked against MM-NIAH's invariants as it is read.

Writer modules are imported when a format is opened, so reading this registry (the config does) loads
neither pyarrow nor a task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from v2pe_common.formats import read_records

from .mmniah import MMNIAHWriter, merge_parts
from .protocol import ShardWriter, atomic_file_shard, shard_name


@dataclass(frozen=True)
class FormatSpec:
    name: str
    relpath: Callable[[str, int, int | None], str]  # (split, task index, part) -> path under the build folder
    open: Callable[..., ShardWriter]  # (out, split, index, part, **writer options)
    read_back: Callable[[Path, dict], Iterator[tuple[dict, dict[str, bytes]]]]  # (out, manifest entry)
    finalize: Callable[[Path, str, Sequence[dict], object], object] | None = None  # (out, name, shards, cfg)
    tasks: tuple[str, ...] | None = None  # the tasks whose records it can hold; None: every task
    records: bool = True  # read_back gives the build's records (else the format's own lines, checked as read)


# -- wds ------------------------------------------------------------------------------------------
def _open_wds(out: Path, split: str, index: int, part: int | None, **options) -> ShardWriter:
    from .wds import WdsWriter

    return atomic_file_shard(out / SPECS["wds"].relpath(split, index, part), lambda tmp: WdsWriter(tmp, **options))


def _read_wds(out: Path, entry: dict) -> Iterator[tuple[dict, dict[str, bytes]]]:
    from v2pe_common.formats import wds

    for _, record, images in read_records(wds.iter_samples(out / entry["path"])):
        yield record, images


# -- parquet --------------------------------------------------------------------------------------
def _open_parquet(out: Path, split: str, index: int, part: int | None, **options) -> ShardWriter:
    from .parquet import ParquetShardWriter

    return atomic_file_shard(out / SPECS["parquet"].relpath(split, index, part),
                             lambda tmp: ParquetShardWriter(tmp, **options))


def _read_parquet(out: Path, entry: dict) -> Iterator[tuple[dict, dict[str, bytes]]]:
    from v2pe_common.formats.parquet import read_parquet_samples

    return read_parquet_samples(out / entry["path"])


# -- internvl -------------------------------------------------------------------------------------
def _open_internvl(out: Path, split: str, index: int, part: int | None, **options) -> ShardWriter:
    from .internvl import InternVLShardWriter

    return InternVLShardWriter(out / "internvl", shard_name(split, index, part), **options)


def _read_internvl(out: Path, entry: dict) -> Iterator[tuple[dict, dict[str, bytes]]]:
    from v2pe_common.formats.internvl import read_internvl_samples

    return read_internvl_samples(out / "internvl", out / entry["path"])


def _finalize_internvl(out: Path, name: str, shards: Sequence[dict], cfg) -> None:
    from .internvl import finalize_internvl

    # the build's max_tiles, so the reference trainer tiles as we counted
    finalize_internvl(out, name, shards, max_dynamic_patch=cfg.max_tiles,
                      absolute=cfg.internvl_root == "absolute", data_augment=cfg.internvl_augment)


# -- mmniah ---------------------------------------------------------------------------------------
MMNIAH_DIR = "mmniah"

def _read_mmniah(out: Path, entry: dict) -> Iterator[tuple[dict, dict[str, bytes]]]:
    """(MM-NIAH line, {image path as the line gives it: bytes}) per line of one part file, read as MM-NIAH's
    evaluation reads it: each line checked against MM-NIAH's invariants (MMNIAHError naming FILE:LINE and
    the field), its images inside OUT/mmniah/images."""
    from v2pe_common.formats.mmniah import IMAGES, read_file

    for sample in read_file(out / entry["path"], out / MMNIAH_DIR / IMAGES):
        paths = sample.line["images_list"] + (sample.line["meta"]["choices_image_path"] or [])
        yield sample.line, {rel: p.read_bytes() for rel, p in zip(paths, sample.images + sample.choice_images)}


def _finalize_mmniah(out: Path, name: str, shards: Sequence[dict], cfg) -> None:
    # the parts in shard order; a part's files are its folder's
    parts = dict.fromkeys(Path(s["path"]).parent.name for s in shards if s["format"] == "mmniah")
    merge_parts(out / MMNIAH_DIR, list(parts))


SPECS: dict[str, FormatSpec] = {
    "wds": FormatSpec("wds", lambda split, index, part: f"shards/{shard_name(split, index, part)}.tar",
                      _open_wds, _read_wds),
    "parquet": FormatSpec("parquet", lambda split, index, part: f"parquet/{shard_name(split, index, part)}.parquet",
                          _open_parquet, _read_parquet),
    "internvl": FormatSpec("internvl",
                           lambda split, index, part: f"internvl/annotations/{shard_name(split, index, part)}.jsonl",
                           _open_internvl, _read_internvl, finalize=_finalize_internvl),
    "mmniah": FormatSpec("mmniah", lambda split, index, part: f"{MMNIAH_DIR}/parts/{shard_name(split, index, part)}",
                         lambda out, split, index, part: MMNIAHWriter(out / MMNIAH_DIR, shard_name(split, index, part)),
                         _read_mmniah, finalize=_finalize_mmniah, tasks=("long_mr",), records=False),
}
FORMATS = tuple(SPECS)
ROLL_OVER = "wds"  # byte-capped parts roll over on the tar's size, whatever else is written beside it


def spec(fmt: str) -> FormatSpec:
    try:
        return SPECS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; choose from {list(FORMATS)}") from None


def shard_relpath(fmt: str, split: str, index: int, part: int | None = None) -> str:
    """Where one shard of `fmt` lies, relative to the build folder (mmniah: the part's folder)."""
    return spec(fmt).relpath(split, index, part)


def formats_for(task: str) -> tuple[str, ...]:
    """The formats that can hold `task`'s records."""
    return tuple(name for name, s in SPECS.items() if s.tasks is None or task in s.tasks)


def task_format_error(formats: Sequence[str], task: str) -> str | None:
    """Why `task` cannot be written in `formats` (one line naming the format and the task), or None."""
    for fmt in formats:
        tasks = SPECS[fmt].tasks if fmt in SPECS else None
        if tasks is not None and task not in tasks:
            return (f"format {fmt!r} holds only {' or '.join(tasks)} records, not task {task!r}; "
                    f"{task} can be written as {list(formats_for(task))}")
    return None


def finalize_all(out: Path, name: str, formats: Sequence[str], shards: Sequence[dict], cfg) -> None:
    """Run the finalize step of each of `formats` that has one, in order (before the manifest is written)."""
    for fmt in formats:
        step = spec(fmt).finalize
        if step is not None:
            step(Path(out), name, shards, cfg)
