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

from .loss import LossBatch, weighted_ce_sum
from .model import forward
from .parallel.context import ContextParallel, empty_image_term


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
            batch = LossBatch(input_ids, position_ids, pixel_values, sample_lengths, shifted, weights, total_tiles)
            ce, hidden, shard = self.cp.forward(batch)
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
