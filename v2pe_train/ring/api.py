"""`ring_attention`: one entry point over the torch and flash backends."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from .comm import group_rank_world
from .flash import zigzag_ring_attention_flash
from .torch_ring import zigzag_ring_attention_torch
from .select import REQUESTS, BackendChoice, RingConfigError, choose_backend, device_capability, log_choice_once
from .zigzag import check_cu_seqlens

__all__ = ["RingConfigError", "ring_attention", "resolve_backend", "select_kernels", "validate_ring_inputs"]

BACKENDS = REQUESTS


def select_kernels(backend: str, q: torch.Tensor) -> BackendChoice:
    """The kernels for this call (`select.choose_backend` on q's device, dtype and head dim), logged once."""
    choice = choose_backend(q.device, q.dtype, q.shape[-1], device_capability(q.device), backend)
    log_choice_once(choice)
    return choice


def resolve_backend(backend: str, q: torch.Tensor) -> str:
    """'torch' or 'flash' for this call; raises RingConfigError when `flash` cannot run."""
    return "flash" if select_kernels(backend, q).name == "flash" else "torch"


def varlen_attention_torch(q, k, v, cu_seqlens: Sequence[int], scale: float) -> torch.Tensor:
    """One rank, causal within each packed sample: torch's `varlen_attn` (flash kernels, autograd built in)."""
    from torch.nn.attention.varlen import varlen_attn

    cu = torch.tensor(cu_seqlens, dtype=torch.int32, device=q.device)
    longest = max(b - a for a, b in zip(cu_seqlens[:-1], cu_seqlens[1:]))
    # window (-1, 0) is varlen_attn's spelling of causal
    return varlen_attn(q, k, v, cu, cu, longest, longest, scale=scale, window_size=(-1, 0),
                       enable_gqa=q.shape[1] != k.shape[1])


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
    PyTorch kernels: torch flash / mem-efficient SDPA / CPU flash / math, see
    `select.choose_backend`; one rank on torch flash runs `varlen_attn`),
    "flash" (ring-flash-attn, CUDA bf16, optional extra), or "auto" (the
    fastest torch kernel).  Returns `(T_local, H, D)`.
    """
    _, world = group_rank_world(group)
    cu = validate_ring_inputs(q, k, v, cu_seqlens, world)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    choice = select_kernels(backend, q)
    if choice.name == "flash":
        return zigzag_ring_attention_flash(q, k, v, cu, group=group, scale=scale)
    if choice.name == "torch_flash" and world == 1:
        return varlen_attention_torch(q, k, v, cu, scale)
    return zigzag_ring_attention_torch(q, k, v, cu, group=group, scale=scale, kernel=choice.name)
