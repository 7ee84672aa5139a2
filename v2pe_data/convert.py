"""`v2pe-data convert OUT --to parquet,internvl`: a finished build gains formats without being rebuilt.

The samples are streamed from the build's tar shards, member by member (one image's bytes at a time, never
decoded), into the same shard writers the build uses (`writers.base.ShardOutputs`, through the format
registry), shard task by shard task and part by part, so every file is the one a build that asked for the
formats from the start writes. Then, as a build ends: the formats' finalize steps, build.json, the card, and
the manifest last.

What keeps a converted build and a direct build identical: the formats are listed in `build.json`'s
`args.formats` and the manifest's `formats` (the old ones, then the new ones in the order asked), but they
are not hashed into the `build_id` (`build.identity_id`), so the build id stays and build.json, the
completion markers, the manifest and the card come out as the direct build of `--format OLD,NEW` writes
them.

Safety: the folder lock is held throughout, as a build holds it. Each task's new files are committed
atomically and its marker is rewritten after them, listing the old and new files; the old manifest stays
valid until the new one replaces it (write + rename), so a killed convert leaves the build as it was plus
unlisted files (killed between writing build.json and the manifest, build.json already names the new formats,
and `build` with the old ones is refused: rerun the convert), and a rerun skips the tasks whose markers
already hold every format. The manifest is read again under the lock, so two converts of one folder, one
after the other, keep both's formats. Asking only for formats
the build already has is not an error: it says so and changes nothing (exit 0), so scripts can rerun it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from v2pe_common.buildfolder import BUILD_FILE, MANIFEST_FILE, FolderBusy, lock, marker_path, unlock
from v2pe_common.formats import ShardReadError, wds
from v2pe_common.recipe import ConfigError
from v2pe_common.schema import load_manifest

from .build import sweep_temporaries
from .card import write_card
from .config import BuildConfig
from .errors import V2PEDataError
from .markers import marker_problem, read_marker
from .progress import progress_bar
from .privacy import read_private, restore_args
from .shardtasks import ShardTask, shard_tasks
from .writers.atomic import write_json_atomic
from .writers.base import ShardOutputs
from .writers.formats import FORMATS, finalize_all, shard_relpath, task_format_error


class ConvertError(V2PEDataError, RuntimeError):
    """The build cannot be converted; `usage` marks a bad folder or format list (exit 2, else 1)."""

    reason = "convert"

    def __init__(self, message: str, *, usage: bool = False):
        super().__init__(message)
        self.usage = usage


def parse_formats(text: str) -> list[str]:
    """'parquet, internvl' -> ['parquet', 'internvl']; an unknown or empty list is a usage error."""
    names = list(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
    bad = [f for f in names if f not in FORMATS]
    if bad or not names:
        raise ConvertError(f"--to: unknown format {bad[0]!r}; choose from {list(FORMATS)}" if bad
                           else f"--to: name at least one format of {list(FORMATS)}", usage=True)
    return names


def _finished(out: Path) -> tuple[dict, dict]:
    """(manifest, build.json) of a finished build, or a usage error saying what the folder lacks."""
    if not (out / BUILD_FILE).is_file() or not (out / MANIFEST_FILE).is_file():
        missing = BUILD_FILE if not (out / BUILD_FILE).is_file() else MANIFEST_FILE
        raise ConvertError(f"{out} is not a finished build (no {missing}); finish it with `v2pe-data build` "
                           "(or `v2pe-data merge` for a sharded build) first", usage=True)
    try:
        manifest = load_manifest(out / MANIFEST_FILE)
        ident = json.loads((out / BUILD_FILE).read_text())
    except ValueError as exc:
        raise ConvertError(f"{out} is not a finished build: {' '.join(str(exc).split())}", usage=True) from None
    if not isinstance(ident, dict) or not isinstance(ident.get("args"), dict):
        raise ConvertError(f"{out / BUILD_FILE}: holds no build arguments", usage=True)
    return manifest, ident


def plan_formats(manifest: dict, requested: Sequence[str]) -> tuple[list[str], list[str]]:
    """(formats to add, all formats after): the build's own first, then the requested ones it lacks."""
    why = task_format_error(requested, manifest["task"])
    if why is not None:
        raise ConvertError(f"--to: {why}", usage=True)
    present = list(manifest["formats"])
    new = [f for f in requested if f not in present]
    return new, present + new


def convert(out: str | Path, requested: Sequence[str], show_progress: bool = True) -> dict:
    """Add `requested` formats to the finished build in `out`; returns {"added", "present", "manifest"}."""
    out = Path(out)
    plan_formats(_finished(out)[0], requested)  # usage errors before the lock, which writes into the folder
    try:
        fds = (lock(out),)
    except FolderBusy as busy:
        raise ConvertError(f"another build or convert is writing to {out} (it holds {busy.path}); wait for it "
                           "to end", usage=True) from None
    try:
        # read again under the lock: a convert that ended in between added formats this one must keep
        manifest, ident = _finished(out)
        new, formats = plan_formats(manifest, requested)
        if not new:
            return {"added": [], "present": list(requested), "manifest": manifest}
        args = {**restore_args(ident["args"], read_private(out)), "formats": formats, "out": str(out)}
        try:
            cfg = BuildConfig.from_dict(args, where=str(out / BUILD_FILE))
        except ConfigError as exc:
            raise ConvertError(str(exc), usage=True) from None
        sweep_temporaries(out, cfg.split)  # what a killed build or convert left
        markers = _convert_tasks(out, cfg, manifest["formats"], new, show_progress)
        shards = [f for m in markers for f in m["files"]]
        finalize_all(out, f"{cfg.task}_{cfg.split}", new, shards, cfg)
        ident = {**ident, "args": {**ident["args"], "formats": formats}}  # build_id unchanged: formats unhashed
        manifest = {**manifest, "args": ident["args"], "formats": formats, "shards": shards}
        write_json_atomic(out / BUILD_FILE, ident)
        write_card(out, manifest, ident)
        write_json_atomic(out / MANIFEST_FILE, manifest)  # last: until here the old manifest holds
    finally:
        unlock(fds)
    return {"added": new, "present": [f for f in requested if f not in new], "manifest": manifest}


def _convert_tasks(out: Path, cfg: BuildConfig, present: list[str], new: list[str], show_progress: bool) -> list[dict]:
    """Every task's marker, each listing the old and the new formats' files (converted here unless a killed
    convert already did)."""
    tasks = shard_tasks(cfg.num_samples, cfg.shard_size)
    markers, todo = [], []
    for task in tasks:
        marker = read_marker(marker_path(out, task.index))
        if marker_problem(out, marker, dataclasses.asdict(task), cfg.formats) is None:
            markers.append(marker)  # converted by a convert that was killed later
            continue
        why = marker_problem(out, marker, dataclasses.asdict(task), present)
        if why is not None:
            raise ConvertError(f"{out}: shard task {task.index}: {why}; `v2pe-data validate {out}` names what "
                               "changed, rerun the build to repair it")
        markers.append(marker)
        todo.append(task)
    bar = progress_bar(sum(t.stop - t.start for t in todo), f"convert to {','.join(new)}", "sample", show_progress)
    try:
        for task in todo:
            marker = markers[task.index]
            marker["files"] = _convert_task(out, cfg, task, marker["files"], new, bar.update)
            write_json_atomic(marker_path(out, task.index), marker)  # after its files are committed
    finally:
        bar.close()
    return markers


def _convert_task(out: Path, cfg: BuildConfig, task: ShardTask, files: list[dict], new: list[str],
                  progress) -> list[dict]:
    """One task's tar parts into the `new` formats; returns its file list in the order a build commits them:
    part by part, and within a part the formats in `cfg.formats` order (the old ones, then the new)."""
    tars = [f for f in files if f["format"] == "wds"]
    parts = [None] if cfg.shard_bytes is None else list(range(len(tars)))
    listed = []
    for part, tar in zip(parts, tars, strict=True):
        old = [f for f in files if _in_part(f, cfg.split, task.index, part)]
        outputs = ShardOutputs(new, out, cfg.split, task.index, part)
        try:
            for sample in wds.iter_samples(out / tar["path"], num_samples=tar["num_samples"]):
                _stream(sample, outputs, tar["path"])
                progress(1)
            listed.extend(old + outputs.commit())
        except BaseException as exc:
            outputs.abort()
            if isinstance(exc, ShardReadError):
                raise ConvertError(f"{out / tar['path']}: {exc}") from None
            raise
    return listed


def _in_part(entry: dict, split: str, index: int, part: int | None) -> bool:
    where = shard_relpath(entry["format"], split, index, part)
    return entry["path"] == where or entry["path"].startswith(where + "/")  # an MM-NIAH part is a folder


def _stream(sample, outputs: ShardOutputs, where: str) -> None:
    """One tar sample into every new format: its record first, then each image's bytes as they are read."""
    members = sample.members()
    first = next(members, None)
    if first is None or first.suffix != wds.RECORD_SUFFIX:
        raise ConvertError(f"{where}: sample {sample.key!r} does not start with its record")
    try:
        record = json.loads(first.read())
    except ValueError as exc:
        raise ConvertError(f"{where}: sample {sample.key!r}: its record is not JSON ({exc})") from None
    outputs.begin(record)
    for member in members:
        outputs.add_image(member.suffix, member.read())
    if sample.broken is not None:
        raise sample.broken
    outputs.end()
