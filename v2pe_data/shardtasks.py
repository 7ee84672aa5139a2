"""A build's unit of work: the shard task (a range of sample indices written as one shard, or its parts)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShardTask:
    index: int
    start: int
    stop: int


def shard_tasks(num_samples: int, shard_size: int) -> list[ShardTask]:
    """Every shard task of a build of `num_samples` samples, `shard_size` per task."""
    return [ShardTask(i, start, min(start + shard_size, num_samples))
            for i, start in enumerate(range(0, num_samples, shard_size))]


def selected_tasks(num_samples: int, shard_size: int, num_shards: int, shard_index: int) -> list[ShardTask]:
    """The shard tasks one run writes: all of them, or those of its shard index (i % num_shards)."""
    return [t for t in shard_tasks(num_samples, shard_size) if t.index % num_shards == shard_index]
