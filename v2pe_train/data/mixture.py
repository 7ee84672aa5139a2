"""Train-time mixtures: several datasets interleaved by the reference's rule, streamed, resumable exactly.

A mixture is `LoaderConfig.datasets`, a list of `{path, weight?, repeat_time?, format?}`. `path` is any
loader source (a build folder, a manifest, an InternVL meta JSON, a JSONL, shard paths or a glob). The
unit of mixing is a dataset: one entry of a meta JSON (with that entry's `repeat_time`), or everything
else a `path` names. Its length L is its number of samples (the manifests' counts; otherwise the shard
is counted once by streaming it).

Shares (the reference packer's rule): an epoch takes from each dataset its repeated length r·L, with
r = the entry's `repeat_time` × the spec's `repeat_time` (default 1): int(r) full passes plus a seeded
random fraction (r - int(r)) of one more pass, so r < 1 subsamples and r > 1 repeats. Inside a pass no
sample is taken twice (selection sampling: exactly the quota, each sample with equal chance, decided as
the stream goes by). With `weight` on every spec, the specs' repeated lengths are first rescaled so that
spec i gets weight_i / sum(weight) of the epoch (the epoch keeps the size of every dataset read once);
inside a spec its datasets keep the shares their repeated lengths give.

Order. Each epoch draws the dataset of every slot without replacement from the remaining quotas
(slot j: P(dataset u) = remaining_u / remaining), so any stretch of the epoch holds each dataset in
proportion to its share, up to sampling error, and the epoch holds exactly the quotas. Each dataset is a
lazy stream: a pass reads its shards in a permutation seeded by (seed, epoch, dataset, pass), samples in
shard order, keeping the selected ones; nothing is loaded into memory beyond one open shard per dataset.
All draws are hashes of (seed, epoch, rank, dataset, pass, position), never a generator's running
state, so a position is a handful of integers.

Data parallelism as in the plain loader, per dataset and pass: with at least dp_size shards a rank reads
every dp_size-th shard of the pass's order, with fewer it keeps every dp_size-th sample; quotas and the
schedule are per rank (ranks' samples are disjoint).

Position: the slot, the remaining quotas, and per dataset (pass, shard position, offset, samples seen,
samples chosen in the pass). A dataset whose stream ends before its quota (a broken shard) drops out of
the schedule; what was broken is counted as in the plain loader.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from v2pe_common.formats import internvl

from .shards import FORMATS, ShardReadError, ShardRef, iter_samples, owns_sample, resolve_sources

SPEC_KEYS = ("path", "weight", "repeat_time", "format")
MAX_REPEAT_TIME = internvl.MAX_REPEAT_TIME  # passes an epoch makes over a dataset: a bound, not a hang
MAX_WEIGHT = 1e6
_DRY = object()


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    path: str
    weight: float | None = None
    repeat_time: float = 1.0
    format: str | None = None  # None: the loader's format


def parse_datasets(raw: Sequence) -> list[DatasetSpec]:
    """`datasets` as given (dicts, or DatasetSpecs) -> DatasetSpecs; ValueError naming datasets[i].key."""
    if isinstance(raw, (str, dict)) or not isinstance(raw, Sequence) or not raw:
        raise ValueError("datasets: must be a non-empty list of {path, weight?, repeat_time?, format?}")
    specs = []
    for i, item in enumerate(raw):
        if isinstance(item, DatasetSpec):
            item = dataclasses.asdict(item)
        where = f"datasets[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a mapping {{path, weight?, repeat_time?, format?}}, got {item!r}")
        unknown = sorted(set(item) - set(SPEC_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known: {list(SPEC_KEYS)}")
        if not isinstance(item.get("path"), str) or not item["path"]:
            raise ValueError(f"{where}.path: give a build folder, meta JSON, JSONL, shard path or glob")
        for key, lo, hi in (("weight", 0, MAX_WEIGHT), ("repeat_time", 0, MAX_REPEAT_TIME)):
            v = item.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi
                                  or (key == "weight" and v == 0)):
                span = f"(0, {hi}]" if key == "weight" else f"[0, {hi}]"
                raise ValueError(f"{where}.{key}: must be a finite number in {span}, got {v!r}")
        if item.get("format") is not None and item["format"] not in FORMATS:
            raise ValueError(f"{where}.format: must be one of {list(FORMATS)}, got {item['format']!r}")
        specs.append(DatasetSpec(path=item["path"], weight=None if item.get("weight") is None else float(item["weight"]),
                                 repeat_time=float(item.get("repeat_time") if item.get("repeat_time") is not None else 1.0),
                                 format=item.get("format")))
    weighted = [s.weight is not None for s in specs]
    if any(weighted) and not all(weighted):
        raise ValueError("datasets: give a weight to every dataset or to none "
                         f"(missing on datasets{[i for i, w in enumerate(weighted) if not w]})")
    return specs


@dataclass(frozen=True, slots=True)
class Unit:
    name: str
    shards: tuple[int, ...]  # indices into the mixture's shard list
    repeat: float  # effective repeat_time: r·L samples an epoch


def count_samples(ref: ShardRef) -> int:
    """A shard's samples: its manifest's count, else counted by streaming it once (0 if it cannot be read)."""
    if ref.num_samples is not None:
        return ref.num_samples
    n = 0
    try:
        if ref.format == "internvl":  # lines counted without parsing them: the released JSONLs are large
            return internvl.count_samples(ref.path)
        for _ in iter_samples(ref, verify=False):
            n += 1
    except ShardReadError:
        pass  # reading it again in the epoch reports the fault with its reason
    return n


def resolve_mixture(specs: Sequence[DatasetSpec], default_format: str) -> tuple[list[ShardRef], list[Unit], list[int]]:
    """(every shard, indexed in order; the datasets; samples per shard) for a list of specs."""
    shards: list[ShardRef] = []
    groups: list[tuple[int, str, list[int], float]] = []  # (spec, name, shard indices, repeat)
    for i, spec in enumerate(specs):
        try:
            refs = resolve_sources([spec.path], spec.format or default_format)
        except ValueError as exc:
            raise ValueError(f"datasets[{i}].path: {exc}") from None
        first = len(shards)
        shards.extend(dataclasses.replace(r, index=first + k) for k, r in enumerate(refs))
        indices = list(range(first, len(shards)))
        if all(r.repeat_time is not None for r in refs):  # meta entries: one dataset each
            groups.extend((i, shards[j].name, [j], spec.repeat_time * shards[j].repeat_time) for j in indices)
        else:
            groups.append((i, spec.path, indices, spec.repeat_time))
    counts = [count_samples(r) for r in shards]
    repeated = [rep * sum(counts[j] for j in idx) for _, _, idx, rep in groups]
    if specs[0].weight is not None:
        total = sum(sum(counts[j] for j in idx) for _, _, idx, _ in groups)
        weights = sum(s.weight for s in specs)
        scale = []
        for i, spec in enumerate(specs):
            mine = sum(n for g, n in zip(groups, repeated) if g[0] == i)
            if mine == 0:
                raise ValueError(f"datasets[{i}]: {spec.path!r} has no samples to take (length 0 or repeat_time 0) "
                                 f"but weight {spec.weight}")
            scale.append(spec.weight / weights * total / mine)
        groups = [(i, name, idx, rep * scale[i]) for i, name, idx, rep in groups]
    units = [Unit(name=name, shards=tuple(idx), repeat=rep) for _, name, idx, rep in groups]
    return shards, units, counts


def uniform(*keys) -> float:
    """A uniform draw in [0, 1) fixed by `keys`: the mixture's randomness has no running state to save."""
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


@dataclass(slots=True)
class PassPlan:
    shards: list[ShardRef]  # this rank's shards of the pass, in reading order
    split: bool  # sample granularity: keep every dp_size-th sample
    count: int  # this rank's samples in the pass
    quota: int  # how many of them the epoch takes


class Mixture:
    """The schedule and the per-dataset streams of one rank; `read()` yields (shard, sample) in epoch order."""

    def __init__(self, specs: Sequence[DatasetSpec], *, default_format: str, seed: int, shuffle: bool,
                 rank: int, world: int, verify: bool):
        self.shards, self.units, self.counts = resolve_mixture(specs, default_format)
        self.seed, self.shuffle, self.rank, self.world, self.verify = seed, shuffle, rank, world, verify
        self.epoch = 0
        self.slot = 0
        self.remaining: list[int] | None = None  # None: the epoch has not started
        self.streams: list[list[int]] = []  # per dataset: [pass, shard position, offset, seen, chosen]

    # -- the plan of an epoch ---------------------------------------------------------------------
    def passes(self, u: int) -> int:
        return math.ceil(self.units[u].repeat)

    def pass_plan(self, u: int, p: int) -> PassPlan:
        unit = self.units[u]
        n = len(unit.shards)
        perm = np.random.default_rng([self.seed, self.epoch, u, p]).permutation(n) if self.shuffle else np.arange(n)
        ordered = [self.shards[unit.shards[int(k)]] for k in perm]
        split = n < self.world
        mine = ordered if split else ordered[self.rank :: self.world]
        if split:
            count = sum(len(range((self.rank - r.index) % self.world, self.counts[r.index], self.world)) for r in mine)
        else:
            count = sum(self.counts[r.index] for r in mine)
        whole = p < math.floor(unit.repeat)
        quota = count if whole else math.floor((unit.repeat - math.floor(unit.repeat)) * count)
        return PassPlan(mine, split, count, quota)

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.slot = epoch, 0
        self.remaining = [sum(self.pass_plan(u, p).quota for p in range(self.passes(u))) for u in range(len(self.units))]
        self.streams = [[0, 0, 0, 0, 0] for _ in self.units]

    # -- reading ----------------------------------------------------------------------------------
    def _stream(self, u: int, process: Callable, broken: set[int], report: Callable) -> Iterator:
        st = self.streams[u]  # mutated in place: between two yields it is the dataset's position
        while st[0] < self.passes(u):
            plan = self.pass_plan(u, st[0])
            while st[1] < len(plan.shards) and st[4] < plan.quota:
                ref = plan.shards[st[1]]
                if ref.index not in broken:
                    key = None
                    it = iter_samples(ref, start=st[2], verify=self.verify)
                    try:
                        for ts in it:
                            key = ts.key
                            st[2] = ts.offset + 1
                            if plan.split and not owns_sample(ref, ts.offset, self.rank, self.world):
                                continue
                            # selection sampling: exactly `quota` of `count`, each with the same chance
                            take = uniform(self.seed, self.epoch, self.rank, u, st[0], st[3]) * (plan.count - st[3]) < plan.quota - st[4]
                            st[3] += 1
                            if take:
                                st[4] += 1
                                # processed here, inside the shard's try: a stream breaking mid-sample is
                                # the shard's fault, reported once
                                yield process(ref, ts)
                                if st[4] >= plan.quota:
                                    break
                    except ShardReadError as exc:
                        report(exc, ref, key)
                    finally:
                        it.close()
                st[1] += 1
                st[2] = 0
            st[:] = [st[0] + 1, 0, 0, 0, 0]

    def read(self, process: Callable, broken: set[int], report: Callable[[ShardReadError, ShardRef, str | None], None]) -> Iterator:
        """`process(shard, streamed sample)` per slot of this epoch from the current position. Shards in
        `broken` are passed over; a ShardReadError (from the stream or `process`) goes to `report` and
        ends that shard."""
        open_streams: dict[int, Iterator] = {}
        try:
            while self.remaining is not None and sum(self.remaining) > 0:
                x = uniform(self.seed, self.epoch, self.rank, "slot", self.slot) * sum(self.remaining)
                u = int(np.searchsorted(np.cumsum(self.remaining), x, side="right"))
                stream = open_streams.get(u)
                if stream is None:
                    stream = open_streams[u] = self._stream(u, process, broken, report)
                item = next(stream, _DRY)
                if item is _DRY:  # the stream ran dry before its quota (a broken shard): out of the schedule
                    self.remaining[u] = 0
                    continue
                self.remaining[u] -= 1
                self.slot += 1
                yield item
        finally:
            for stream in open_streams.values():
                stream.close()

    # -- state ------------------------------------------------------------------------------------
    def identity(self) -> list:
        return [[u.name, len(u.shards), round(u.repeat, 12)] for u in self.units]

    def state(self) -> dict:
        return {"datasets": self.identity(), "slot": self.slot, "remaining": self.remaining,
                "streams": [list(s) for s in self.streams]}

    def load_state(self, state: dict, epoch: int) -> None:
        if state["datasets"] != self.identity():
            raise ValueError(f"loader state was saved for another mixture: saved datasets {state['datasets']}, "
                             f"now {self.identity()}")
        self.epoch, self.slot = epoch, int(state["slot"])
        self.remaining = None if state["remaining"] is None else [int(n) for n in state["remaining"]]
        self.streams = [[int(v) for v in s] for s in state["streams"]]
