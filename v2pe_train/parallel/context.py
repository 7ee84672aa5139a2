"""Context parallelism around the single-device model: one packed sequence split zigzag over a cp ring.

The model code never imports torch.distributed; this layer wraps it where a batch enters the model:
  1. `cp_shard`: labels are shifted on the whole sequence (by the caller), every packed sample is padded to
     a multiple of 2W (pad id, ignored label, positions continuing max+1, max+2, ...), then the token ids,
     float64 V2PE positions, labels and loss weights are cut with one zigzag index set, and the rank's
     share of the pack's tiles is `cp_tile_range` (the loader decodes only that share);
  2. `sharded_image_features`: the vision tower encodes this rank's tiles and the features are
     all-gathered with a gradient that sums every rank's contribution, so no rank encodes all tiles of a
     1M-token sample;
  3. the language model runs with the `v2pe_ring` attention (transformers attention interface), which
     takes the global cu_seqlens and the cp group, and the weighted CE is summed over the local tokens.
The caller normalises by the global weight sum, so cp = 1 and cp = W give the same loss and gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
import torch.distributed as dist
from torch import nn

from ..loss import IGNORE_INDEX, LossBatch, weighted_ce_sum
from ..ring import PaddedLayout, RingContext, pad_to_multiple, use_ring_attention, zigzag_indices
from .mesh import CpRing


def cp_tile_range(total: int, rank: int, world: int) -> tuple[int, int]:
    """Tiles [start, stop) of a pack's `total` that cp rank `rank` of `world` encodes: ceil(total / world) each,
    the last ranks fewer or none (sharded_image_features pads them with zero tiles)."""
    per = -(-total // world)
    return min(rank * per, total), min((rank + 1) * per, total)


class _GatherTiles(torch.autograd.Function):
    """all_gather along dim 0 (equal sizes); backward sums the gradient over ranks and keeps this rank's rows.

    Written out rather than torch.distributed.nn's all_gather, whose backward needs reduce_scatter or
    all_to_all; an all_reduce works on every backend, gloo included.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, group, rank: int, world: int) -> torch.Tensor:
        ctx.group, ctx.rank, ctx.world, ctx.rows = group, rank, world, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows], None, None, None


def image_features(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """[T, 256, H] projected features of T tiles (the single-device computation)."""
    cfg = model.config
    out = model.model.get_image_features(pixel_values=pixel_values, vision_feature_layer=cfg.vision_feature_layer,
                                         vision_feature_select_strategy=cfg.vision_feature_select_strategy)
    return out.pooler_output


def empty_image_term(model: nn.Module, device: torch.device) -> torch.Tensor:
    """0 x the features of one zero tile: a tile-less micro-batch still runs the vision tower and projector.

    Under FSDP every rank's forward must all-gather the vision tower's unit, and its backward reduce-scatter
    it; under DDP every parameter must get a gradient, or the ranks' reductions stop matching and hang. The
    term adds exactly zero to the loss and to every gradient.
    """
    size = model.config.vision_config.image_size
    size = size if isinstance(size, (list, tuple)) else (size, size)
    zero = torch.zeros((1, 3, *size), dtype=model.dtype, device=device)
    return image_features(model, zero).sum() * 0


def sharded_image_features(model: nn.Module, pixel_values: torch.Tensor, group, rank: int, world: int,
                           total: int | None = None) -> torch.Tensor:
    """The vision wrapper: each rank encodes ceil(T/W) tiles (zero tiles pad the last rank); the features are
    gathered.

    `total` = T says `pixel_values` already hold only this rank's tiles (the loader's cp share,
    `cp_tile_range`); without it they hold all T tiles and each rank slices its own.
    """
    if world == 1:
        return image_features(model, pixel_values.to(dtype=model.dtype))
    if total is None:
        total = pixel_values.shape[0]
        start, stop = cp_tile_range(total, rank, world)
        mine = pixel_values[start:stop]
    else:
        start, stop = cp_tile_range(total, rank, world)
        mine = pixel_values
        if mine.shape[0] != stop - start:
            raise ValueError(f"cp rank {rank}/{world}: {mine.shape[0]} tiles given, its share of {total} is "
                             f"tiles [{start}, {stop})")
    per_rank = -(-total // world)
    if mine.shape[0] < per_rank:
        mine = torch.cat([mine, mine.new_zeros((per_rank - mine.shape[0], *mine.shape[1:]))])
    feats = image_features(model, mine.to(dtype=model.dtype))
    return _GatherTiles.apply(feats, group, rank, world)[:total]


@dataclass
class CpShard:
    """A cp rank's cut of one packed sequence: every per-token tensor taken with the one zigzag `index`."""

    layout: PaddedLayout  # each sample padded to a multiple of 2W
    index: torch.Tensor  # int64 [l]: the rows of the padded sequence this rank holds
    padded_ids: torch.Tensor  # int64 [Lp]: the whole padded sequence (image-token ordinals are global)
    positions: torch.Tensor  # float64 [l]
    labels: torch.Tensor  # int64 [l], shifted
    weights: torch.Tensor  # float32 [l]
    tiles: tuple[int, int]  # this rank's share [start, stop) of the pack's tiles

    @property
    def input_ids(self) -> torch.Tensor:
        return self.padded_ids[self.index.to(self.padded_ids.device)]

    def rows(self, length: int) -> torch.Tensor:
        """The sequence index of each local row (-1 for padding)."""
        return self.layout.pad(torch.arange(length), -1)[self.index]


def cp_shard(batch: LossBatch, ring: CpRing, *, pad_id: int) -> CpShard:
    """Pad each sample of the [1, L] row to a multiple of 2W and take `ring.rank`'s zigzag shard of every
    per-token tensor (labels already shifted over the whole sequence), and its share of the pack's tiles."""
    layout = pad_to_multiple(batch.cu_seqlens, 2 * ring.world)
    idx = torch.from_numpy(zigzag_indices(layout.cu_seqlens, ring.rank, ring.world))
    pos = layout.pad_positions(batch.position_ids[0])
    lab = layout.pad(batch.labels[0], IGNORE_INDEX)
    w = layout.pad(batch.weights[0], 0.0)
    return CpShard(layout, idx, layout.pad(batch.input_ids[0], pad_id), pos[idx], lab[idx], w[idx],
                   cp_tile_range(batch.tiles, ring.rank, ring.world))


def _lengths(cu_seqlens: Sequence[int]) -> list[list[int]]:
    return [[int(b) - int(a) for a, b in pairwise(cu_seqlens)]]


class ContextParallel:
    """Computes a cp rank's weighted CE sum for one packed sequence. Construct on every rank of the ring.

    With world = 1 (no group) it is the varlen path of a single device: samples of a pack attend within
    themselves through cu_seqlens instead of an L x L mask, which is what long packs on a GPU want.
    """

    def __init__(self, model: nn.Module, group, rank: int, world: int, *, pad_id: int, backend: str = "auto",
                 encode_empty: bool = False):
        self.model = model
        self.ring = CpRing(group, rank, world)
        self.pad_id = pad_id
        self.backend = backend
        # a tile-less pack still runs the vision tower (empty_image_term): FSDP / DDP over ranks need it
        self.encode_empty = encode_empty
        use_ring_attention(model)

    def shard(self, cu_seqlens: Sequence[int], input_ids: torch.Tensor, position_ids: torch.Tensor,
              shifted: torch.Tensor, weights: torch.Tensor):
        """(layout, padded ids, index, positions, labels, weights) of this rank: `cp_shard` as a tuple."""
        batch = LossBatch(input_ids, position_ids, None, _lengths(cu_seqlens), shifted, weights)
        s = cp_shard(batch, self.ring, pad_id=self.pad_id)
        return s.layout, s.padded_ids, s.index, s.positions, s.labels, s.weights

    def __call__(self, input_ids, position_ids, pixel_values, cu_seqlens, shifted, weights, *,
                 total_tiles: int | None = None) -> torch.Tensor:
        """`total_tiles` = T of the pack says `pixel_values` hold only this rank's share of its tiles (possibly
        none, when T < W); without it they hold all T."""
        batch = LossBatch(input_ids, position_ids, pixel_values, _lengths(cu_seqlens), shifted, weights, total_tiles)
        return self.forward(batch)[0]

    def forward(self, batch: LossBatch) -> tuple[torch.Tensor, torch.Tensor, CpShard]:
        """(CE sum over this rank's tokens, their final hidden states [l, H], the shard they come from)."""
        model, ring = self.model, self.ring
        shard = cp_shard(batch, ring, pad_id=self.pad_id)
        device = batch.input_ids.device
        idx = shard.index.to(device)
        ids = shard.padded_ids
        embeds = model.get_input_embeddings()(ids[idx])
        extra = None
        if batch.tiles:
            feats = sharded_image_features(model, batch.pixel_values, ring.group, ring.rank, ring.world,
                                           batch.total_tiles)
            feats = feats.reshape(-1, feats.shape[-1]).to(embeds.dtype)
            is_img = ids == model.config.image_token_id
            if int(is_img.sum()) != feats.shape[0]:
                raise ValueError(f"{int(is_img.sum())} image tokens but {feats.shape[0]} image features")
            ordinal = torch.cumsum(is_img.long(), 0) - 1  # k-th image token of the sequence <- feature row k
            local_img = is_img[idx]
            embeds = embeds.masked_scatter(local_img[:, None], feats[ordinal[idx][local_img]])
        elif self.encode_empty:
            extra = empty_image_term(model, device)
        ctx = RingContext(group=ring.group, cu_seqlens=tuple(int(c) for c in shard.layout.cu_seqlens),
                          backend=self.backend)
        out = model.model.language_model(inputs_embeds=embeds[None], position_ids=shard.positions[None].to(device),
                                         use_cache=False, ring_context=ctx)
        hidden = out.last_hidden_state
        ce = weighted_ce_sum(hidden, model.lm_head, shard.labels[None].to(device), shard.weights[None].to(device))
        return (ce if extra is None else ce + extra), hidden[0], shard
