"""InternVL dynamic tiling: closest aspect ratio among grids of 1..max tiles, tie -> larger grid while the
image area exceeds half the grid area, thumbnail appended when the grid has more than one tile."""

import random

import pytest

from v2pe_common.tiling import TilingConfig, image_token_count, num_tiles


@pytest.mark.parametrize(
    "width,height,tiles",
    [
        (448, 448, 1),  # one tile, no thumbnail
        (896, 448, 3),  # 2x1 grid + thumbnail
        (448, 896, 3),  # 1x2 grid + thumbnail
        (600, 600, 1),  # square tie: area 360000 < 0.5*448^2*4, so 1x1 is kept
        (900, 900, 5),  # square tie: 2x2 taken (810000 > 401408), 3x3 refused (810000 < 903168)
        (1000, 1000, 10),  # square tie: 3x3 taken (1e6 > 903168) + thumbnail
        (672, 448, 7),  # aspect 1.5: exact 3x2 grid beats the 1x1 / 2x1 tie at distance 0.5
        (4000, 400, 11),  # aspect 10: 10x1 is closest + thumbnail
        (10000, 100, 13),  # extreme aspect: 12x1 is the closest allowed grid + thumbnail
    ],
)
def test_tile_counts_match_hand_computed_grids(width, height, tiles):
    assert num_tiles(width, height) == tiles


def test_max_tiles_bounds_the_grid():
    assert num_tiles(4000, 400, TilingConfig(max_tiles=6)) == 7  # 6x1 + thumbnail
    assert num_tiles(1000, 1000, TilingConfig(max_tiles=1)) == 1


def test_thumbnail_can_be_disabled():
    assert num_tiles(896, 448, TilingConfig(use_thumbnail=False)) == 2
    assert num_tiles(448, 448, TilingConfig(use_thumbnail=False)) == 1


def _reference_tiles(width, height, max_tiles=12, tile=448):
    """Independent statement of the InternVL rule, for the random-size comparison."""
    grids = sorted(
        {(i, j) for n in range(1, max_tiles + 1) for i in range(1, n + 1) for j in range(1, n + 1) if i * j <= max_tiles},
        key=lambda g: g[0] * g[1],
    )
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for gw, gh in grids:
        diff = abs(aspect - gw / gh)
        if diff < best_diff:
            best, best_diff = (gw, gh), diff
        elif diff == best_diff and width * height > 0.5 * tile * tile * gw * gh:
            best = (gw, gh)
    n = best[0] * best[1]
    return n + 1 if n > 1 else 1


def test_tile_counts_agree_with_an_independent_implementation_on_random_sizes():
    rng = random.Random(7)
    for _ in range(500):
        w, h = rng.randint(16, 5000), rng.randint(16, 5000)
        assert num_tiles(w, h) == _reference_tiles(w, h), (w, h)


def test_an_image_costs_256_tokens_a_tile_plus_its_two_tags():
    assert image_token_count(1) == 258
    assert image_token_count(13) == 13 * 256 + 2
    assert TilingConfig().max_image_tokens == 13 * 256 + 2


def test_invalid_sizes_and_configs_are_rejected():
    with pytest.raises(ValueError, match="image size"):
        num_tiles(0, 10)
    with pytest.raises(ValueError, match="max_tiles"):
        TilingConfig(max_tiles=0)


def test_grid_and_count_match_the_transformers_processor_that_cuts_the_pixels():
    """`num_tiles` counts without importing the image processor (a build never needs it); the trainer's pixels
    come from that processor, so both must pick the same grid, ties and the 1 x 1 fallback included."""
    from v2pe_common.tiling import image_processor

    rng = random.Random(11)
    sizes = [(448, 448), (896, 448), (600, 600), (900, 900), (10000, 100), (560, 448), (448, 560)]
    sizes += [(rng.randint(16, 6000), rng.randint(16, 6000)) for _ in range(400)]
    for cfg in (TilingConfig(), TilingConfig(max_tiles=6), TilingConfig(max_tiles=1), TilingConfig(min_tiles=2)):
        processor = image_processor(cfg)
        for w, h in sizes:
            assert num_tiles(w, h, cfg) == processor.get_number_of_image_patches(h, w), (cfg, w, h)
