"""flash-attn backend: ring-flash-attn's zigzag varlen kernel (CUDA, fp16/bf16).

Facts this wrapper relies on (ring-flash-attn 0.1.8, flash-attn 2.x):
* `import ring_flash_attn` imports `flash_attn` (fails on CPU machines) and,
  under transformers 5.x, an adapter that imports the removed
  `is_flash_attn_greater_or_equal_2_10`; we install a stub for that name first.
* `zigzag_ring_flash_attn_varlen_func(q, k, v, cu_seqlens, max_seqlen, ...)`
  takes q `(T_local, H, D)`, k/v `(T_local, H_kv, D)` (GQA is native in
  flash-attn: its gradient buffers follow k's shape, k/v are not repeated) and
  the LOCAL cu_seqlens (global // W, int32 on the device) and local max_seqlen.
* bf16 only in practice: flash-attn has no fp32, and ring-flash-attn's backward
  is known to force bf16 for dq in some versions, so fp16 is rejected here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import torch
import torch.distributed as dist

from .comm import group_rank_world

__all__ = ["flash_available", "flash_unavailable_reason", "zigzag_ring_attention_flash"]

SUPPORTED_DTYPES = (torch.bfloat16,)


def flash_unavailable_reason(device: torch.device | None = None) -> str | None:
    """None when the flash backend can run (on `device`), else why not (one line)."""
    if device is not None and device.type != "cuda":
        return f"backend='flash' needs CUDA tensors, got device {device.type!r}"
    if not torch.cuda.is_available():
        return "backend='flash' needs CUDA, and torch.cuda.is_available() is False"
    missing = [m for m in ("flash_attn", "ring_flash_attn") if importlib.util.find_spec(m) is None]
    if missing:
        return f"backend='flash' needs {' and '.join(missing)} (pip install 'v2pe[gpu]')"
    return None


def flash_available(device: torch.device | None = None) -> bool:
    return flash_unavailable_reason(device) is None


def _import_ring_flash_attn():
    import transformers.modeling_flash_attention_utils as mfu

    if not hasattr(mfu, "is_flash_attn_greater_or_equal_2_10"):
        # removed in transformers 5.x; ring_flash_attn's HF adapter still imports it
        mfu.is_flash_attn_greater_or_equal_2_10 = lambda *a, **k: True
    import ring_flash_attn

    return ring_flash_attn


def zigzag_ring_attention_flash(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: Sequence[int],
    *,
    group: dist.ProcessGroup | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Flash-backend zigzag ring attention; `cu_seqlens` GLOBAL (converted to local here)."""
    _, world = group_rank_world(group)
    if isinstance(cu_seqlens, torch.Tensor):
        cu_seqlens = cu_seqlens.tolist()
    local = [int(c) // world for c in cu_seqlens]
    max_local = max(b - a for a, b in zip(local[:-1], local[1:]))
    cu_local = torch.tensor(local, dtype=torch.int32, device=q.device)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if world == 1:
        from flash_attn import flash_attn_varlen_func

        return flash_attn_varlen_func(
            q, k, v, cu_local, cu_local, max_local, max_local, softmax_scale=scale, causal=True
        )
    rfa = _import_ring_flash_attn()
    return rfa.zigzag_ring_flash_attn_varlen_func(
        q, k, v, cu_local, max_local, softmax_scale=scale, causal=True, group=group
    )
