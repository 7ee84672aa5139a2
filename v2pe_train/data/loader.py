"""The training data stream: shards -> samples -> packs -> batches, with a position that can be saved.

Formats. A build folder can hold its samples as tar shards, parquet files and the InternVL layout;
`LoaderConfig.format` (wds | parquet | internvl, default wds) picks the one read, so no sample is read
twice. Every format gives the same records, bytes, batches, errors and positions (see shards.py).

Order. Each epoch reads the shards in a permutation seeded by (seed, epoch); inside a shard, samples
come in shard order (a tar is a stream: no sample shuffle, so shards are the unit of shuffling). Data
parallelism splits by `dp_rank` / `dp_size`, which the trainer derives from its dp × cp layout — never
the global rank: every rank of a context-parallel group must get the same samples. With at least
`dp_size` shards a rank reads every dp_size-th shard of the epoch's order; with fewer, every rank reads
all shards and keeps every dp_size-th sample (`shards.owns_sample`). Ranks can then see different
numbers of samples in an epoch; a step-based loop over `num_epochs=None` (endless) never runs dry.

Position. `state_dict()` taken between two batches holds the epoch, the shard position in this
epoch's order, the samples consumed in that shard, and the samples read but not yet delivered (the
packing buffer and packs already formed), as (shard, offset, id) references, plus the counters of
`LoaderStats`. `load_state_dict()` on a fresh loader re-reads those few samples (re-decoding them; the
v2pe_rnd strides come from (seed, epoch, sample id)) and continues, so the batches after a resume are
exactly the batches an uninterrupted loader yields next.

Mixtures. With `datasets` instead of `data`, an epoch interleaves several datasets by the reference's
rule (each takes its repeat_time-weighted length, or the share its `weight` gives; without replacement
inside a pass), each dataset streamed lazily; the slot schedule and every dataset's position are part of
the state. See mixture.py.

Bad input (missing or corrupt shard, a shard whose bytes differ from its manifest's sha256, undecodable
image, schema failure, tiles or length mismatch, too long) is counted in `loader.stats` with "shard:key:
message" examples and skipped; `strict=True` raises `LoaderError` on the first instead. A shard is
checked against its manifest before its first sample is read (`verify`, see shards.py), so no sample of
a damaged or edited shard is trained on. With `cp_size` > 1 images are decoded after packing, each rank
only its share of a pack's tiles: before packing every rank checks each image's header (it opens, its
size gives the recorded tiles), so all ranks of a group skip the same samples; pixel data that fails only
in the full decode is found by the one rank decoding it, which counts it as bad_image and keeps the sample
with those tiles zeroed (dropping it there alone would desynchronise the group). With endless epochs, an
epoch that yields no usable sample at all raises `LoaderError` rather than spinning without a batch.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator
from typing import Optional

from pydantic import Field, field_validator, model_validator

from v2pe_common.tiling import TilingConfig
from v2pe_common.tokenizer import TextTokenizer, load_tokenizer

from ..parallel.context import cp_tile_range
from .collate import Batch, collate
from .mixture import Mixture, parse_datasets
from .options import DataConfig, SampleConfig, choice
from .packing import Packer
from .samples import IMAGENET_MEAN, IMAGENET_STD, PIXEL_DTYPES, Sample, SampleProcessor
from .shards import (ShardReadError, ShardRef, content_fingerprint, epoch_order, fingerprint, iter_samples,
                     owns_sample, resolve_sources, skip_to)
from .stats import LoaderError, LoaderStats, SampleError

log = logging.getLogger("v2pe_train.data")
STATE_VERSION = 1


class LoaderConfig(DataConfig, SampleConfig):
    """The recipe's `data` and `sample` sections (each key declared there, once) and the run's layout.

    `LoaderConfig.of(cfg.data, cfg.sample, seed=..., dp_rank=...)` is what the trainer reads; library users
    set any key directly (`LoaderConfig(paths=[...], max_seq_len=4096, position_mode="v2pe_rnd")`).
    """

    buffer_size: int = Field(16, ge=1)  # packing candidates held at most (see packing.py)
    seed: int = Field(0, ge=0)
    shuffle: bool = True  # shard order per epoch; False: the order given
    num_epochs: Optional[int] = Field(1, ge=0)  # None: endless
    dp_rank: int = Field(0, ge=0)
    dp_size: int = Field(1, ge=1)
    # Context parallelism: every rank of a cp group reads the same packs, but decodes and holds only tiles
    # [cp_rank * ceil(T / cp_size), ...) of a pack's T, the share its vision tower encodes (parallel/context.py).
    cp_rank: int = Field(0, ge=0)
    cp_size: int = Field(1, ge=1)
    tiling: Optional[TilingConfig] = None  # None: the tiling recorded in each record's meta
    pixel_dtype: str = "bf16"  # bf16 | fp32 | fp16
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def of(cls, data: DataConfig, sample: SampleConfig, **layout) -> LoaderConfig:
        return cls(**dict(data), **dict(sample), **layout)

    @property
    def sample(self) -> SampleConfig:
        """This config's `sample` section, as SampleProcessor takes it."""
        return SampleConfig(**{k: getattr(self, k) for k in SampleConfig.model_fields})

    @field_validator("datasets")
    @classmethod
    def _specs(cls, value):
        return None if value is None else parse_datasets(value)

    _pixel_dtype = choice("pixel_dtype", sorted(PIXEL_DTYPES))

    @model_validator(mode="after")
    def _layout(self):
        if bool(self.paths) == bool(self.datasets):
            raise ValueError("give paths (sources read once each) or datasets (a mixture), not both or neither")
        if not self.dp_rank < self.dp_size:
            raise ValueError(f"need 0 <= dp_rank < dp_size, got dp_rank={self.dp_rank}, dp_size={self.dp_size}")
        if not self.cp_rank < self.cp_size:
            raise ValueError(f"need 0 <= cp_rank < cp_size, got cp_rank={self.cp_rank}, cp_size={self.cp_size}")
        return self


class PackedLoader:
    """Iterate `Batch`es; `state_dict()` / `load_state_dict()` between batches for exact resume.

    `tokenizer` is the trainer's (a TextTokenizer, a local tokenizer directory, or None for the bundled
    one). One iterator at a time; a new `iter()` continues from the current position.
    """

    def __init__(self, config: LoaderConfig, tokenizer: TextTokenizer | str | None = None):
        self.config = config
        self.tokenizer = tokenizer if isinstance(tokenizer, TextTokenizer) else load_tokenizer(tokenizer)
        self.mixture = None if not config.datasets else Mixture(
            config.datasets, default_format=config.format, seed=config.seed, shuffle=config.shuffle,
            rank=config.dp_rank, world=config.dp_size, verify=config.verify_shards)
        self.shards: list[ShardRef] = self.mixture.shards if self.mixture else resolve_sources(config.paths,
                                                                                              config.format)
        repeated = [f"{r.name} ({r.repeat_time:g})" for r in self.shards if r.repeat_time not in (None, 1.0)]
        if repeated and self.mixture is None:
            log.warning("data: meta entries %s set repeat_time, which `data` does not apply (every sample is read "
                        "once an epoch); list the meta file under `datasets` to mix by it", ", ".join(repeated))
        self.stats = LoaderStats(strict=config.strict)
        self.processor = SampleProcessor(
            self.tokenizer, config.sample, tiling=config.tiling, seed=config.seed, pixel_dtype=config.pixel_dtype,
            image_mean=config.image_mean, image_std=config.image_std, max_seq_len=config.max_seq_len,
            max_tiles_per_pack=config.max_tiles_per_pack, defer_pixels=config.cp_size > 1,
            allow_eval_data=config.allow_eval_data)
        self.packer = Packer(config.max_seq_len, max_tiles_per_pack=config.max_tiles_per_pack, buffer_size=config.buffer_size)
        self._fingerprint = fingerprint(self.shards)
        self._content = content_fingerprint(self.shards)
        # the position
        self.epoch = 0
        self.shard_pos = 0
        self.offset = 0
        self._ready: collections.deque[list[Sample]] = collections.deque()
        self._restore: dict | None = None  # loaded refs not yet re-read
        self._active = False
        self._good = 0  # usable samples read in the current epoch (guards endless epochs over nothing)
        self._broken: set[int] = set()  # shards the resume re-read found broken: counted once, not read on this epoch

    # -- reading ----------------------------------------------------------------------------------
    def _report(self, reason: str, ref: ShardRef, key: str | None, message: str) -> None:
        self.stats.report(reason, ref.name, key, message)

    def _reread(self, refs: list[list]) -> dict[tuple[int, int], Sample]:
        """Re-read buffered samples on resume: one pass per shard, skipping to each saved offset."""
        out: dict[tuple[int, int], Sample] = {}
        by_shard: dict[int, list[tuple[int, str]]] = collections.defaultdict(list)
        for shard, offset, sample_id in refs:
            by_shard[int(shard)].append((int(offset), sample_id))
        for shard, wanted in sorted(by_shard.items()):
            ref = self.shards[shard]
            wanted = sorted(set(wanted))  # a mixture repeating a dataset can buffer one sample twice
            pos = wanted[0][0]
            it = iter_samples(ref, start=pos, verify=self.config.verify_shards)
            for offset, sample_id in wanted:
                try:
                    skip_to(it, offset - pos)
                    ts = next(it, None)
                    pos = offset + 1
                    if ts is None or ts.key != sample_id:
                        raise ShardReadError("corrupt_shard", f"sample {offset} is not {sample_id!r} any more (shard changed?)")
                    out[(shard, offset)] = self.processor.process(ts, shard=ref.index, epoch=self.epoch)
                except SampleError as exc:
                    self._report(exc.reason, ref, sample_id, str(exc))
                except ShardReadError as exc:
                    self._report(exc.reason, ref, sample_id if exc.reason == "corrupt_shard" else None, str(exc))
                    self._broken.add(shard)
                    break
            it.close()
        return out

    def _restore_buffer(self) -> None:
        st, self._restore = self._restore, None
        if st is None:
            return
        samples = self._reread([r for refs in st["ready"] for r in refs] + list(st["pending"]))

        def pick(refs: list[list]) -> list[Sample]:
            return [samples[(int(sh), int(off))] for sh, off, _ in refs if (int(sh), int(off)) in samples]

        for refs in st["ready"]:
            pack = pick(refs)
            if pack:
                self._ready.append(pack)
        self.packer.restore(pick(st["pending"]), st["min_len"], st["min_tiles"])

    def _emit(self) -> Iterator[Batch]:
        while self._ready:
            pack = self._ready.popleft()
            batch = self._collate(pack)
            batch.where = [f"{self.shards[s.shard].name}:{s.id}" for s in pack]  # for errors naming the data
            self.stats.packs += 1
            self.stats.samples += len(pack)
            self.stats.tokens += batch.num_tokens
            yield batch

    def _collate(self, pack: list[Sample]) -> Batch:
        c = self.config
        if c.cp_size == 1:
            return collate(pack)
        start, stop = cp_tile_range(sum(s.num_tiles for s in pack), c.cp_rank, c.cp_size)

        def undecodable(sample: Sample, exc: SampleError) -> None:
            self._report(exc.reason, self.shards[sample.shard], sample.id,
                         f"{exc}; its tiles on cp rank {c.cp_rank}/{c.cp_size} are zeros (the pack was already formed "
                         "on every rank of the group)")

        return collate(pack, pixel_values=self.processor.pack_pixels(pack, start, stop, undecodable),
                       tile_range=(start, stop))

    def _epoch_shards(self) -> tuple[list[ShardRef], bool]:
        c = self.config
        return epoch_order(self.shards, seed=c.seed, epoch=self.epoch, shuffle=c.shuffle, rank=c.dp_rank, world=c.dp_size)

    def _read_shard(self, ref: ShardRef, sample_split: bool) -> Iterator[Batch]:
        c = self.config
        key = None
        try:
            it = iter_samples(ref, start=self.offset, verify=c.verify_shards)
            for ts in it:
                key = ts.key
                self.offset = ts.offset + 1  # consumed, whatever becomes of it
                if sample_split and not owns_sample(ref, ts.offset, c.dp_rank, c.dp_size):
                    continue
                self._take_sample(ref, ts)
                yield from self._emit()
        except ShardReadError as exc:
            self._report(exc.reason, ref, key if exc.reason == "corrupt_shard" else None, str(exc))

    def _take_sample(self, ref: ShardRef, ts) -> None:
        """Process one sample into the packer (or count why not); plain reading and mixtures share it."""
        try:
            sample = self.processor.process(ts, shard=ref.index, epoch=self.epoch)
        except SampleError as exc:
            self._report(exc.reason, ref, ts.key, str(exc))
            return
        self._good += 1
        self._ready.extend(self.packer.add(sample))

    def _read_mixture(self) -> Iterator[Batch]:
        def report(exc: ShardReadError, ref: ShardRef, key: str | None) -> None:
            self._report(exc.reason, ref, key if exc.reason == "corrupt_shard" else None, str(exc))

        for _ in self.mixture.read(self._take_sample, self._broken, report):
            yield from self._emit()

    def __iter__(self) -> Iterator[Batch]:
        if self._active:
            raise RuntimeError("PackedLoader supports one iterator at a time")
        self._active = True
        try:
            self._restore_buffer()
            yield from self._emit()
            c = self.config
            while c.num_epochs is None or self.epoch < c.num_epochs:
                self._good = 0
                if self.mixture is not None:
                    whole_epoch = self.mixture.remaining is None
                    if whole_epoch:
                        self.mixture.start_epoch(self.epoch)
                    yield from self._read_mixture()
                    order = self.shards
                else:
                    order, sample_split = self._epoch_shards()
                    whole_epoch = self.shard_pos == 0 and self.offset == 0
                    while self.shard_pos < len(order):
                        if order[self.shard_pos].index not in self._broken:
                            yield from self._read_shard(order[self.shard_pos], sample_split)
                        self.shard_pos += 1
                        self.offset = 0
                self._ready.extend(self.packer.flush())
                yield from self._emit()
                if c.num_epochs is None and whole_epoch and self._good == 0:
                    # endless epochs over nothing usable would spin forever without a batch
                    raise LoaderError(
                        f"dp rank {c.dp_rank}/{c.dp_size}: a whole epoch over {len(order)} shard(s) gave no usable "
                        f"sample\n{self.stats.summary()}"
                    )
                self.epoch += 1
                self.shard_pos = 0
                self.offset = 0
                self._broken.clear()
                if self.mixture is not None:
                    self.mixture.remaining = None
        finally:
            self._active = False

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        c = self.config
        if self._restore is not None:
            buffer = {k: self._restore[k] for k in ("ready", "pending", "min_len", "min_tiles")}
        else:
            buffer = self.packer.state()
            buffer["ready"] = [[s.ref for s in pack] for pack in self._ready]
        return {
            "version": STATE_VERSION,
            "shards": self._fingerprint,
            "content": self._content,
            "num_shards": len(self.shards),
            "seed": c.seed,
            "shuffle": c.shuffle,
            "dp_rank": c.dp_rank,
            "dp_size": c.dp_size,
            "packing": [c.max_seq_len, c.max_tiles_per_pack, c.buffer_size],
            "epoch": self.epoch,
            "shard_pos": self.shard_pos,
            "offset": self.offset,
            "mixture": self.mixture.state() if self.mixture is not None else None,
            **buffer,
            "stats": self.stats.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        if self._active:
            raise RuntimeError("load_state_dict while iterating")
        c = self.config
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')!r}, expected {STATE_VERSION}")
        mine = {"shards": self._fingerprint, "num_shards": len(self.shards), "seed": c.seed, "shuffle": c.shuffle,
                "dp_rank": c.dp_rank, "dp_size": c.dp_size}
        bad = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if bad:
            raise ValueError(
                "loader state was saved for other data or another split: "
                + ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in bad.items())
            )
        if c.verify_shards and state.get("content", self._content) != self._content:
            # same shard names, other bytes (a rebuild): the saved offsets would point at other samples
            raise ValueError(
                f"loader state was saved for shards whose manifest sha256 differ from these (content "
                f"{state['content']!r}, now {self._content!r}): the data was rebuilt since; resume with the data "
                "it was saved with, or set verify=False to resume anyway"
            )
        if list(state["packing"]) != [c.max_seq_len, c.max_tiles_per_pack, c.buffer_size]:
            log.warning("loader state was saved with packing %s, now %s: packs after the resume differ",
                        state["packing"], [c.max_seq_len, c.max_tiles_per_pack, c.buffer_size])
        if (state.get("mixture") is None) != (self.mixture is None):
            raise ValueError("loader state was saved for " + ("a mixture (datasets)" if self.mixture is None else "plain data")
                             + ", this loader reads " + ("plain data" if self.mixture is None else "a mixture"))
        self.epoch, self.shard_pos, self.offset = int(state["epoch"]), int(state["shard_pos"]), int(state["offset"])
        if self.mixture is not None:
            self.mixture.load_state(state["mixture"], self.epoch)
        self._ready.clear()
        self._broken.clear()
        self.packer.restore([], None, None)
        self._restore = {k: state[k] for k in ("ready", "pending", "min_len", "min_tiles")}
        self.stats.load_state_dict(state.get("stats", {}))
