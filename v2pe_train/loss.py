"""Next-token loss over packed sequences, token-mean or the reference's `square` reduction.

`square`: every supervised token of a packed sample s gets weight 1/sqrt(n_s), n_s = the sample's
supervised tokens, so long answers do not drown short ones; loss = sum(w * CE) / sum(w). The denominator
is taken over the whole global batch (all micro-batches, all data-parallel ranks) so that a step's
gradient does not depend on how the batch is split across ranks or accumulation steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Label of position t is the token at t+1; the last position predicts nothing.

    Packed samples need no special care at their borders: a sample's first token (BOS or the system
    prompt) is never supervised, so the previous sample's last position gets IGNORE_INDEX anyway.
    """
    pad = torch.full_like(labels[:, :1], IGNORE_INDEX)
    return torch.cat([labels[:, 1:], pad], dim=1)


def token_weights(shifted: torch.Tensor, sample_lengths: Sequence[Sequence[int]], reduction: str) -> torch.Tensor:
    """float32 [B, L] weight per (shifted) label: 1 (token) or 1/sqrt(n_s) (square); 0 where ignored."""
    mask = (shifted != IGNORE_INDEX).float()
    if reduction == "token":
        return mask
    if reduction != "square":
        raise ValueError(f"loss_reduction must be 'token' or 'square', got {reduction!r}")
    weights = torch.zeros_like(mask)
    for b, lengths in enumerate(sample_lengths):
        start = 0
        for n in lengths:
            seg = mask[b, start : start + int(n)]
            count = seg.sum()
            if count > 0:
                weights[b, start : start + int(n)] = seg / count.sqrt()
            start += int(n)
    return weights


@dataclass
class LossBatch:
    """One packed row as the loss sees it, labels shifted and weighted over the whole sequence."""

    input_ids: torch.Tensor  # int64 [1, L]
    position_ids: torch.Tensor  # float64 [1, L]
    pixel_values: torch.Tensor | None  # the pack's tiles, or a cp rank's share of them (`total_tiles` set)
    sample_lengths: list[list[int]]
    labels: torch.Tensor  # int64 [1, L], shifted (`shift_labels`)
    weights: torch.Tensor  # float32 [1, L] (`token_weights`)
    total_tiles: int | None = None  # the pack's tile count when `pixel_values` hold only a share

    @property
    def cu_seqlens(self) -> list[int]:
        cu = [0]
        for n in self.sample_lengths[0]:
            cu.append(cu[-1] + int(n))
        return cu

    @property
    def tiles(self) -> int:
        """Tiles of the whole pack."""
        if self.total_tiles is not None:
            return self.total_tiles
        return 0 if self.pixel_values is None else int(self.pixel_values.shape[0])

    def to(self, device: torch.device) -> LossBatch:
        pixels = None if self.pixel_values is None else self.pixel_values.to(device)
        return LossBatch(self.input_ids.to(device), self.position_ids.to(device), pixels, self.sample_lengths,
                         self.labels.to(device), self.weights.to(device), self.total_tiles)


def loss_batch(batch, reduction: str) -> LossBatch:
    """A loader batch (data.collate.Batch) with its shifted labels and `reduction`'s token weights."""
    lengths = [batch.sample_lengths.tolist()]
    shifted = shift_labels(batch.labels)
    sliced = batch.tile_range is not None  # this cp rank's share of the pack's tiles, maybe none
    pixels = batch.pixel_values if sliced or batch.pixel_values.numel() else None
    return LossBatch(batch.input_ids, batch.position_ids, pixels, lengths, shifted,
                     token_weights(shifted, lengths, reduction), batch.total_tiles if sliced else None)


def _chunk_ce(hidden: torch.Tensor, lm_head: torch.nn.Module, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    logits = lm_head(hidden).float()
    ce = F.cross_entropy(logits, targets.clamp_min(0), reduction="none")
    return (ce * weights).sum()


def weighted_ce_sum(hidden: torch.Tensor, lm_head: torch.nn.Module, shifted: torch.Tensor, weights: torch.Tensor,
                    chunk: int = 4096) -> torch.Tensor:
    """sum(w * CE) from final hidden states, projecting to the vocabulary a chunk at a time.

    Each chunk is recomputed in backward, so logits never exist for the whole sequence at once
    (34K tokens x 92K vocabulary would be 12 GB in float32).
    """
    h = hidden.reshape(-1, hidden.shape[-1])
    t = shifted.reshape(-1)
    w = weights.reshape(-1).to(h.device)
    total = None
    for s in range(0, h.shape[0], chunk):
        sl = slice(s, s + chunk)
        # A rank holding no supervised token still runs one zero-weight chunk: its backward must reach
        # every parameter (DDP waits for them) and the attention (ring backward is collective).
        if not torch.any(w[sl] > 0) and (total is not None or s + chunk < h.shape[0]):
            continue
        total = 0 if total is None else total
        if torch.is_grad_enabled() and h.requires_grad:
            total = total + checkpoint(_chunk_ce, h[sl], lm_head, t[sl], w[sl], use_reentrant=False)
        else:
            total = total + _chunk_ce(h[sl], lm_head, t[sl], w[sl])
    return total
