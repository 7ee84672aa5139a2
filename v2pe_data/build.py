"""A build: plan samples from a seed, cut them into shard tasks, write each atomically, then the manifest.

Every sample depends only on (seed, index), so shard tasks are independent: any number of workers, any
order, and any rerun produce the same bytes. A finished task leaves a marker; a rerun skips it when the
files it lists still have their recorded sha256.

The folder's layout (build.json, the markers, the locks, the manifest) is `v2pe_common.buildfolder`.

Scale-out: a run with `num_shards` N > 1 writes only the tasks i with i % N == shard_index, on one of many
machines sharing OUT, and no manifest; `merge` checks every marker and writes it. Such runs hold the
folder lock *shared*, so they run side by side yet never beside a one-machine build or a merge (which hold
it exclusively and sweep temporaries), plus an exclusive lock of their own index. Side by side is safe:
their task sets are disjoint, each task has its own files and marker, and every temporary carries its
writer's pid; only build.json and sources.json are written by all of them, with the same bytes, atomically.

Failures end in one `BuildError` line: a busy or foreign folder and bad arguments (`usage=True`); a
full disk, an unwritable folder, a lost worker process or a source that changed (`usage=False`).
Temporaries carry their process id; those of killed processes are swept by the next build that locks
the folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from v2pe_common import schema
from v2pe_common.recipe import ConfigError
from v2pe_common.template import get_template
from v2pe_common.tiling import TilingConfig
from v2pe_common.tokenizer import BUNDLED, load_tokenizer
from v2pe_common.buildfolder import (BUILD_FILE, DONE_DIR, MANIFEST_FILE, PATHS_FILE, PRIVATE_DIR, SOURCES_FILE,
                                     FolderBusy, lock, marker_path, shard_lock_name, unlock)

from .card import CARD_FILE, write_card
from .progress import progress_bar
from .config import BuildConfig
from .errors import BuildError
from .manifest import make_manifest
from .privacy import read_private, redact_args, restore_args
from .markers import marker_problem, read_marker
from .shardtasks import ShardTask, selected_tasks, shard_tasks
from .plan import Accounting, PlanError, SamplePlan
from .sources.registry import SourceChanged, fingerprint_change, source_files, source_fingerprint
from .task_registry import open_task
from .writers.atomic import write_json_atomic
from .writers.base import FORMATS, ShardOutputs, shard_relpath
from .writers.formats import finalize_all
from .writers.internvl import STAGING_DIR

log = logging.getLogger(__name__)

def _os_error(exc: OSError, verb: str = "write") -> BuildError:
    where = exc.filename if exc.filename is not None else "the build folder"
    return BuildError(f"cannot {verb} {where}: {exc.strerror or exc}")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("v2pe", "pillow", "transformers", "tokenizers", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def build_identity(cfg: BuildConfig, tokenizer_identity: dict, sources: list[dict] = ()) -> dict:
    """Everything that decides the bytes; `sources` are the sources' fingerprints (`source_fingerprint`).

    `args.formats` is recorded but not hashed into `build_id`: the formats are views of the same samples,
    and `v2pe-data convert` adds one to a finished build, so a converted build and a build that asked for
    the formats from the start have the same build.json (see `convert`).
    """
    args = cfg.identity() if cfg.publish_paths else redact_args(cfg.identity())[0]
    ident = {"args": args, "tokenizer": tokenizer_identity, "versions": versions(), "format_version": 1,
             "sources": list(sources)}
    ident["build_id"] = identity_id(ident)
    return ident


def identity_id(ident: dict) -> str:
    """The build_id of an identity: its sha256 over everything but `build_id` itself and `args.formats`."""
    hashed = {k: v for k, v in ident.items() if k != "build_id"}
    hashed["args"] = {k: v for k, v in ident["args"].items() if k != "formats"}
    return hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:16]


class Builder:
    """Holds what every task needs; cheap to fork into worker processes."""

    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg
        log.info("loading tokenizer %s", cfg.tokenizer or BUNDLED)
        try:
            tokenizer = load_tokenizer(cfg.tokenizer)
        except ValueError as exc:  # a --tokenizer that is not a tokenizer folder
            raise BuildError(str(exc), usage=True) from None
        self.acc = Accounting(tokenizer, get_template(cfg.template), TilingConfig(max_tiles=cfg.max_tiles))
        try:
            self.task = open_task(cfg, self.acc)
        except ConfigError as exc:
            raise BuildError(str(exc), usage=True) from None
        self.inputs = self.task.inputs
        self.out = Path(cfg.out)
        self.listings = self.source_listings()
        self.identity = build_identity(cfg, tokenizer.identity, [source_fingerprint(i.entry, i.available, f)
                                                                 for i, f in zip(self.inputs, self.listings)])

    def source_listings(self) -> list[dict[str, list[int]]]:
        """Per input, {file: [size, mtime_ns]} of what it may read now (empty when unavailable)."""
        return [source_files(i.entry, i.source, skip=self.out) if i.available else {} for i in self.inputs]

    def check_sources_unchanged(self) -> None:
        """Refuse to finish a build whose sources changed while it ran (its shards may mix both)."""
        listings = self.source_listings()
        now = [source_fingerprint(i.entry, i.available, f) for i, f in zip(self.inputs, listings)]
        change = fingerprint_change(self.identity["sources"], now, self.listings, listings, "while this build ran")
        if change:
            raise BuildError(f"{change}; its shards may mix old and new data: rebuild into an empty --out")

    def check_feasible(self) -> None:
        try:
            self.task.check_feasible(self.cfg.min_length, self.cfg.length)
        except (ConfigError, PlanError) as exc:  # no sample can be planned from these arguments
            raise BuildError(str(exc), usage=True) from None

    def plan(self, index: int) -> SamplePlan:
        return self.task.plan(index)

    def source_report(self) -> tuple[list[dict], dict, list[dict]]:
        """(per-input descriptions, rejected-row counts by reason, examples naming the source id)."""
        counts: dict[str, int] = {}
        examples: list[dict] = []
        for inp in self.inputs:
            for row in inp.rejected():
                counts[row["reason"]] = counts.get(row["reason"], 0) + 1
                if len(examples) < 100:
                    examples.append(dict(row))
        return [i.describe() for i in self.inputs], counts, examples

    def run_task(self, task: ShardTask, progress: Callable[[int, int], None] = lambda s, t: None) -> dict:
        """Write one task's shard(s), in every requested format, atomically; return its completion marker.

        A failed write (full disk, `ulimit -f`, a read-only folder) leaves nothing staged and raises a
        BuildError naming the file and the cause.
        """
        try:
            return self._run_task(task, progress)
        except SourceChanged as exc:
            raise BuildError(str(exc)) from None
        except OSError as exc:
            raise _os_error(exc) from None

    def _run_task(self, task: ShardTask, progress: Callable[[int, int], None]) -> dict:
        log.info("writing shard task %d: samples %d..%d", task.index, task.start, task.stop - 1)
        files, tokens, rejected, examples = [], [], {}, []
        capped = self.cfg.shard_bytes is not None
        parts = 0
        out = ShardOutputs(self.cfg.formats, self.out, self.cfg.split, task.index, 0 if capped else None)
        try:
            for index in range(task.start, task.stop):
                try:
                    plan = self.plan(index)
                except PlanError as exc:
                    raise BuildError(str(exc), usage=True) from None
                for reason, n in plan.rejected.items():
                    rejected[reason] = rejected.get(reason, 0) + n
                    if len(examples) < 20:
                        examples.append({"reason": reason, "sample_index": index, "count": n})
                where = f"{shard_relpath('wds', self.cfg.split, task.index, parts if capped else None)}:{plan.record['id']}"
                schema.validate(plan.record, schema.SAMPLE, where=where)
                schema.check_counts(plan.record)
                # Parts roll over on the tar's size, so the tars never depend on the other formats.
                if capped and out.num_samples and out.size() >= self.cfg.shard_bytes:
                    files.extend(out.commit())
                    parts += 1
                    out = ShardOutputs(self.cfg.formats, self.out, self.cfg.split, task.index, parts)
                out.begin(plan.record)
                for name, item in zip(plan.record["images"], plan.items):
                    out.add_image(name, item.load())  # loaded once, handed to every format
                out.end()
                meta = plan.record["meta"]
                tokens.append([meta["num_tokens"], meta["text_tokens"], meta["image_tokens"], len(plan.items)])
                progress(1, plan.num_tokens)
            files.extend(out.commit())
        except BaseException:
            out.abort()
            raise
        marker = {"task": dataclasses.asdict(task), "files": files, "tokens": tokens,
                  "rejected": {"counts": rejected, "examples": examples}}
        write_json_atomic(marker_path(self.out, task.index), marker)
        return marker


def _task_done(out: Path, task: ShardTask, formats: list[str]) -> bool:
    """Whether a task can be skipped: its marker holds for it (`markers.marker_problem`: the task's range, a
    count for every format, files with their recorded size and sha256). The hash is checked, not just the
    size: one read of the finished output per rerun, the price of never publishing a manifest that fails
    validate."""
    return marker_problem(out, read_marker(marker_path(out, task.index)), dataclasses.asdict(task),
                          formats) is None


def _locks(out: Path, cfg: BuildConfig) -> tuple[int, ...]:
    """The folder lock, exclusive; for a sharded run, shared plus the exclusive lock of its shard index."""
    try:
        if cfg.num_shards == 1:
            return (lock(out),)
        fd = lock(out, shared=True)
        try:
            return fd, lock(out, shard_lock_name(cfg.shard_index, cfg.num_shards))
        except BaseException:
            unlock((fd,))
            raise
    except FolderBusy as busy:
        raise BuildError(f"another build is writing to {out} (it holds {busy.path}); wait for it to end or choose "
                         "another --out", usage=True) from None


def _claimed(builder: Builder) -> bool:
    """Whether OUT already holds this build; refuses a foreign folder or another build, touching nothing."""
    out = builder.out
    ident_file = out / BUILD_FILE
    if not ident_file.exists():
        if out.is_dir() and any(p.name != PRIVATE_DIR for p in out.iterdir()):
            raise BuildError(f"{out} is not empty and holds no v2pe build; choose an empty or new --out", usage=True)
        return False
    try:
        existing = json.loads(ident_file.read_text())
    except ValueError:
        raise BuildError(f"{ident_file} is not valid JSON; choose another --out", usage=True) from None
    old, new = existing.get("args", {}), builder.identity["args"]
    if existing.get("build_id") == builder.identity["build_id"]:
        if old.get("formats") != new.get("formats"):  # the same samples, other files: convert, never rewrite
            raise BuildError(f"{out} holds this build in formats {old.get('formats')}, not {new.get('formats')}; "
                             f"rerun with --format {','.join(old.get('formats') or [])}, and once it is finished "
                             f"add formats with `v2pe-data convert {out} --to FORMAT[,FORMAT]`", usage=True)
        return True
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    head = f"{out} holds another build (build_id {existing.get('build_id')}"
    if changed:
        why = f"{head}; arguments differ: {changed}); choose an empty --out or rerun with the same arguments"
    elif "sources" not in existing:
        why = (f"{head}, made before builds recorded their sources' files, so they cannot be checked); "
               "choose an empty --out")
    elif change := fingerprint_change(existing["sources"], builder.identity["sources"], _read_json(out / SOURCES_FILE),
                                      builder.listings, f"since the build in {out} started"):
        why = f"{change}; restore it, or build into an empty --out"
    else:
        why = f"{head}; {_identity_change(existing, builder)}); choose an empty --out or rerun with the same versions"
    raise BuildError(why, usage=True)


def _identity_change(existing: dict, builder: Builder) -> str:
    """What differs between a folder's recorded identity and this build's, arguments and sources being equal."""
    new = builder.identity
    old_tok = existing.get("tokenizer") or {}
    if old_tok != new["tokenizer"]:
        if builder.acc.tokenizer.matches(old_tok.get("sha256", "")):
            return ("the same tokenizer, recorded by a v2pe from before tokenizers were hashed by their content: "
                    "finish this build with that version")
        return f"the tokenizer differs: {old_tok.get('name')} then, {new['tokenizer']['name']} now"
    old_v = existing.get("versions") or {}
    changed = sorted(k for k in set(old_v) | set(new["versions"]) if old_v.get(k) != new["versions"].get(k))
    if changed:
        pairs = (f"{k} {old_v.get(k)} -> {new['versions'].get(k)}" for k in changed)
        return "package versions differ: " + ", ".join(pairs)
    return "its identity was computed by another v2pe version"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def sweep_temporaries(out: Path, split: str) -> None:
    """Remove temporaries of killed processes; only under the lock, when no other build can be writing."""
    folders = {out, out / PRIVATE_DIR, out / DONE_DIR, out / "internvl"}
    folders |= {(out / shard_relpath(fmt, split, 0)).parent for fmt in FORMATS}
    folders |= {p for p in (out / "mmniah" / "parts").glob("*") if p.is_dir()}  # one folder per MM-NIAH part
    for folder in folders:
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    for staging in (out / "internvl" / STAGING_DIR, out / "mmniah" / STAGING_DIR):
        shutil.rmtree(staging, ignore_errors=True)


def prepare_out(builder: Builder) -> tuple[int, ...]:
    """Claim and lock the output folder for this build, or refuse without touching anything.

    Returns the locks' file descriptors: the folder (or, sharded, this shard index) is this process's until
    they are closed.
    """
    out = builder.out
    if out.exists() and not out.is_dir():
        raise BuildError(f"--out {out} is a file, not a folder; choose a folder", usage=True)
    try:
        _claimed(builder)  # refuse before the lock file is created, so a refusal touches nothing
        fds = _locks(out, builder.cfg)
    except OSError as exc:
        raise _os_error(exc) from None
    try:
        if _claimed(builder):  # again under the lock: another build may have claimed the folder meanwhile
            if builder.cfg.num_shards == 1:  # a sharded run's peers may be writing their temporaries now
                sweep_temporaries(out, builder.cfg.split)
        else:
            write_json_atomic(out / SOURCES_FILE, builder.listings)  # before build.json, which implies it
            write_json_atomic(out / BUILD_FILE, builder.identity)
        write_json_atomic(out / PATHS_FILE, redact_args(builder.cfg.identity())[1])  # where the sources are now
    except BaseException as exc:
        unlock(fds)
        if isinstance(exc, OSError):
            raise _os_error(exc) from None
        raise
    return fds


def build(cfg: BuildConfig, show_progress: bool = True, on_start: Callable[[], None] = lambda: None) -> dict:
    """Run (or finish) a build and return its manifest; a sharded run (num_shards > 1) writes its shard
    tasks only and returns {"shard_index", "num_shards", "tasks", "written"}: `merge` writes the manifest.

    `on_start` runs once the arguments, the tokenizer and the folder are settled, before the first sample:
    what the caller says there comes before the progress bar, and a refused build never reaches it."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    builder = Builder(cfg)
    builder.check_feasible()
    if cfg.executor == "ray":
        from .executors import import_ray

        import_ray()  # refused before the folder is touched
    lock_fds = prepare_out(builder)
    try:
        on_start()
        return _build(builder, show_progress, lock_fds)
    finally:
        unlock(lock_fds)


def _build(builder: Builder, show_progress: bool, lock_fds: tuple[int, ...]) -> dict:
    cfg = builder.cfg
    tasks = selected_tasks(cfg.num_samples, cfg.shard_size, cfg.num_shards, cfg.shard_index)
    todo = [t for t in tasks if not _task_done(builder.out, t, cfg.formats)]
    remaining = sum(t.stop - t.start for t in todo)
    log.info("planning %d samples in %d shard task(s): %d to write, %d already done", cfg.num_samples, len(tasks),
             remaining, sum(t.stop - t.start for t in tasks) - remaining)
    log.info("counting tokens with tokenizer %s (template %s, up to %d tiles an image)",
             builder.identity["tokenizer"]["name"], cfg.template, cfg.max_tiles)
    bar = progress_bar(remaining, f"build {cfg.task}", "sample", show_progress)
    tokens_seen = 0

    def progress(samples: int, tokens: int) -> None:
        nonlocal tokens_seen
        tokens_seen += tokens
        bar.update(samples)
        bar.set_postfix(tokens=f"{tokens_seen / 1e6:.2f}M", refresh=False)

    from .executors import run_parallel, run_ray

    try:
        if cfg.executor == "ray" and todo:
            run_ray(builder, todo, progress)
        elif cfg.workers > 1 and len(todo) > 1:
            run_parallel(builder, todo, min(cfg.workers, len(todo)), progress, lock_fds)
        else:
            for t in todo:
                builder.run_task(t, progress)
    finally:
        bar.close()
    builder.check_sources_unchanged()
    if cfg.num_shards > 1:
        return {"shard_index": cfg.shard_index, "num_shards": cfg.num_shards, "tasks": len(tasks), "written": len(todo)}
    return _finish(builder, tasks)


def _finish(builder: Builder, tasks: list[ShardTask]) -> dict:
    """The manifest from every task's marker, after the formats' finalize steps; what `build` and `merge` end in."""
    cfg = builder.cfg
    try:
        markers = [json.loads((marker_path(builder.out, t.index)).read_text()) for t in tasks]
    except OSError as exc:
        raise _os_error(exc, "read") from None
    manifest = make_manifest(builder.identity, cfg, builder.acc, markers, builder.source_report())
    schema.validate(manifest, schema.MANIFEST, where=str(builder.out / MANIFEST_FILE))
    try:
        # before the manifest: a manifest present means the build is complete
        log.info("finalizing formats: %s", ", ".join(cfg.formats))
        finalize_all(builder.out, f"{cfg.task}_{cfg.split}", cfg.formats, manifest["shards"], cfg)
        log.info("writing card %s", builder.out / CARD_FILE)
        write_card(builder.out, manifest, builder.identity)
        log.info("writing manifest %s", builder.out / MANIFEST_FILE)
        write_json_atomic(builder.out / MANIFEST_FILE, manifest)
    except OSError as exc:
        raise _os_error(exc) from None
    return manifest


def merge(out: str | Path, show_progress: bool | None = False) -> dict:
    """Join the shard tasks of a sharded build in `out` into its manifest (and card); return the manifest.

    The build's arguments come from OUT/build.json; this machine must give the same build_id (tokenizer,
    package versions, sources). Every task needs a marker whose files hold their recorded sha256, checked as
    a rerun checks them; the missing ones are named in one BuildError. Holds the folder lock exclusively, so
    it refuses while any shard run is still writing.
    """
    from v2pe_common.recipe import ConfigError

    out = Path(out)
    ident = _read_json(out / BUILD_FILE)
    if not isinstance(ident, dict) or not isinstance(ident.get("args"), dict):
        raise BuildError(f"{out / BUILD_FILE} is missing or unreadable: {out} holds no v2pe build to merge", usage=True)
    try:
        args = restore_args(ident["args"], read_private(out))  # the real paths, kept beside the build
        cfg = BuildConfig.from_dict({**args, "out": str(out)}, where=str(out / BUILD_FILE))
    except ConfigError as exc:
        raise BuildError(str(exc), usage=True) from None
    builder = Builder(cfg)
    if builder.identity["build_id"] != ident.get("build_id"):
        _claimed(builder)  # raises the line naming what differs (arguments, sources, versions)
    lock_fds = prepare_out(builder)
    try:
        tasks = shard_tasks(cfg.num_samples, cfg.shard_size)
        claimed: dict[str, int] = {}
        log.info("checking the markers and files of %d shard task(s)", len(tasks))
        problems = []
        with progress_bar(len(tasks), "merge: check", "task", show_progress) as bar:
            for t in tasks:
                why = marker_problem(out, read_marker(marker_path(out, t.index)), dataclasses.asdict(t), cfg.formats,
                                     claimed)
                if why:
                    problems.append((t.index, why))
                bar.update(1)
        if problems:
            shown = "; ".join(f"task {i}: {why}" for i, why in problems[:5]) + (" ..." if len(problems) > 5 else "")
            raise BuildError(f"{len(problems)} of {len(tasks)} shard task(s) of {out} are missing or do not hold "
                             f"what their marker claims ({shown}); rerun their shard indices, then merge again")
        return _finish(builder, tasks)
    finally:
        unlock(lock_fds)

