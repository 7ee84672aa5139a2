"""Single-device reference attention (what a ring must reproduce); used by tests and benches."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["varlen_causal_attention"]


def varlen_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: Sequence[int], scale: float | None = None
) -> torch.Tensor:
    """Block-diagonal causal attention with one SDPA call per sample (differentiable).

    q `(T, H, D)`, k/v `(T, H_kv, D)`, `cu_seqlens` over the same T tokens.
    """
    cu = [int(c) for c in cu_seqlens]
    outs = []
    for a, b in zip(cu[:-1], cu[1:]):
        o = F.scaled_dot_product_attention(
            q[a:b].transpose(0, 1),
            k[a:b].transpose(0, 1),
            v[a:b].transpose(0, 1),
            is_causal=True,
            scale=scale,
            enable_gqa=q.shape[1] != k.shape[1],
        )
        outs.append(o.transpose(0, 1))
    return torch.cat(outs, 0)
