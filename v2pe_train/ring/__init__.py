"""Context-parallel (zigzag ring) attention for long packed multimodal sequences.

Public API:
* `ring_attention(q, k, v, cu_seqlens, *, group, scale, backend)` -- causal
  zigzag ring attention, GLOBAL cu_seqlens, torch or flash backend.
* `zigzag.*` -- `pad_to_multiple`, `zigzag_shard`, `zigzag_unshard`,
  `local_cu_seqlens`: shard tokens / embeddings / positions / labels.
* `hf_attention.*` -- the transformers attention "v2pe_ring" and `RingContext`.
* `update_out_and_lse` -- the fp32 LSE merge (CPU-testable).

Nothing here is imported by the single-device model code; the trainer wraps it.
"""

from .api import RingConfigError, ring_attention
from .hf_attention import RingContext, register_ring_attention, ring_context, use_ring_attention
from .merge import update_out_and_lse
from .zigzag import (
    PaddedLayout,
    check_cu_seqlens,
    local_cu_seqlens,
    pad_to_multiple,
    zigzag_indices,
    zigzag_shard,
    zigzag_unshard,
)

__all__ = [
    "PaddedLayout",
    "RingConfigError",
    "RingContext",
    "check_cu_seqlens",
    "local_cu_seqlens",
    "pad_to_multiple",
    "register_ring_attention",
    "ring_attention",
    "ring_context",
    "update_out_and_lse",
    "use_ring_attention",
    "zigzag_indices",
    "zigzag_shard",
    "zigzag_unshard",
]
