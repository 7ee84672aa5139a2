"""A build: plan samples from a seed, cut them into shard tasks, write each atomically, then the manifest.

Every sample depends only on (seed, index), so shard tasks are independent: any number of workers, any
order, and any rerun produce the same bytes. A finished task leaves a marker; a rerun skips it.

Folder layout:
    OUT/build.json                 identity of the build (arguments, versions, build_id)
    OUT/shards/train-000000.tar    webdataset shards (+ parquet/, internvl/ with --format)
    OUT/.v2pe/done/000000.json     per-task completion marker with its files, hashes and stats
    OUT/manifest.json              written last, from the markers
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from v2pe_common import schema
from v2pe_common.template import get_template
from v2pe_common.tiling import TilingConfig
from v2pe_common.tokenizer import load_tokenizer

from .config import BuildConfig
from .manifest import make_manifest
from .plan import Accounting, Budget, PlanError, SamplePlan
from .canvas import CanvasLayout
from .seeding import stable_rng
from .sources.registry import SourceUnavailable, open_source
from .tasks import long_vqa, paste
from .writers.atomic import write_json_atomic
from .writers.base import ShardOutputs, shard_relpath
from .writers.internvl import finalize_internvl

BUILD_FILE = "build.json"
MANIFEST_FILE = "manifest.json"
DONE_DIR = ".v2pe/done"


class BuildError(RuntimeError):
    """The build cannot start or continue; the message says why and what to do."""


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("v2pe", "pillow", "transformers", "tokenizers", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


@dataclass(frozen=True)
class ShardTask:
    index: int
    start: int
    stop: int


def shard_tasks(cfg: BuildConfig) -> list[ShardTask]:
    return [
        ShardTask(i, start, min(start + cfg.shard_size, cfg.num_samples))
        for i, start in enumerate(range(0, cfg.num_samples, cfg.shard_size))
    ]


def build_identity(cfg: BuildConfig, tokenizer_identity: dict) -> dict:
    ident = {"args": cfg.identity(), "tokenizer": tokenizer_identity, "versions": versions(), "format_version": 1}
    blob = json.dumps(ident, sort_keys=True).encode()
    ident["build_id"] = hashlib.sha256(blob).hexdigest()[:16]
    return ident


@dataclass
class SourceSlot:
    """One entry of the mix, opened: its task context, planner and share of the samples."""

    entry: dict
    ctx: long_vqa.TaskContext | None
    status: str  # "available" or why not

    def plan(self, index: int, layout: CanvasLayout) -> SamplePlan:
        if self.entry["mode"] == "paste":
            return paste.plan(self.ctx, index, layout)
        return long_vqa.plan(self.ctx, index)

    def min_tokens(self, layout: CanvasLayout) -> int:
        if self.entry["mode"] == "paste":
            return paste.min_sample_tokens(self.ctx, layout)
        return long_vqa.min_sample_tokens(self.ctx)

    def describe(self) -> dict:
        info = {k: self.entry[k] for k in ("name", "kind", "mode", "share") if k in self.entry}
        info["path"] = self.entry.get("path")
        info["status"] = self.status
        source = self.ctx.source if self.ctx else None
        if source is not None:
            info.update(source.describe() if hasattr(source, "describe") else {"split": source.split})
        return info


class Builder:
    """Holds what every task needs; cheap to fork into worker processes."""

    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg
        tokenizer = load_tokenizer(cfg.tokenizer)
        self.acc = Accounting(tokenizer, get_template(cfg.template), TilingConfig(max_tiles=cfg.max_tiles))
        self.layout = CanvasLayout(grid=cfg.paste_grid)
        self.slots = [self._open(entry) for entry in cfg.sources]
        self.live = [s for s in self.slots if s.ctx is not None]
        if not self.live:
            raise BuildError("no source is available: " + "; ".join(s.status for s in self.slots))
        self.identity = build_identity(cfg, tokenizer.identity)
        self.out = Path(cfg.out)

    def _open(self, entry: dict) -> SourceSlot:
        try:
            source = open_source(entry, self.cfg.split, self.cfg.seed, self.cfg.image_format, strict=self.cfg.strict)
        except SourceUnavailable as exc:
            if self.cfg.strict:
                raise BuildError(f"{exc} (--strict)") from None
            return SourceSlot(entry, None, f"unavailable: {exc}")
        except ValueError as exc:  # strict source errors and bad source configuration
            raise BuildError(str(exc)) from None
        if len(source) == 0:
            if self.cfg.strict:
                raise BuildError(f"source {entry['name']!r} has no valid {self.cfg.split} items (--strict)")
            return SourceSlot(entry, None, f"unavailable: no valid {self.cfg.split} items")
        ctx = long_vqa.TaskContext(task=self.cfg.task, split=self.cfg.split, seed=self.cfg.seed,
                                   budget=Budget(self.cfg.min_length, self.cfg.length), acc=self.acc, source=source,
                                   depth=self.cfg.depth)
        return SourceSlot(entry, ctx, "available")

    def check_feasible(self) -> None:
        for slot in self.live:
            floor = slot.min_tokens(self.layout)
            if self.cfg.length < floor:
                raise BuildError(
                    f"--len {self.cfg.length} is smaller than one image plus its prompt ({floor} tokens, source "
                    f"{slot.entry['name']!r}, {slot.entry['mode']} mode): no sample can be built; use a larger --len"
                )
        span = self.cfg.length - self.cfg.min_length
        if span < 256 and self.cfg.min_length > min(s.min_tokens(self.layout) for s in self.live):
            raise BuildError(
                f"bin [{self.cfg.min_length}, {self.cfg.length}] is narrower than one image tile (256 tokens); "
                "widen it with --min-len"
            )

    def slot_for(self, index: int) -> SourceSlot:
        """Which source sample `index` comes from: drawn by share from a stable seed."""
        if len(self.live) == 1:
            return self.live[0]
        rng = stable_rng(self.cfg.seed, "mix", self.cfg.split, index)
        return rng.choices(self.live, weights=[s.entry["share"] for s in self.live])[0]

    def plan(self, index: int) -> SamplePlan:
        return self.slot_for(index).plan(index, self.layout)

    def source_report(self) -> tuple[list[dict], dict, list[dict]]:
        """(per-source descriptions, rejected-row counts by reason, examples naming the source id)."""
        counts: dict[str, int] = {}
        examples: list[dict] = []
        for slot in self.live:
            for row in getattr(slot.ctx.source, "rejected", []):
                counts[row["reason"]] = counts.get(row["reason"], 0) + 1
                if len(examples) < 100:
                    examples.append(dict(row))
        return [s.describe() for s in self.slots], counts, examples

    def run_task(self, task: ShardTask, progress: Callable[[int, int], None] = lambda s, t: None) -> dict:
        """Write one task's shard(s), in every requested format, atomically; return its completion marker."""
        files, tokens, rejected, examples = [], [], {}, []
        capped = self.cfg.shard_bytes is not None
        parts = 0
        out = ShardOutputs(self.cfg.formats, self.out, self.cfg.split, task.index, 0 if capped else None)
        try:
            for index in range(task.start, task.stop):
                try:
                    plan = self.plan(index)
                except PlanError as exc:
                    raise BuildError(str(exc)) from None
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
        write_json_atomic(self.out / DONE_DIR / f"{task.index:06d}.json", marker)
        return marker


def _task_done(out: Path, task: ShardTask) -> bool:
    marker = out / DONE_DIR / f"{task.index:06d}.json"
    if not marker.exists():
        return False
    try:
        files = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError):
        return False
    return all((out / f["path"]).is_file() and (out / f["path"]).stat().st_size == f["bytes"] for f in files)


def prepare_out(builder: Builder) -> None:
    """Claim the output folder for this build, or refuse without touching anything."""
    out = builder.out
    ident_file = out / BUILD_FILE
    if ident_file.exists():
        try:
            existing = json.loads(ident_file.read_text())
        except ValueError:
            raise BuildError(f"{ident_file} is not valid JSON; choose another --out") from None
        if existing.get("build_id") != builder.identity["build_id"]:
            changed = sorted(
                k for k in set(existing.get("args", {})) | set(builder.identity["args"])
                if existing.get("args", {}).get(k) != builder.identity["args"].get(k)
            )
            what = f"arguments differ: {changed}" if changed else "tokenizer or package versions differ"
            raise BuildError(
                f"{out} holds another build (build_id {existing.get('build_id')}; {what}); "
                "choose an empty --out or rerun with the same arguments"
            )
        return
    if out.exists() and any(out.iterdir()):
        raise BuildError(f"{out} is not empty and holds no v2pe build; choose an empty or new --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(ident_file, builder.identity)


# Worker processes inherit the builder through fork; only task indices cross the process boundary.
_WORKER: dict = {}


def _worker_init(builder: Builder, progress_queue) -> None:
    _WORKER["builder"] = builder
    _WORKER["queue"] = progress_queue


def _worker_run(task: ShardTask) -> dict:
    q = _WORKER["queue"]
    return _WORKER["builder"].run_task(task, progress=lambda s, t: q.put((s, t)))


def _run_parallel(builder: Builder, todo: list[ShardTask], workers: int, progress) -> Iterator[dict]:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    with ctx.Pool(workers, initializer=_worker_init, initargs=(builder, q)) as pool:
        pending = [pool.apply_async(_worker_run, (t,)) for t in todo]
        while pending:
            try:
                while True:
                    progress(*q.get(timeout=0.1))
            except queue.Empty:
                pass
            for res in [p for p in pending if p.ready()]:
                pending.remove(res)
                yield res.get()  # re-raises a worker's exception here
        try:
            while True:
                progress(*q.get_nowait())
        except queue.Empty:
            pass


def build(cfg: BuildConfig, show_progress: bool = True) -> dict:
    """Run (or finish) a build and return its manifest."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    builder = Builder(cfg)
    builder.check_feasible()
    prepare_out(builder)
    tasks = shard_tasks(cfg)
    todo = [t for t in tasks if not _task_done(builder.out, t)]
    from tqdm import tqdm

    remaining = sum(t.stop - t.start for t in todo)
    bar = tqdm(total=remaining, unit="sample", disable=not show_progress, desc=f"build {cfg.task}")
    tokens_seen = 0

    def progress(samples: int, tokens: int) -> None:
        nonlocal tokens_seen
        tokens_seen += tokens
        bar.update(samples)
        bar.set_postfix(tokens=f"{tokens_seen / 1e6:.2f}M", refresh=False)

    if cfg.workers > 1 and len(todo) > 1:
        for _ in _run_parallel(builder, todo, min(cfg.workers, len(todo)), progress):
            pass
    else:
        for t in todo:
            builder.run_task(t, progress)
    bar.close()
    markers = [json.loads((builder.out / DONE_DIR / f"{t.index:06d}.json").read_text()) for t in tasks]
    manifest = make_manifest(builder.identity, cfg, builder.acc, markers, builder.source_report())
    schema.validate(manifest, schema.MANIFEST, where=str(builder.out / MANIFEST_FILE))
    if "internvl" in cfg.formats:  # before the manifest: a manifest present means the build is complete
        finalize_internvl(builder.out, f"{cfg.task}_{cfg.split}", manifest["shards"], max_dynamic_patch=cfg.max_tiles)
    write_json_atomic(builder.out / MANIFEST_FILE, manifest)
    return manifest
