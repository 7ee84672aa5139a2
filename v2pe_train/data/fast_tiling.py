"""InternVL dynamic tiling with torch ops: the same grid as the reference processor, 8-bit tiles in one pass.

The reference (transformers' GotOcr2 PIL processor, `v2pe_common.tiling.image_processor`) resizes with
Pillow's bicubic filter and then rescales and normalises in numpy, image by image; that is ~57 tiles/s a
process. Here the grid is `v2pe_common.tiling.grid` (the one `num_tiles` counts, held to the processor's
own grid by tests/test_tiling.py), the resize is `F.interpolate(uint8, mode="bicubic", antialias=True)` --
torch's uint8 path implements Pillow's separable filter (a = -0.5, uint8 rounding between the passes), so pixels
agree within 2 of 255 levels (tests/test_fast_tiling.py; all 483 tiles of the loader bench) -- and the tiles
are cut from the resized tensor as views.

Known gap: when an image shrinks in both directions, Pillow 13 sometimes runs its vertical pass first by a
rule not identified here (see `_resize`); on hard black/white edges such a pixel can then differ by up to
~30 levels. That path is common (the thumbnail of any image larger than a tile, the canvas of any image
larger than its grid), but the difference needs overshoot clipped in the intermediate: on the rendered pages
of the loader bench and the test pictures no pixel differed by more than 2 levels. The `reference` backend
is the exact path.

Pillow's JPEG `draft` (decoding at 1/2..1/8 scale) is deliberately not used: on a 3000x2000 page it moved
pixels by up to 71 levels (mean 0.7) against the reference, far outside the tolerance above.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from v2pe_common.tiling import TilingConfig, grid

BACKENDS = ("fast", "reference")


def _resize(src: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pillow's bicubic resize of a [1, 3, h, w] uint8 tensor, in Pillow's order of passes.

    Both libraries round to uint8 (and clip the bicubic overshoot) between the horizontal and the vertical
    pass, so the order matters at sharp edges (up to 30 levels). torch always runs horizontal first; Pillow
    runs vertical first when it shrinks the height while it widens the image (measured on Pillow 13 with
    random sizes and random black/white pixels; tests/test_fast_tiling.py has such a case). When both sizes
    shrink Pillow picks either order, by a rule we did not find; horizontal first matched ~2/3 of those.
    """
    h, w = src.shape[-2:]
    if height < h and width > w:
        src = F.interpolate(src, size=(height, w), mode="bicubic", antialias=True)
    return F.interpolate(src, size=(height, width), mode="bicubic", antialias=True)


def tiles_uint8(rgb, tiling: TilingConfig) -> torch.Tensor:
    """[n, 3, T, T] uint8 tiles of an 8-bit RGB PIL image, row-major, the thumbnail last when the tiling keeps one."""
    width, height = rgb.size
    cols, rows = grid(width, height, tiling)
    t = tiling.tile_size
    # channels-last uint8 is the layout torch's Pillow-compatible antialiased kernel works on directly
    src = torch.from_numpy(np.array(rgb))  # a writable copy torch may own
    src = src.permute(2, 0, 1).unsqueeze(0)
    canvas = _resize(src, rows * t, cols * t)
    n = cols * rows
    tiles = canvas[0].reshape(3, rows, t, cols, t).permute(1, 3, 0, 2, 4).reshape(n, 3, t, t)
    if n > 1 and tiling.use_thumbnail:
        thumb = _resize(src, t, t)
        tiles = torch.cat([tiles, thumb])
    return tiles


def normalise_into(out: torch.Tensor, tiles: torch.Tensor, mean, std) -> None:
    """out = (tiles / 255 - mean) / std, one fp32 multiply-add a tile, cast into `out`'s dtype.

    The definition of the fast backend's arithmetic: the loader looks its 256 values a channel up
    (`pixel_lut`, made by running this on them), bit for bit the same and faster again. Tile by tile so
    the fp32 intermediate (2.4 MB at 448 px) stays in cache.
    """
    mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    scale, shift = 1.0 / (255.0 * std), -mean / std
    tmp = None if out.dtype == torch.float32 else torch.empty(tiles.shape[1:], dtype=torch.float32)
    for t in range(tiles.shape[0]):
        if tmp is None:
            torch.addcmul(shift, tiles[t], scale, out=out[t])
        else:
            torch.addcmul(shift, tiles[t], scale, out=tmp)
            out[t].copy_(tmp)
