"""FSDP2 over a (dp_replicate, dp_shard, cp) device mesh, applied to a built single-device model.

Kept apart from model.py (as torchtitan does) so the model stays plain: this step only decides where
parameters live. The mesh orders ranks as Topology does (cp innermost), so mesh["cp"] is the same group of
consecutive ranks the ring attention has always used. Parameters are sharded over the flattened
dp_shard x cp dimension: cp ranks hold the same weights, so sharding over them too saves memory, and the
reduce-scatter then averages over every rank, as DDP's all-reduce does. The trainer's loss scale
world / (global weight sum) therefore stays exact under either wrapper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .distributed import Topology

MESH_DIMS = ("dp_replicate", "dp_shard", "cp")
SHARD_DIM = "dp_shard_cp"


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


def build_mesh(topo: Topology, device: torch.device, dp_replicate: int = 1) -> Meshes:
    """The (dp_replicate, dp_shard, cp) DeviceMesh of this run and the flattened dp_shard x cp mesh.

    With dp_replicate > 1 (HSDP) FSDP gets the 2-D (dp_replicate, dp_shard_cp) mesh: sharded within a
    replica group, all-reduced across them.
    """
    from torch.distributed.device_mesh import init_device_mesh

    plan = MeshPlan.for_topology(topo, dp_replicate)
    mesh = init_device_mesh(device.type, plan.shape, mesh_dim_names=MESH_DIMS)
    shard = mesh["dp_shard", "cp"]._flatten(SHARD_DIM)
    if plan.dp_replicate > 1:
        shard = mesh["dp_replicate", SHARD_DIM]
    return Meshes(mesh, shard)


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The modules that get their own FSDP group: each decoder layer and the vision tower.

    Everything else (embeddings, projector, final norm, lm_head) goes into the root group, gathered once
    per forward. Each unit must run on every rank in every forward, or the all-gathers of the ranks differ.
    """
    inner = model.model
    return [*inner.language_model.layers, inner.vision_tower]


def mixed_precision(device: torch.device):
    """bf16 compute and fp32 gradient reduction on CUDA; on CPU none (fp32 throughout, exact tests)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if device.type == "cuda":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def apply_fsdp(root: nn.Module, model: nn.Module, mesh: Meshes, device: torch.device) -> nn.Module:
    """Shard `model`'s units, then `root` (the module whose forward the trainer calls, holding `model`).

    The root must be the module actually called: FSDP2 gathers the root group's parameters in the root's
    forward hook, and the trainer's LossModule calls the model's parts directly, never `model.forward`.
    """
    from torch.distributed.fsdp import fully_shard

    policy = mixed_precision(device)
    for unit in fsdp_units(model):
        fully_shard(unit, mesh=mesh.shard, mp_policy=policy)
    fully_shard(root, mesh=mesh.shard, mp_policy=policy)
    return root


def shard_rank(mesh: Meshes) -> int:
    """This rank's index among the ranks that hold different shards (HSDP replicas share it): the init
    stream of a model materialised after sharding (model.materialise)."""
    return int(mesh.shard.get_coordinate()[-1])


def cp_group(mesh: Meshes):
    """The process group of this rank's context-parallel ring, from the mesh."""
    return mesh.cp.get_group()
