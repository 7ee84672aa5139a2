"""V2PE position ids: the rule of `v2pe_train/positions.py` (README, "V2PE positions"), checked as properties and
against a per-token loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from v2pe_train.positions import (
    STRIDES,
    draw_strides,
    packed_position_ids,
    position_ids,
    positions_for_strides,
)

TPT = 4  # small tokens_per_tile keeps layouts short; the rule is the same for 256


def reference_loop(length, image_starts, tiles, strides, tokens_per_tile):
    """The rule written token by token, the way one would on paper."""
    pos = []
    starts = {s: i for i, s in enumerate(image_starts)}
    j, nxt = 0, 0.0
    while j < length:
        if j in starts:
            i = starts[j]
            p = nxt
            pos.append(p)
            n = tiles[i] * tokens_per_tile
            d = strides[i] / 256
            for k in range(1, n + 1):
                pos.append(p + k * d)
            pos.append(math.ceil(p + n * d) + 1)
            nxt = pos[-1] + 1
            j += n + 2
        else:
            pos.append(nxt)
            nxt += 1
            j += 1
    return np.asarray(pos, dtype=np.float64)


@st.composite
def layouts(draw, tokens_per_tile=TPT):
    """(length, image_starts, tiles): text gaps (possibly 0) around 0..5 images."""
    n_images = draw(st.integers(0, 5))
    tiles = draw(st.lists(st.integers(1, 3), min_size=n_images, max_size=n_images))
    gaps = draw(st.lists(st.integers(0, 6), min_size=n_images + 1, max_size=n_images + 1))
    starts, j = [], 0
    for i in range(n_images):
        j += gaps[i]
        starts.append(j)
        j += tiles[i] * tokens_per_tile + 2
    length = j + gaps[-1]
    return length, starts, tiles


@settings(max_examples=150, deadline=None)
@given(layouts(), st.sampled_from(STRIDES))
def test_fix_matches_reference_loop(layout, stride):
    length, starts, tiles = layout
    got = position_ids(length, starts, tiles, mode="v2pe_fix", stride=stride, tokens_per_tile=TPT)
    want = reference_loop(length, starts, tiles, [stride] * len(starts), TPT)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want)


@settings(max_examples=150, deadline=None)
@given(layouts(), st.integers(0, 2**32 - 1))
def test_rnd_matches_reference_loop_and_is_increasing(layout, seed):
    length, starts, tiles = layout
    strides = draw_strides(len(starts), mode="v2pe_rnd", rng=seed)
    got = position_ids(length, starts, tiles, mode="v2pe_rnd", rng=seed, tokens_per_tile=TPT)
    np.testing.assert_array_equal(got, reference_loop(length, starts, tiles, strides.tolist(), TPT))
    if length:
        assert got[0] == 0
    assert np.all(np.diff(got) > 0)


@settings(max_examples=100, deadline=None)
@given(layouts(), st.lists(st.sampled_from(STRIDES), min_size=5, max_size=5))
def test_text_steps_one_and_image_spans(layout, stride_pool):
    length, starts, tiles = layout
    strides = stride_pool[: len(starts)]
    pos = positions_for_strides(length, starts, tiles, strides, tokens_per_tile=TPT)
    inside = np.zeros(length, dtype=bool)  # visual tokens and </img>: steps not +1 by design
    for s, t, S in zip(starts, tiles, strides):
        n = t * TPT
        inside[s + 1 : s + n + 2] = True
        # from <img> to the last visual token: n·S/256 positions (= tiles·S when tokens_per_tile is 256)
        assert pos[s + n] - pos[s] == n * S / 256
        assert np.all(np.diff(pos[s : s + n + 1]) == S / 256)
        assert pos[s + n + 1] == math.ceil(pos[s + n]) + 1
    steps = np.diff(pos)
    assert np.all(steps[~inside[1:]] == 1.0)


def test_image_spans_tiles_times_stride_at_256_tokens_per_tile():
    starts, tiles = [3, 3 + 2 * 256 + 2 + 5], [2, 5]
    length = starts[1] + 5 * 256 + 2 + 4
    for S in STRIDES:
        pos = position_ids(length, starts, tiles, mode="v2pe_fix", stride=S)
        for s, t in zip(starts, tiles):
            assert pos[s + t * 256] - pos[s] == t * S
            assert pos[s + t * 256 + 1] - pos[s] == t * S + 1


@settings(max_examples=50, deadline=None)
@given(layouts())
def test_stride_256_is_default_is_arange(layout):
    length, starts, tiles = layout
    fix = position_ids(length, starts, tiles, mode="v2pe_fix", stride=256, tokens_per_tile=TPT)
    default = position_ids(length, starts, tiles, mode="default", tokens_per_tile=TPT)
    np.testing.assert_array_equal(fix, np.arange(length, dtype=np.float64))
    np.testing.assert_array_equal(default, np.arange(length, dtype=np.float64))


def test_rnd_reproducible_and_draws_allowed_strides():
    a = draw_strides(5000, mode="v2pe_rnd", rng=np.random.default_rng(7))
    b = draw_strides(5000, mode="v2pe_rnd", rng=7)
    np.testing.assert_array_equal(a, b)
    assert set(a.tolist()) == set(STRIDES)  # 5000 draws hit all nine values
    starts, tiles = [0, 300], [1, 1]
    p1 = position_ids(600, starts, tiles, mode="v2pe_rnd", rng=np.random.default_rng(3))
    p2 = position_ids(600, starts, tiles, mode="v2pe_rnd", rng=np.random.default_rng(3))
    np.testing.assert_array_equal(p1, p2)


def test_rnd_uses_the_generator_state():
    gen = np.random.default_rng(11)
    draws = [tuple(draw_strides(8, mode="v2pe_rnd", rng=gen)) for _ in range(4)]
    assert len(set(draws)) > 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="v2pe_fix"), "needs stride"),
        (dict(mode="v2pe_fix", stride=3), "needs stride"),
        (dict(mode="v2pe_fix", stride=512), "needs stride"),
        (dict(mode="v2pe_rnd"), "needs rng"),
        (dict(mode="nope"), "mode must be one of"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        position_ids(20, [0], [1], tokens_per_tile=TPT, **kwargs)


@pytest.mark.parametrize(
    "length, starts, tiles, match",
    [
        (5, [0], [1], "outside a sequence"),
        (20, [0, 3], [1, 1], "overlaps"),
        (20, [-1], [1], "outside a sequence"),
        (20, [0], [0], "tiles must be"),
    ],
)
def test_bad_layouts(length, starts, tiles, match):
    with pytest.raises(ValueError, match=match):
        position_ids(length, starts, tiles, tokens_per_tile=TPT)


@settings(max_examples=80, deadline=None)
@given(st.lists(layouts(), min_size=1, max_size=4), st.sampled_from(STRIDES))
def test_packed_restarts_at_zero_and_matches_per_sample(samples, stride):
    samples = [s for s in samples if s[0] > 0] or [(3, [], [])]
    lengths = [s[0] for s in samples]
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    starts = [o + s for o, (_, st_, _) in zip(offsets, samples) for s in st_]
    tiles = [t for (_, _, ts) in samples for t in ts]
    got = packed_position_ids(lengths, starts, tiles, mode="v2pe_fix", stride=stride, tokens_per_tile=TPT)
    want = np.concatenate(
        [position_ids(n, st_, ts, mode="v2pe_fix", stride=stride, tokens_per_tile=TPT) for n, st_, ts in samples]
    )
    np.testing.assert_array_equal(got, want)
    assert np.all(got[offsets] == 0)


def test_packed_rnd_draws_once_per_image_in_order():
    lengths, starts, tiles = [20, 30], [2, 25], [2, 3]
    got = packed_position_ids(lengths, starts, tiles, mode="v2pe_rnd", rng=5, tokens_per_tile=TPT)
    strides = draw_strides(2, mode="v2pe_rnd", rng=5)
    want = np.concatenate(
        [
            positions_for_strides(20, [2], [2], strides[:1], tokens_per_tile=TPT),
            positions_for_strides(30, [5], [3], strides[1:], tokens_per_tile=TPT),
        ]
    )
    np.testing.assert_array_equal(got, want)


def test_packed_rejects_image_across_samples():
    with pytest.raises(ValueError, match="straddles"):
        packed_position_ids([4, 20], [2], [1], tokens_per_tile=TPT)


def test_exact_at_a_million():
    """float64 keeps 1/256 steps at 1e6 (float32 would not: its spacing there is 1/16)."""
    length = 1_000_000 + 300
    pos = position_ids(length, [1_000_000], [1], mode="v2pe_fix", stride=1)
    assert pos[1_000_001] - pos[1_000_000] == 1 / 256
    assert np.float32(pos[1_000_001]) == np.float32(pos[1_000_000])
