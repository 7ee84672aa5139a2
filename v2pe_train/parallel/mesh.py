"""The process layout of a run: one Topology and one (dp_replicate, dp_shard, cp) DeviceMesh for every mode.

world = dp x cp, and consecutive blocks of cp ranks form a context-parallel group (cp innermost), so
mesh["cp"] is the group of consecutive ranks the ring attention runs over, under FSDP2 and DDP alike.
Parameters are sharded (FSDP2) over the flattened dp_shard x cp dimension: cp ranks hold the same weights,
so sharding over them too saves memory, and the reduce-scatter then averages over every rank, as DDP's
all-reduce does. The trainer's loss scale world / (global weight sum) therefore stays exact under either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

MESH_DIMS = ("dp_replicate", "dp_shard", "cp")
SHARD_DIM = "dp_shard_cp"


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
        rank=int(os.environ.get("RANK", "0")),
        world=int(os.environ.get("WORLD_SIZE", "1")),
        cp=cp,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
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


def all_reduce_sum(value: torch.Tensor, group=None) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size(group) > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM, group=group)
    return value


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@dataclass(frozen=True)
class CpRing:
    """A context-parallel group as the forward sees it: the process group (None for one rank), this rank's
    index in it and its size."""

    group: object = None
    rank: int = 0
    world: int = 1


@dataclass(frozen=True)
class MeshPlan:
    """Sizes of the mesh dimensions for a topology (dp_replicate x dp_shard x cp = world)."""

    dp_replicate: int
    dp_shard: int
    cp: int

    @classmethod
    def for_topology(cls, topo: Topology, dp_replicate: int = 1) -> MeshPlan:
        if dp_replicate < 1 or topo.dp % dp_replicate:
            raise ValueError(f"dp_replicate={dp_replicate} must divide the data-parallel degree {topo.dp} "
                             f"(world {topo.world} / cp {topo.cp})")
        return cls(dp_replicate, topo.dp // dp_replicate, topo.cp)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.dp_replicate, self.dp_shard, self.cp


@dataclass(frozen=True)
class Meshes:
    """The 3-D mesh of the run, and the mesh FSDP shards over (kept, not re-sliced: torch deprecates that)."""

    world: object
    shard: object

    @property
    def cp(self):
        return self.world["cp"]

    @property
    def dp(self) -> int:
        return self.world.size() // self.cp.size()


def build_mesh(topo: Topology, device: torch.device, dp_replicate: int = 1) -> Meshes | None:
    """The (dp_replicate, dp_shard, cp) DeviceMesh of this run and the flattened dp_shard x cp mesh; None for one
    process (no process group: nothing to lay out).

    With dp_replicate > 1 (HSDP) FSDP gets the 2-D (dp_replicate, dp_shard_cp) mesh: sharded within a
    replica group, all-reduced across them.
    """
    from torch.distributed.device_mesh import init_device_mesh

    if topo.world == 1:
        return None
    plan = MeshPlan.for_topology(topo, dp_replicate)
    mesh = init_device_mesh(device.type, plan.shape, mesh_dim_names=MESH_DIMS)
    shard = mesh["dp_shard", "cp"]._flatten(SHARD_DIM)
    if plan.dp_replicate > 1:
        shard = mesh["dp_replicate", SHARD_DIM]
    return Meshes(mesh, shard)


def shard_rank(mesh: Meshes) -> int:
    """This rank's index among the ranks that hold different shards (HSDP replicas share it): the init
    stream of a model materialised after sharding (model.materialise)."""
    return int(mesh.shard.get_coordinate()[-1])


def cp_ring(mesh: Meshes | None) -> CpRing:
    """This rank's context-parallel ring, from the mesh (one rank alone without one)."""
    if mesh is None:
        return CpRing()
    return CpRing(mesh.cp.get_group(), mesh.cp.get_local_rank(), mesh.cp.size())
