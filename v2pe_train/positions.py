"""V2PE position ids: text +1 a token, visual tokens +S/256, then round up after each image.

For an image whose `<img>` sits at integer position p and which holds N = 256·tiles context tokens,
visual token k (1..N) gets p + k·S/256 and `</img>` gets ceil(p + N·S/256) + 1; text continues +1 from
there. S = 256 reproduces plain integer positions (`default`); README.md, "V2PE positions".

Everything is float64: S/256 is a binary fraction, so every position is exact up to ~2^44, whereas the
reference's float32 already rounds 1/256 steps past 2^15. The construction is O(L) numpy with O(images)
bookkeeping; no Python loop runs per token or per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from v2pe_common.tiling import TOKENS_PER_TILE

MODES = ("default", "v2pe_fix", "v2pe_rnd")
STRIDES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
STRIDE_DENOMINATOR = 256  # d = S / 256, fixed by the method whatever tokens_per_tile is


def draw_strides(
    num_images: int,
    *,
    mode: str = "default",
    stride: int | None = None,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """The stride S of each image (int64 [num_images]) for `mode`.

    `v2pe_rnd` draws S uniformly from STRIDES once per image (as the reference trainer does) from `rng`,
    a Generator or an int seed; it is required so that a run is reproducible.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    if mode == "default":
        return np.full(num_images, STRIDE_DENOMINATOR, dtype=np.int64)
    if mode == "v2pe_fix":
        if stride is None or int(stride) != stride or int(stride) not in STRIDES:
            raise ValueError(f"mode 'v2pe_fix' needs stride in {STRIDES}, got {stride!r}")
        return np.full(num_images, int(stride), dtype=np.int64)
    if rng is None:
        raise ValueError("mode 'v2pe_rnd' needs rng (a numpy Generator or an int seed) so strides are reproducible")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return np.asarray(STRIDES, dtype=np.int64)[gen.integers(0, len(STRIDES), size=num_images)]


def _validate_layout(
    length: int, starts: np.ndarray, spans: np.ndarray, segment_starts: np.ndarray | None = None
) -> None:
    """Images must be in order, not overlap, and fit (with `</img>`) inside the sequence and their sample."""
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    if starts.size == 0:
        return
    ends = starts + spans + 1  # index of each </img>
    if starts[0] < 0 or ends[-1] >= length:
        bad = int(np.argmax((starts < 0) | (ends >= length)))
        raise ValueError(
            f"image {bad}: <img> at {int(starts[bad])} with {int(spans[bad])} context tokens needs its </img> at "
            f"{int(ends[bad])}, outside a sequence of length {length}"
        )
    if starts.size > 1 and np.any(starts[1:] <= ends[:-1]):
        bad = int(np.argmax(starts[1:] <= ends[:-1])) + 1
        raise ValueError(f"image {bad}: <img> at {int(starts[bad])} overlaps or precedes image {bad - 1}")
    if segment_starts is not None:
        seg_of_start = np.searchsorted(segment_starts, starts, side="right")
        seg_of_end = np.searchsorted(segment_starts, ends, side="right")
        if np.any(seg_of_start != seg_of_end):
            bad = int(np.argmax(seg_of_start != seg_of_end))
            raise ValueError(f"image {bad}: <img> at {int(starts[bad])} straddles a sample boundary")


def positions_for_strides(
    length: int,
    image_starts: Sequence[int] | np.ndarray,
    tiles: Sequence[int] | np.ndarray,
    strides: Sequence[int] | np.ndarray,
    *,
    tokens_per_tile: int = TOKENS_PER_TILE,
    segment_starts: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """float64 [length] positions for images with the given strides (one per image).

    `segment_starts` (sorted, first 0) restarts positions at 0 at each index, for packed samples.
    """
    starts = np.asarray(image_starts, dtype=np.int64).reshape(-1)
    n_tiles = np.asarray(tiles, dtype=np.int64).reshape(-1)
    s = np.asarray(strides, dtype=np.int64).reshape(-1)
    if not (starts.size == n_tiles.size == s.size):
        raise ValueError(f"got {starts.size} image starts, {n_tiles.size} tile counts and {s.size} strides")
    if np.any(n_tiles < 1):
        raise ValueError(f"tiles must be >= 1, got {n_tiles[n_tiles < 1][:5].tolist()}")
    bad_strides = (s < 1) | (s > STRIDE_DENOMINATOR)
    if np.any(bad_strides):
        raise ValueError(f"strides must lie in 1..{STRIDE_DENOMINATOR}, got {s[bad_strides][:5].tolist()}")
    seg = None if segment_starts is None else np.asarray(segment_starts, dtype=np.int64).reshape(-1)
    if seg is not None and (seg.size == 0 or seg[0] != 0 or np.any(np.diff(seg) <= 0) or seg[-1] >= max(length, 1)):
        raise ValueError(f"segment_starts must be strictly increasing, start at 0 and lie below {length}")
    spans = n_tiles * tokens_per_tile
    _validate_layout(length, starts, spans, seg)

    d = s.astype(np.float64) / STRIDE_DENOMINATOR
    # Positions are piecewise linear in the token index j: a text run (slope 1, from a </img> or the
    # start through the next <img>) then a visual run (slope d) per image. Per-run slopes and intercepts
    # cost O(images); the tokens then take one arange, two repeats, a multiply and an add. An
    # increments-plus-cumsum formulation is simpler but measured ~2x slower at 1M tokens (numpy's
    # cumsum is a sequential loop).
    ends = starts + spans + 1  # </img>
    text_starts = np.concatenate([[0], ends])
    # Value of each text run's first token: u_{i+1} = p_i + ceil(N_i d_i) + 1 with p_i = u_i + (s_i - t_i)
    # the <img> position; p_i is an integer, so the ceil reduces to ceil(N_i d_i).
    text_values = np.concatenate([[0.0], np.cumsum(starts - text_starts[:-1] + np.ceil(spans * d) + 1.0)])
    img_pos = text_values[:-1] + (starts - text_starts[:-1])
    n = starts.size
    run_starts = np.empty(2 * n + 1, dtype=np.int64)
    run_starts[0::2], run_starts[1::2] = text_starts, starts + 1
    slopes = np.ones(2 * n + 1, dtype=np.float64)
    slopes[1::2] = d
    values = np.empty(2 * n + 1, dtype=np.float64)
    values[0::2], values[1::2] = text_values, img_pos + d
    intercepts = values - slopes * run_starts  # exact: all binary fractions well inside 2^52
    run_lengths = np.diff(np.append(run_starts, length))
    pos = np.arange(length, dtype=np.float64)
    pos *= np.repeat(slopes, run_lengths)
    pos += np.repeat(intercepts, run_lengths)
    if seg is not None and seg.size > 1:
        # The rule is invariant under integer shifts (ceil(p + x) = p + ceil(x)) and samples start on
        # text or <img>, so restarting a sample at 0 is subtracting its first token's value.
        pos -= np.repeat(pos[seg], np.diff(np.append(seg, length)))
    return pos


def position_ids(
    length: int,
    image_starts: Sequence[int] | np.ndarray,
    tiles: Sequence[int] | np.ndarray,
    *,
    mode: str = "default",
    stride: int | None = None,
    rng: np.random.Generator | int | None = None,
    tokens_per_tile: int = TOKENS_PER_TILE,
) -> np.ndarray:
    """float64 [length] V2PE positions for one sample; image i's `<img>` is at image_starts[i].

    Equals `positions_for_strides(..., draw_strides(len(image_starts), mode=..., stride=..., rng=rng))`;
    call those two directly when the strides used are needed (same rng state, same draw).
    """
    strides = draw_strides(len(image_starts), mode=mode, stride=stride, rng=rng)
    return positions_for_strides(length, image_starts, tiles, strides, tokens_per_tile=tokens_per_tile)


def packed_position_ids(
    sample_lengths: Sequence[int] | np.ndarray,
    image_starts: Sequence[int] | np.ndarray,
    tiles: Sequence[int] | np.ndarray,
    *,
    mode: str = "default",
    stride: int | None = None,
    rng: np.random.Generator | int | None = None,
    tokens_per_tile: int = TOKENS_PER_TILE,
) -> np.ndarray:
    """float64 positions for samples packed back to back; each restarts at 0.

    `image_starts` index the packed sequence (not the sample); images are in sequence order. Strides are
    drawn once per image across the whole pack, as `position_ids` does.
    """
    lengths = np.asarray(sample_lengths, dtype=np.int64).reshape(-1)
    if lengths.size == 0 or np.any(lengths < 1):
        raise ValueError(f"sample_lengths must be a non-empty list of positive lengths, got {lengths.tolist()[:8]}")
    seg = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    strides = draw_strides(len(image_starts), mode=mode, stride=stride, rng=rng)
    return positions_for_strides(
        int(lengths.sum()), image_starts, tiles, strides, tokens_per_tile=tokens_per_tile, segment_starts=seg
    )
