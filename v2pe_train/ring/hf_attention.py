"""Ring attention as a transformers attention implementation ("v2pe_ring").

Usage (training step; W = cp group size, cu_seqlens = GLOBAL padded layout):

    register_ring_attention()                      # once per process
    use_ring_attention(model)                      # text tower -> v2pe_ring, ViT -> sdpa
    ctx = RingContext(group=cp_group, cu_seqlens=layout.cu_seqlens)
    out = model(inputs_embeds=zigzag_shard(embeds, ...)[None],
                position_ids=zigzag_shard(pos, ...)[None], ring_context=ctx)

How the cp group and cu_seqlens reach the attention
---------------------------------------------------
Primary: the forward kwarg `ring_context=RingContext(...)`.  transformers
passes unknown forward kwargs down to every attention call (verified on
InternVL -> Qwen2), and its gradient-checkpointing layers capture and replay
them, so activation recomputation during backward sees the same context.
Fallback: `with ring_context(group=..., cu_seqlens=...):` (a ContextVar) for
callers that cannot thread kwargs; with activation checkpointing the `with`
block must also enclose `loss.backward()` (recomputation happens there).  A
kwarg wins over the context manager.  Calling the attention with neither
raises: there is no silent fallback to local attention and no env switch.

Masks: "v2pe_ring" is not in transformers' AttentionMaskInterface, so the
model builds no (S x S) mask (attention_mask arrives as None; we ignore it):
causality and sample boundaries come from cu_seqlens.  This also sidesteps
the float-position packed-sequence detection bug.  Batch size must be 1
(packed), dropout 0, no sliding window.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .api import RingConfigError, ring_attention
from .comm import group_rank_world
from .zigzag import check_cu_seqlens

__all__ = [
    "ATTN_NAME",
    "RingContext",
    "current_ring_context",
    "register_ring_attention",
    "ring_context",
    "use_ring_attention",
    "v2pe_ring_attention",
]

ATTN_NAME = "v2pe_ring"


@dataclass(frozen=True)
class RingContext:
    """Where a ring attention call runs: the cp `group`, the GLOBAL `cu_seqlens`, the backend."""

    group: dist.ProcessGroup | None
    cu_seqlens: tuple[int, ...]
    backend: str = "auto"

    def __post_init__(self):
        _, world = group_rank_world(self.group)
        cu = check_cu_seqlens(self.cu_seqlens, world)  # validate once, store python ints
        object.__setattr__(self, "cu_seqlens", tuple(int(c) for c in cu))


_CURRENT: ContextVar[RingContext | None] = ContextVar("v2pe_ring_context", default=None)


def current_ring_context() -> RingContext | None:
    return _CURRENT.get()


@contextlib.contextmanager
def ring_context(
    *, group: dist.ProcessGroup | None, cu_seqlens: Sequence[int] | torch.Tensor, backend: str = "auto"
) -> Iterator[RingContext]:
    """Make a RingContext current for attention calls without a `ring_context` kwarg."""
    if isinstance(cu_seqlens, torch.Tensor):
        cu_seqlens = cu_seqlens.tolist()
    ctx = RingContext(group=group, cu_seqlens=tuple(cu_seqlens), backend=backend)
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


def v2pe_ring_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers attention fn: q `(1, H, S_local, D)`, k/v `(1, H_kv, S_local, D)` -> `((1, S_local, H, D), None)`."""
    ctx = kwargs.get("ring_context") or _CURRENT.get()
    if ctx is None:
        raise RingConfigError(
            f"attention '{ATTN_NAME}' needs a RingContext: pass ring_context=RingContext(group=..., cu_seqlens=...) "
            "to the model forward, or wrap the call in `with ring_context(...)`"
        )
    if getattr(module, "is_causal", True) is False:
        raise RingConfigError(
            f"'{ATTN_NAME}' is causal-only but {type(module).__name__} is bidirectional (a vision tower?): "
            "keep it on sdpa, e.g. use_ring_attention(model)"
        )
    if query.shape[0] != 1:
        raise RingConfigError(f"'{ATTN_NAME}' expects one packed sequence (batch 1), got batch {query.shape[0]}")
    if dropout:
        raise RingConfigError(f"'{ATTN_NAME}' does not support attention dropout (got {dropout})")
    if kwargs.get("sliding_window") is not None:
        raise RingConfigError(f"'{ATTN_NAME}' does not support sliding-window attention")
    out = ring_attention(
        query[0].transpose(0, 1),
        key[0].transpose(0, 1),
        value[0].transpose(0, 1),
        ctx.cu_seqlens,
        group=ctx.group,
        scale=scaling,
        backend=ctx.backend,
    )
    return out.unsqueeze(0), None


def register_ring_attention(name: str = ATTN_NAME) -> str:
    """Register `v2pe_ring_attention` with transformers under `name` (idempotent); return the name."""
    from transformers import AttentionInterface

    AttentionInterface.register(name, v2pe_ring_attention)
    return name


def use_ring_attention(model, name: str = ATTN_NAME, vision: str = "sdpa") -> None:
    """Ring attention for the language model, `vision` (default sdpa) for the vision tower.

    Works for composite models (InternVL: text_config/vision_config) and plain
    decoder-only models.
    """
    register_ring_attention(name)
    cfg = model.config
    if hasattr(cfg, "text_config") and hasattr(cfg, "vision_config"):
        model.set_attn_implementation({"text_config": name, "vision_config": vision})
    else:
        model.set_attn_implementation(name)
