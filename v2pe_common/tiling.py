"""InternVL dynamic tiling: the tile grid and count here, the pixels by transformers' GotOcr2 image processor.

The grid is the one with the closest aspect ratio among grids of min..max tiles (ties go to the larger
grid while the image area exceeds half the grid's area); a thumbnail is appended when the grid has more
than one tile. Counting needs only the image size, never the pixels, so it is computed here: importing the
processor pulls in torch and most of transformers (~2 s), which a build that only counts never needs.
tests/test_tiling.py holds `num_tiles` to the processor's own count.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

IMG_START = "<img>"
IMG_END = "</img>"
IMG_CONTEXT = "<IMG_CONTEXT>"
IMAGE_PLACEHOLDER = "<image>"
# The image contract both sides count with: InternVL tiles of TILE_SIZE px, TOKENS_PER_TILE context tokens
# each, and an image's tokens wrapped in IMAGE_TAGS tags (<img> before, </img> after).
TILE_SIZE = 448
TOKENS_PER_TILE = 256
IMAGE_TAGS = 2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, slots=True)
class TilingConfig:
    tile_size: int = TILE_SIZE
    max_tiles: int = 12
    min_tiles: int = 1
    use_thumbnail: bool = True
    tokens_per_tile: int = TOKENS_PER_TILE

    def __post_init__(self) -> None:
        if self.tile_size <= 0:
            raise ValueError(f"tile_size must be positive, got {self.tile_size}")
        if not 1 <= self.min_tiles <= self.max_tiles:
            raise ValueError(f"need 1 <= min_tiles <= max_tiles, got {self.min_tiles}, {self.max_tiles}")
        if self.tokens_per_tile <= 0:
            raise ValueError(f"tokens_per_tile must be positive, got {self.tokens_per_tile}")

    @property
    def max_image_tokens(self) -> int:
        """Largest token cost of one image, tags included."""
        extra = 1 if (self.use_thumbnail and self.max_tiles > 1) else 0
        return image_token_count(self.max_tiles + extra, self)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}


@functools.lru_cache(maxsize=16)
def image_processor(cfg: TilingConfig):
    """The transformers image processor configured for `cfg` (Pillow backend, no torchvision needed)."""
    # Importing the PIL class directly avoids the "requires torchvision" fallback warning.
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    return GotOcr2ImageProcessorPil(
        crop_to_patches=True,
        min_patches=cfg.min_tiles,
        max_patches=cfg.max_tiles,
        size={"height": cfg.tile_size, "width": cfg.tile_size},
        do_convert_rgb=True,
        # InternVL normalises with ImageNet statistics, not the processor's CLIP defaults.
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )


@functools.lru_cache(maxsize=64)
def _grids(min_tiles: int, max_tiles: int) -> tuple[tuple[int, int], ...]:
    """(columns, rows) of every allowed grid, fewest tiles first, then by columns: the order ties are broken in."""
    span = range(1, max_tiles + 1)
    cells = [(c, r) for c in span for r in span if min_tiles <= c * r <= max_tiles]
    return tuple(sorted(cells, key=lambda g: g[0] * g[1]))


def grid(width: int, height: int, cfg: TilingConfig = TilingConfig()) -> tuple[int, int]:
    """(columns, rows) of the tile grid for a width x height image (1 x 1 when `max_tiles` is 1)."""
    if cfg.max_tiles <= 1:
        return 1, 1
    aspect, area = width / height, width * height
    best, best_diff = (1, 1), float("inf")
    for columns, rows in _grids(cfg.min_tiles, cfg.max_tiles):
        diff = abs(aspect - columns / rows)
        if diff < best_diff:
            best, best_diff = (columns, rows), diff
        elif diff == best_diff and area > 0.5 * cfg.tile_size * cfg.tile_size * columns * rows:
            best = (columns, rows)
    return best


@functools.lru_cache(maxsize=65536)
def num_tiles(width: int, height: int, cfg: TilingConfig = TilingConfig()) -> int:
    """Tiles InternVL feeds the vision tower for a width x height image, thumbnail included."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    columns, rows = grid(width, height, cfg)
    n = columns * rows
    return n + 1 if n > 1 and cfg.use_thumbnail else n


def image_token_count(tiles: int, cfg: TilingConfig = TilingConfig()) -> int:
    """Tokens an image of `tiles` tiles occupies: <img>, `tokens_per_tile` context tokens a tile, </img>."""
    return tiles * cfg.tokens_per_tile + IMAGE_TAGS
