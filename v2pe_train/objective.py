"""The one forward from a packed batch to its weighted CE sum: training, teacher-forced eval and experiments.

`loss(model, batch)` calls the module `parallel.apply.parallelize` returns (a `LossModule`, maybe wrapped
by FSDP2 or DDP), so every wrapper sees the whole forward. Under context parallelism the module cuts the
batch with `parallel.context.cp_shard` once, where it enters the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .loss import shift_labels, token_weights, weighted_ce_sum
from .model import forward
from .parallel.context import ContextParallel, empty_image_term


@dataclass
class LossBatch:
    """One packed row as the loss sees it, labels shifted and weighted over the whole sequence."""

    input_ids: torch.Tensor  # int64 [1, L]
    position_ids: torch.Tensor  # float64 [1, L]
    pixel_values: torch.Tensor | None  # the pack's tiles, or a cp rank's share of them (`total_tiles` set)
    sample_lengths: list[list[int]]
    labels: torch.Tensor  # int64 [1, L], shifted: the label of position t is the token at t+1
    weights: torch.Tensor  # float32 [1, L]
    total_tiles: int | None = None  # the pack's tile count when `pixel_values` hold only a share

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


@dataclass
class LossOutput:
    ce: torch.Tensor  # sum of weight x CE over the tokens this rank holds
    hidden: torch.Tensor | None = None  # [l, H] final hidden states of those tokens, when asked for
    rows: torch.Tensor | None = None  # [l] each hidden row's index in the sequence, -1 for cp padding


class LossModule(nn.Module):
    """Everything between a batch and the weighted CE sum, inside one forward so FSDP / DDP see all of it."""

    def __init__(self, model: nn.Module, context_parallel: ContextParallel | None = None, *,
                 encode_empty: bool = False):
        super().__init__()
        self.model = model
        self.cp = context_parallel
        self.encode_empty = encode_empty  # see parallel.context.empty_image_term

    def forward(self, input_ids, position_ids, pixel_values, sample_lengths: Sequence[Sequence[int]], shifted,
                weights, total_tiles=None, *, return_hidden: bool = False):
        """CE sum; with `return_hidden` (CE sum, hidden [l, H], rows [l]). `total_tiles`: the pack's tile count
        when `pixel_values` hold only this cp rank's share of them."""
        if self.cp is not None:
            cu = [0]
            for n in sample_lengths[0]:
                cu.append(cu[-1] + int(n))
            ce, hidden, shard = self.cp.forward(input_ids, position_ids, pixel_values, cu, shifted, weights,
                                                total_tiles=total_tiles)
            return (ce, hidden, shard.rows(input_ids.shape[1])) if return_hidden else ce
        # before the language model, where a pack with tiles runs the tower: FSDP's gathers go in one order
        extra = empty_image_term(self.model, input_ids.device) if pixel_values is None and self.encode_empty else None
        hidden = forward(self.model, input_ids, position_ids, pixel_values=pixel_values,
                         sample_lengths=sample_lengths, return_hidden=True)
        ce = weighted_ce_sum(hidden, self.model.lm_head, shifted, weights)
        ce = ce if extra is None else ce + extra
        return (ce, hidden[0], torch.arange(input_ids.shape[1])) if return_hidden else ce


def loss(model: nn.Module, batch: LossBatch, *, hidden: bool = False) -> LossOutput:
    """The weighted CE sum of `batch` through `model` (a LossModule, maybe wrapped by FSDP2 or DDP); with
    `hidden`, also the final hidden states of the tokens this rank holds and their sequence indices."""
    out = model(batch.input_ids, batch.position_ids, batch.pixel_values, batch.sample_lengths, batch.labels,
                batch.weights, batch.total_tiles, return_hidden=hidden)
    return LossOutput(*out) if hidden else LossOutput(out)
