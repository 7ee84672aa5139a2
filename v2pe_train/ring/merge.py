"""Log-sum-exp merge of partial attention results.

If a query row attended to two disjoint key sets A and B, with normalised
outputs o_A, o_B and log-normalisers lse_A, lse_B, the result over A ∪ B is

    lse = log(exp(lse_A) + exp(lse_B))
    o   = o_A * exp(lse_A - lse) + o_B * exp(lse_B - lse)
        = o_A - sigmoid(lse_B - lse_A) * (o_A - o_B)

The sigmoid form never exponentiates a large number.  An empty accumulator is
out = 0, lse = -inf: merging a block into it copies the block.
"""

from __future__ import annotations

import torch

__all__ = ["update_out_and_lse"]


def update_out_and_lse(
    out: torch.Tensor, lse: torch.Tensor, block_out: torch.Tensor, block_lse: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge `(block_out, block_lse)` into the accumulators `(out, lse)` IN PLACE.

    Shapes: out/block_out `(..., D)`, lse/block_lse `(...)` (= out.shape[:-1]).
    `out`/`lse` must be floating accumulators (fp32 or fp64; they may be views
    into larger buffers); the block side may be any floating dtype and layout.
    Returns `(out, lse)` for convenience.
    """
    if out.shape[:-1] != lse.shape or block_out.shape != out.shape or block_lse.shape != lse.shape:
        raise ValueError(
            f"shape mismatch: out {tuple(out.shape)}, lse {tuple(lse.shape)}, "
            f"block_out {tuple(block_out.shape)}, block_lse {tuple(block_lse.shape)}"
        )
    block_lse = block_lse.to(lse.dtype)
    delta = block_out.to(out.dtype) - out  # the only out-sized temporary
    delta.mul_(torch.sigmoid(block_lse - lse).unsqueeze(-1))  # share of the new block
    out.add_(delta)
    torch.logaddexp(lse, block_lse, out=lse)
    return out, lse
