"""Zigzag sharding of packed sequences for ring attention (pure functions).

Terminology
-----------
* packed sequence: several samples concatenated along the token dim and
  described by `cu_seqlens = [0, len_0, len_0 + len_1, ...]` (GLOBAL, i.e.
  before sharding).
* W: the context-parallel (ring) group size.
* zigzag: EACH packed sample is cut into 2W equal chunks; rank r keeps chunks
  r and 2W-1-r of every sample, in sample order.  The local buffer of rank r is
  `[s0.chunk_r, s0.chunk_(2W-1-r), s1.chunk_r, s1.chunk_(2W-1-r), ...]`, so the
  local cu_seqlens are `cu_seqlens // W` and every rank holds the same amount
  of causal-attention work.
* every sample length must be a multiple of 2W (W > 1).  `pad_to_multiple`
  pads each sample at its end; pad tokens get input id = pad id, label = -100
  and positions continuing max+1, max+2, ... (what V2PE's `pad_packed_inputs`
  does).  For W = 1 sharding is the identity and needs no padding.

Everything works on torch tensors (any device) and numpy arrays with any
trailing dims (embeddings, float64 V2PE positions, labels); the token dim is
`dim`.  Layout arithmetic is numpy int64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "PaddedLayout",
    "check_cu_seqlens",
    "local_cu_seqlens",
    "pad_to_multiple",
    "zigzag_indices",
    "zigzag_shard",
    "zigzag_unshard",
]

ArrayLike = Any  # torch.Tensor | np.ndarray


def _cu_array(cu_seqlens) -> np.ndarray:
    if isinstance(cu_seqlens, torch.Tensor):
        cu = cu_seqlens.detach().cpu().numpy()
    else:
        cu = np.asarray(cu_seqlens)
    if cu.ndim != 1 or cu.size < 2:
        raise ValueError(f"cu_seqlens must be 1-D with at least 2 entries, got shape {cu.shape}")
    if not np.issubdtype(cu.dtype, np.integer):
        raise ValueError(f"cu_seqlens must hold integers, got dtype {cu.dtype}")
    cu = cu.astype(np.int64)
    if cu[0] != 0:
        raise ValueError(f"cu_seqlens must start at 0, got {cu[0]}")
    lens = np.diff(cu)
    if (lens <= 0).any():
        i = int(np.flatnonzero(lens <= 0)[0])
        raise ValueError(f"cu_seqlens must be strictly increasing: sequence {i} has length {lens[i]}")
    return cu


def _check_world(world: int, rank: int | None = None) -> None:
    if not isinstance(world, (int, np.integer)) or world < 1:
        raise ValueError(f"world size must be a positive int, got {world!r}")
    if rank is not None and not (0 <= rank < world):
        raise ValueError(f"rank {rank} is outside [0, {world})")


def check_cu_seqlens(cu_seqlens, world: int) -> np.ndarray:
    """Validate GLOBAL `cu_seqlens` for a zigzag ring of `world` ranks; return int64 numpy.

    Raises ValueError naming the first offending sequence and the fix.
    """
    _check_world(world)
    cu = _cu_array(cu_seqlens)
    if world == 1:
        return cu
    lens = np.diff(cu)
    n = 2 * world
    short = np.flatnonzero(lens < n)
    if short.size:
        i = int(short[0])
        raise ValueError(
            f"sequence {i} has {lens[i]} tokens, too short to cut into 2*world = {n} zigzag chunks; "
            f"pad every sequence to a multiple of {n} with zigzag.pad_to_multiple(cu_seqlens, {n})"
        )
    bad = np.flatnonzero(lens % n)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"sequence {i} has {lens[i]} tokens, not a multiple of 2*world = {n}, so world size {world} "
            f"does not divide it into zigzag chunks; pad with zigzag.pad_to_multiple(cu_seqlens, {n})"
        )
    return cu


def local_cu_seqlens(cu_seqlens, world: int) -> np.ndarray:
    """Local cu_seqlens of every rank's zigzag shard (= global // world)."""
    return check_cu_seqlens(cu_seqlens, world) // world


# ---------------------------------------------------------------- array helpers
def _is_torch(x) -> bool:
    return isinstance(x, torch.Tensor)


def _take(x: ArrayLike, idx: np.ndarray, dim: int) -> ArrayLike:
    if _is_torch(x):
        return x.index_select(dim, torch.from_numpy(idx).to(x.device))
    return np.take(x, idx, axis=dim)


def _cat(xs: Sequence[ArrayLike], dim: int) -> ArrayLike:
    if _is_torch(xs[0]):
        return torch.cat(list(xs), dim=dim)
    return np.concatenate(list(xs), axis=dim)


def _size(x: ArrayLike, dim: int) -> int:
    return x.shape[dim]


def _norm_dim(x: ArrayLike, dim: int) -> int:
    nd = x.ndim
    if not -nd <= dim < nd:
        raise ValueError(f"dim {dim} out of range for an array with {nd} dims")
    return dim % nd


# ---------------------------------------------------------------- padding
@dataclass(frozen=True)
class PaddedLayout:
    """A packed layout where every sequence is padded at its end to a multiple.

    `cu_seqlens`: the padded GLOBAL cu_seqlens; `orig_cu_seqlens`: the input.
    `src_index[j]`: index into the unpadded tokens for padded position j, -1 at
    a pad.  `is_pad`: bool mask of pad positions.  `pad` / `pad_positions` /
    `unpad` apply it to arrays (token dim `dim`).
    """

    cu_seqlens: np.ndarray
    orig_cu_seqlens: np.ndarray
    src_index: np.ndarray
    is_pad: np.ndarray

    @property
    def total(self) -> int:
        return int(self.cu_seqlens[-1])

    @property
    def orig_total(self) -> int:
        return int(self.orig_cu_seqlens[-1])

    def _check(self, x: ArrayLike, dim: int, expect: int, what: str) -> int:
        dim = _norm_dim(x, dim)
        if _size(x, dim) != expect:
            raise ValueError(f"{what}: expected {expect} tokens along dim {dim}, got {_size(x, dim)}")
        return dim

    def pad(self, x: ArrayLike, pad_value, dim: int = 0) -> ArrayLike:
        """Insert pad tokens filled with `pad_value` (pad id for input ids, -100 for labels)."""
        dim = self._check(x, dim, self.orig_total, "PaddedLayout.pad")
        out = _take(x, np.maximum(self.src_index, 0), dim)
        pad_idx = np.flatnonzero(self.is_pad)
        if pad_idx.size:
            if _is_torch(out):
                out.index_fill_(dim, torch.from_numpy(pad_idx).to(out.device), pad_value)
            else:
                out = np.moveaxis(out, dim, 0)
                out[pad_idx] = pad_value
                out = np.moveaxis(out, 0, dim)
        return out

    def pad_positions(self, positions: ArrayLike, dim: int = 0) -> ArrayLike:
        """Pad position ids: the k-th pad of a sequence gets (max position of the sequence) + k.

        Keeps the dtype (int or float V2PE positions); trailing dims are handled elementwise.
        """
        dim = self._check(positions, dim, self.orig_total, "PaddedLayout.pad_positions")
        out = _take(positions, np.maximum(self.src_index, 0), dim)
        torch_in = _is_torch(out)
        moved = torch.movedim(out, dim, 0) if torch_in else np.moveaxis(out, dim, 0)
        src = torch.movedim(positions, dim, 0) if torch_in else np.moveaxis(positions, dim, 0)
        for i in range(len(self.cu_seqlens) - 1):
            a, b = int(self.orig_cu_seqlens[i]), int(self.orig_cu_seqlens[i + 1])
            pa = int(self.cu_seqlens[i]) + (b - a)
            pb = int(self.cu_seqlens[i + 1])
            if pb == pa:
                continue
            if torch_in:
                base = src[a:b].amax(dim=0, keepdim=True)
                steps = torch.arange(1, pb - pa + 1, device=out.device).to(out.dtype)
                moved[pa:pb] = base + steps.reshape((-1,) + (1,) * (moved.ndim - 1))
            else:
                base = src[a:b].max(axis=0, keepdims=True)
                steps = np.arange(1, pb - pa + 1).astype(out.dtype)
                moved[pa:pb] = base + steps.reshape((-1,) + (1,) * (moved.ndim - 1))
        return out

    def unpad(self, x: ArrayLike, dim: int = 0) -> ArrayLike:
        """Drop pad tokens (inverse of `pad`)."""
        dim = self._check(x, dim, self.total, "PaddedLayout.unpad")
        return _take(x, np.flatnonzero(~self.is_pad), dim)


def pad_to_multiple(cu_seqlens, multiple: int) -> PaddedLayout:
    """Pad every sequence of a packed layout at its end to a multiple of `multiple`.

    For a zigzag ring of W ranks use `multiple = 2 * W`.
    """
    if not isinstance(multiple, (int, np.integer)) or multiple < 1:
        raise ValueError(f"multiple must be a positive int, got {multiple!r}")
    cu = _cu_array(cu_seqlens)
    lens = np.diff(cu)
    padded = -(-lens // multiple) * multiple
    new_cu = np.concatenate([[0], np.cumsum(padded)]).astype(np.int64)
    total = int(new_cu[-1])
    # position j inside padded sequence i maps to cu[i] + j when j < lens[i]
    seq_of = np.repeat(np.arange(lens.size), padded)
    offset = np.arange(total) - new_cu[:-1][seq_of]
    is_pad = offset >= lens[seq_of]
    src_index = np.where(is_pad, -1, cu[:-1][seq_of] + offset)
    return PaddedLayout(cu_seqlens=new_cu, orig_cu_seqlens=cu, src_index=src_index, is_pad=is_pad)


# ---------------------------------------------------------------- zigzag
def zigzag_indices(cu_seqlens, rank: int, world: int) -> np.ndarray:
    """Global token indices held by `rank`, in its local order (int64 numpy)."""
    _check_world(world, rank)
    cu = check_cu_seqlens(cu_seqlens, world)
    if world == 1:
        return np.arange(cu[-1], dtype=np.int64)
    chunk = np.diff(cu) // (2 * world)
    first = cu[:-1] + rank * chunk
    second = cu[:-1] + (2 * world - 1 - rank) * chunk
    seg_start = np.stack([first, second], axis=1).reshape(-1)
    seg_len = np.repeat(chunk, 2)
    seg_off = np.cumsum(seg_len) - seg_len  # where each segment begins locally
    return np.arange(seg_len.sum(), dtype=np.int64) + np.repeat(seg_start - seg_off, seg_len)


def zigzag_shard(x: ArrayLike, cu_seqlens, rank: int, world: int, dim: int = 0) -> ArrayLike:
    """The zigzag shard of `x` (token dim `dim`, GLOBAL `cu_seqlens`) kept by `rank`."""
    dim = _norm_dim(x, dim)
    idx = zigzag_indices(cu_seqlens, rank, world)
    total = int(_cu_array(cu_seqlens)[-1])
    if _size(x, dim) != total:
        raise ValueError(f"zigzag_shard: x has {_size(x, dim)} tokens along dim {dim}, cu_seqlens says {total}")
    return _take(x, idx, dim)


def zigzag_unshard(shards: Sequence[ArrayLike], cu_seqlens, world: int, dim: int = 0) -> ArrayLike:
    """Reassemble the full sequence from the `world` zigzag shards (rank order)."""
    _check_world(world)
    if len(shards) != world:
        raise ValueError(f"zigzag_unshard: got {len(shards)} shards for world size {world}")
    cu = check_cu_seqlens(cu_seqlens, world)
    local = int(cu[-1]) // world
    dim = _norm_dim(shards[0], dim)
    for r, s in enumerate(shards):
        if _size(s, dim) != local:
            raise ValueError(f"zigzag_unshard: shard {r} has {_size(s, dim)} tokens along dim {dim}, expected {local}")
    perm = np.concatenate([zigzag_indices(cu, r, world) for r in range(world)])
    return _take(_cat(shards, dim), np.argsort(perm), dim)
