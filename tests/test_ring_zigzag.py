"""Zigzag sharding and padding of packed sequences (pure, no processes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from v2pe_train.ring import (
    check_cu_seqlens,
    local_cu_seqlens,
    pad_to_multiple,
    zigzag_indices,
    zigzag_shard,
    zigzag_unshard,
)


def _cu(lens):
    return np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)


def test_layout_of_one_sample_matches_the_zigzag_rule():
    # 16 tokens, W=2 -> chunks of 4: rank 0 keeps chunks 0 and 3, rank 1 chunks 1 and 2
    assert zigzag_indices([0, 16], 0, 2).tolist() == [0, 1, 2, 3, 12, 13, 14, 15]
    assert zigzag_indices([0, 16], 1, 2).tolist() == [4, 5, 6, 7, 8, 9, 10, 11]


def test_each_packed_sample_is_split_on_its_own():
    cu = [0, 4, 12]  # W=2: sample 0 chunks of 1, sample 1 chunks of 2
    assert zigzag_indices(cu, 0, 2).tolist() == [0, 3, 4, 5, 10, 11]
    assert zigzag_indices(cu, 1, 2).tolist() == [1, 2, 6, 7, 8, 9]
    assert local_cu_seqlens(cu, 2).tolist() == [0, 2, 6]


def test_pad_fills_ids_labels_and_continues_positions():
    layout = pad_to_multiple([0, 3, 8], 4)
    assert layout.cu_seqlens.tolist() == [0, 4, 12]
    ids = torch.tensor([5, 6, 7, 8, 9, 10, 11, 12])
    assert layout.pad(ids, 1).tolist() == [5, 6, 7, 1, 8, 9, 10, 11, 12, 1, 1, 1]
    assert layout.pad(ids.numpy(), -100).tolist() == [5, 6, 7, -100, 8, 9, 10, 11, 12, -100, -100, -100]
    pos = np.array([0.0, 0.25, 0.5, 0.0, 1.0, 1.5, 2.0, 9.0])  # V2PE-like fractional positions, float64
    padded = layout.pad_positions(pos)
    assert padded.dtype == np.float64
    assert padded.tolist() == [0.0, 0.25, 0.5, 1.5, 0.0, 1.0, 1.5, 2.0, 9.0, 10.0, 11.0, 12.0]
    assert layout.pad_positions(torch.from_numpy(pos)).tolist() == padded.tolist()
    np.testing.assert_array_equal(layout.unpad(padded), pos)


@settings(max_examples=60, deadline=None)
@given(
    lens=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    world=st.sampled_from([1, 2, 3, 4]),
    trailing=st.lists(st.integers(1, 3), max_size=2),
    use_torch=st.booleans(),
    dim_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_shard_then_unshard_is_exact(lens, world, trailing, use_torch, dim_last, seed):
    layout = pad_to_multiple(_cu(lens), 2 * world)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((layout.orig_total, *trailing))  # float64, e.g. positions / embeddings
    pos = np.cumsum(rng.uniform(0.01, 1.0, layout.orig_total))
    if use_torch:
        x, pos = torch.from_numpy(x), torch.from_numpy(pos)
    dim = 0
    if dim_last:
        x = np.moveaxis(x, 0, -1) if not use_torch else torch.movedim(x, 0, -1)
        dim = x.ndim - 1
    xp = layout.pad(x, 0.0, dim=dim)
    shards = [zigzag_shard(xp, layout.cu_seqlens, r, world, dim=dim) for r in range(world)]
    assert all(s.shape[dim] == layout.total // world for s in shards)
    back = zigzag_unshard(shards, layout.cu_seqlens, world, dim=dim)
    assert type(back) is type(x)
    assert (np.asarray(back) == np.asarray(xp)).all()
    assert (np.asarray(layout.unpad(back, dim=dim)) == np.asarray(x)).all()
    # positions: padded ones keep increasing, shards regather exactly
    pp = layout.pad_positions(pos)
    back_pos = zigzag_unshard([zigzag_shard(pp, layout.cu_seqlens, r, world) for r in range(world)], layout.cu_seqlens, world)
    assert (np.asarray(back_pos) == np.asarray(pp)).all()
    for a, b in zip(layout.cu_seqlens[:-1], layout.cu_seqlens[1:]):
        assert (np.diff(np.asarray(pp[a:b])) > 0).all()
    # every token is held by exactly one rank
    held = np.sort(np.concatenate([zigzag_indices(layout.cu_seqlens, r, world) for r in range(world)]))
    assert (held == np.arange(layout.total)).all()


def test_labels_and_int_dtypes_survive():
    cu = [0, 8, 16]
    labels = torch.arange(16) * 3 - 7
    shards = [zigzag_shard(labels, cu, r, 2) for r in range(2)]
    assert shards[0].dtype == torch.int64
    assert torch.equal(zigzag_unshard(shards, cu, 2), labels)


# ---------------------------------------------------------------- validation
def test_sequence_too_short_for_2w_chunks():
    with pytest.raises(ValueError, match=r"sequence 1 has 3 tokens, too short .* 2\*world = 4"):
        zigzag_shard(torch.zeros(11), [0, 8, 11], 0, 2)


def test_world_not_dividing_a_sequence():
    with pytest.raises(ValueError, match=r"sequence 0 has 12 tokens, not a multiple of 2\*world = 8.*pad_to_multiple"):
        check_cu_seqlens([0, 12], 4)


def test_bad_rank_world_and_sizes():
    with pytest.raises(ValueError, match="outside"):
        zigzag_shard(torch.zeros(8), [0, 8], 2, 2)
    with pytest.raises(ValueError, match="positive int"):
        zigzag_indices([0, 8], 0, 0)
    with pytest.raises(ValueError, match="cu_seqlens says 8"):
        zigzag_shard(torch.zeros(9), [0, 8], 0, 2)
    with pytest.raises(ValueError, match="got 1 shards for world size 2"):
        zigzag_unshard([torch.zeros(4)], [0, 8], 2)
    with pytest.raises(ValueError, match="shard 1 has 3 tokens"):
        zigzag_unshard([torch.zeros(4), torch.zeros(3)], [0, 8], 2)
    with pytest.raises(ValueError, match="strictly increasing"):
        check_cu_seqlens([0, 4, 4], 1)
    with pytest.raises(ValueError, match="start at 0"):
        check_cu_seqlens([1, 4], 1)
    with pytest.raises(ValueError, match="integers"):
        check_cu_seqlens([0.0, 4.0], 1)
