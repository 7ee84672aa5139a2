"""Process topology: world = dp x cp, consecutive blocks of cp ranks form a context-parallel group."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Topology:
    rank: int
    world: int
    cp: int
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.cp < 1:
            raise ValueError(f"cp must be >= 1, got {self.cp}")
        if self.world % self.cp:
            raise ValueError(f"world size {self.world} is not divisible by cp={self.cp} (world size = dp x cp)")

    @property
    def dp(self) -> int:
        return self.world // self.cp

    @property
    def dp_rank(self) -> int:
        return self.rank // self.cp

    @property
    def cp_rank(self) -> int:
        return self.rank % self.cp


def topology_from_env(cp: int = 1) -> Topology:
    return Topology(
        rank=int(os.environ.get("RANK", 0)),
        world=int(os.environ.get("WORLD_SIZE", 1)),
        cp=cp,
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(topo: Topology) -> torch.device:
    """Start the default process group when launched by torchrun; return this rank's device."""
    use_cuda = torch.cuda.is_available()
    device = torch.device("cuda", topo.local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if topo.world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return device


def groups(topo: Topology):
    """(cp group of this rank, dp group of this rank); None for trivial groups. Every rank creates all groups."""
    if topo.world == 1:
        return None, None
    cp_group = dp_group = None
    for start in range(0, topo.world, topo.cp):
        ranks = list(range(start, start + topo.cp))
        g = dist.new_group(ranks)
        if topo.rank in ranks:
            cp_group = g
    for offset in range(topo.cp):
        ranks = list(range(offset, topo.world, topo.cp))
        g = dist.new_group(ranks)
        if topo.rank in ranks:
            dp_group = g
    return cp_group, dp_group


def all_reduce_sum(value: torch.Tensor, group=None) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size(group) > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM, group=group)
    return value


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
