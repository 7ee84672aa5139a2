"""Time V2PE position ids on a 1M-token sample with 4,000 tiles: vectorised vs a per-image loop.

The baseline is the reference trainer's shape (one Python iteration per image, an arange per image),
written in float64 so both sides compute the same numbers. Run: `python bench/bench_positions.py`.
"""

from __future__ import annotations

import math
import time

import numpy as np

from v2pe_train.positions import draw_strides, positions_for_strides

LENGTH = 1 << 20  # 1M tokens: 4,000 tiles are 1,024,000 visual tokens, the rest is text
TOTAL_TILES = 4_000
LAYOUTS = (300, 4_000)  # images: ~13 tiles each (document pages), or one tile each (many small images)
REPEATS = 7


def per_image_loop(length: int, image_starts, tiles, strides, tokens_per_tile: int = 256) -> np.ndarray:
    pos = np.empty(length, dtype=np.float64)
    last, start = -1.0, 0
    for s, t, stride in zip(image_starts, tiles, strides):
        pos[start : s + 1] = np.arange(last + 1, last + 1 + (s + 1 - start))
        p = pos[s]
        n, d = t * tokens_per_tile, stride / 256
        pos[s + 1 : s + n + 1] = p + d * np.arange(1, n + 1)
        last = float(math.ceil(p + n * d))
        start = s + n + 1
    pos[start:] = np.arange(last + 1, last + 1 + (length - start))
    return pos


def make_layout(rng: np.random.Generator, num_images: int) -> tuple[list[int], list[int]]:
    """num_images images summing to TOTAL_TILES tiles, spread over LENGTH tokens with random text gaps."""
    tiles = np.full(num_images, TOTAL_TILES // num_images)
    tiles[: TOTAL_TILES - tiles.sum()] += 1
    rng.shuffle(tiles)
    image_tokens = int((tiles * 256 + 2).sum())
    gaps = rng.multinomial(LENGTH - image_tokens, np.full(num_images + 1, 1 / (num_images + 1)))
    starts, j = [], 0
    for i in range(num_images):
        j += int(gaps[i])
        starts.append(j)
        j += int(tiles[i]) * 256 + 2
    assert j + gaps[-1] == LENGTH
    return starts, tiles.tolist()


def best_ms(fn) -> float:
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    for num_images in LAYOUTS:
        starts, tiles = make_layout(rng, num_images)
        strides = draw_strides(num_images, mode="v2pe_rnd", rng=rng)
        fast = positions_for_strides(LENGTH, starts, tiles, strides)
        np.testing.assert_array_equal(fast, per_image_loop(LENGTH, starts, tiles, strides))
        t_fast = best_ms(lambda: positions_for_strides(LENGTH, starts, tiles, strides))
        t_slow = best_ms(lambda: per_image_loop(LENGTH, starts, tiles, strides))
        print(f"{LENGTH:,} tokens, {num_images:,} images, {sum(tiles):,} tiles, v2pe_rnd (best of {REPEATS}):")
        print(f"  vectorised     {t_fast:8.2f} ms")
        print(f"  per-image loop {t_slow:8.2f} ms")
        print(f"  loop / vectorised = {t_slow / t_fast:.2f}x")


if __name__ == "__main__":
    main()
