"""`ring_attention`: one entry point over the torch and flash backends."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from .comm import group_rank_world
from .flash import SUPPORTED_DTYPES, flash_available, flash_unavailable_reason, zigzag_ring_attention_flash
from .torch_ring import zigzag_ring_attention_torch
from .zigzag import check_cu_seqlens

__all__ = ["RingConfigError", "ring_attention", "resolve_backend", "validate_ring_inputs"]

BACKENDS = ("auto", "torch", "flash")


class RingConfigError(ValueError):
    """A ring-attention call that cannot work as configured (message says how to fix it)."""


def resolve_backend(backend: str, q: torch.Tensor) -> str:
    """'torch' or 'flash' for this call; raises RingConfigError when `flash` cannot run."""
    if backend not in BACKENDS:
        raise RingConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "flash" if (q.dtype in SUPPORTED_DTYPES and flash_available(q.device)) else "torch"
    if backend == "flash":
        reason = flash_unavailable_reason(q.device)
        if reason is None and q.dtype not in SUPPORTED_DTYPES:
            reason = f"backend='flash' supports {SUPPORTED_DTYPES} only (got {q.dtype}); fp16 breaks ring-flash-attn's backward"
        if reason is not None:
            raise RingConfigError(reason + "; use backend='torch' or 'auto'")
    return backend


def validate_ring_inputs(q, k, v, cu_seqlens, world: int) -> list[int]:
    """Check shapes and the GLOBAL cu_seqlens against this rank's buffers; return cu as ints."""
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise RingConfigError(
            f"expected q (T_local, H, D) and k/v (T_local, H_kv, D), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape != v.shape or k.shape[0] != q.shape[0] or k.shape[2] != q.shape[2]:
        raise RingConfigError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not match")
    if q.shape[1] % k.shape[1]:
        raise RingConfigError(f"query heads {q.shape[1]} must be a multiple of kv heads {k.shape[1]}")
    try:
        cu = check_cu_seqlens(cu_seqlens, world)
    except ValueError as e:
        raise RingConfigError(str(e)) from None
    if int(cu[-1]) != world * q.shape[0]:
        raise RingConfigError(
            f"cu_seqlens[-1] = {int(cu[-1])} but world * T_local = {world} * {q.shape[0]} = {world * q.shape[0]}: "
            "pass the GLOBAL cu_seqlens of the packed sequence (before zigzag sharding)"
        )
    return cu.tolist()


def ring_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: Sequence[int] | torch.Tensor,
    *,
    group: dist.ProcessGroup | None = None,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Causal zigzag ring attention over the ranks of `group`.

    q `(T_local, H, D)`, k/v `(T_local, H_kv, D)` (H a multiple of H_kv): this
    rank's zigzag shard (see `zigzag.zigzag_shard`).  `cu_seqlens`: the
    GLOBAL cu_seqlens of the packed sequence before sharding (every sample a
    multiple of 2W tokens when W > 1), identical on all ranks.  `group=None`:
    the default group, or a single process if torch.distributed is not
    initialised.  `scale` defaults to D**-0.5.  `backend`: "torch" (pure
    PyTorch, CPU/gloo or CUDA/NCCL), "flash" (ring-flash-attn, CUDA bf16), or
    "auto" (flash when it can run, else torch).  Returns `(T_local, H, D)`.
    """
    _, world = group_rank_world(group)
    cu = validate_ring_inputs(q, k, v, cu_seqlens, world)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    if resolve_backend(backend, q) == "flash":
        return zigzag_ring_attention_flash(q, k, v, cu, group=group, scale=scale)
    return zigzag_ring_attention_torch(q, k, v, cu, group=group, scale=scale)
