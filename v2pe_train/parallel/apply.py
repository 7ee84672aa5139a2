"""`parallelize(model, mesh, cfg)`: a built single-device model made ready to train, in torchtitan's order.

Ring attention and the vision wrapper (`parallel/context.py`) first, then activation checkpointing, then
FSDP2 (sharded over the mesh's dp_shard x cp dimension) or DDP. Kept apart from model.py so the model stays
plain: this step only decides how attention runs, what is recomputed and where parameters live.
"""

from __future__ import annotations

import torch
from torch import nn

from ..model import materialise
from ..objective import LossModule
from .context import ContextParallel
from .mesh import Meshes, cp_ring, shard_rank


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
    forward hook, and the LossModule calls the model's parts directly, never `model.forward`.
    """
    from torch.distributed.fsdp import fully_shard

    policy = mixed_precision(device)
    for unit in fsdp_units(model):
        fully_shard(unit, mesh=mesh.shard, mp_policy=policy)
    fully_shard(root, mesh=mesh.shard, mp_policy=policy)
    return root


def uses_ring(cfg, mesh: Meshes | None, device: torch.device) -> bool:
    """The language model runs the ring attention: over a cp group, or varlen on one rank (cu_seqlens)."""
    varlen = cfg.parallel.attention == "varlen" or (cfg.parallel.attention == "auto" and device.type == "cuda")
    return cp_ring(mesh).world > 1 or varlen


def attention_summary(cfg, cp: int, ring: bool, device: torch.device, head_dim: int | None = None) -> str:
    """Which attention path the text model runs, e.g. 'sdpa (cp=1, dense mask)' or 'ring torch kernels (cp=2, zigzag)'.

    The kernels come from the ring's own `choose_backend`, for the dtype the attention sees (bf16 under
    CUDA autocast), so this line names what the ring will run; a fallback adds why.
    """
    if not ring:
        return "sdpa (cp=1, dense mask)"
    from ..ring.select import choose_backend, describe, device_capability

    dtype = torch.bfloat16 if device.type == "cuda" and cfg.optim.precision in ("auto", "bf16") else torch.float32
    choice = choose_backend(device, dtype, head_dim, device_capability(device), cfg.parallel.ring_backend)
    kernels = describe(choice)
    if choice.name == "torch_flash" and cp == 1:
        kernels = "torch varlen_attn"
    layout = "zigzag" if cp > 1 else "varlen, one rank"
    note = f"; {choice.reason}" if choice.fallback else ""
    return f"ring {kernels} kernels (cp={cp}, {layout}{note})"


def describe_attention(cfg, model: nn.Module, mesh: Meshes | None, device: torch.device) -> str:
    """`attention_summary` of the run `parallelize` lays out: what the trainer logs once at start."""
    text = model.config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return attention_summary(cfg, cp_ring(mesh).world, uses_ring(cfg, mesh, device), device, head_dim=head_dim)


def parallelize(model: nn.Module, mesh: Meshes | None, cfg, device: torch.device, *, pad_id: int,
                on_meta: bool = False) -> nn.Module:
    """The module the trainer calls (`objective.loss`): `model` inside a LossModule, parallelised over `mesh`.

    `on_meta`: `model` was built on the meta device; FSDP shards it first, then each rank materialises only
    its own shards (model.materialise).
    """
    ring = uses_ring(cfg, mesh, device)
    cp = cp_ring(mesh)
    # With dp > 1 ranks read different packs: a tile-less one still runs the vision tower, or FSDP's
    # gathers / DDP's reductions of the ranks stop matching and the step hangs (a cp group shares its pack).
    encode_empty = mesh is not None and mesh.dp > 1
    context_parallel = None
    if ring:
        context_parallel = ContextParallel(model, cp.group, cp.rank, cp.world, pad_id=pad_id,
                                           backend=cfg.parallel.ring_backend, encode_empty=encode_empty)
    if cfg.parallel.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    root: nn.Module = LossModule(model, context_parallel, encode_empty=encode_empty)
    if mesh is None:
        return root
    if cfg.parallel.data_parallel == "fsdp":
        apply_fsdp(root, model, mesh, device)
        if on_meta:
            materialise(model, device, root=root, seed=cfg.seed, stream=shard_rank(mesh))
        return root
    return nn.parallel.DistributedDataParallel(root, device_ids=[device.index] if device.type == "cuda" else None)
