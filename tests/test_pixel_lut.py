"""Normalising tiles through a lookup table gives the very bits the arithmetic it replaced gave (issue 23).

Each backend's former path is run here in full: the reference processor's own rescale + normalise to float32
then a copy into the batch dtype; the fast backend's multiply-add (`fast_tiling.normalise_into`); the
augmentation's torch formula. `SampleProcessor.tile` (tables) must equal each bit for bit, in every pixel
dtype, on odd sizes, image modes and a tiling without thumbnail.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from v2pe_common.images import to_rgb
from v2pe_common.tiling import IMAGENET_MEAN, IMAGENET_STD, TilingConfig, image_processor, num_tiles
from v2pe_train.data import fast_tiling, pixel_lut
from v2pe_train.data.options import SampleConfig
from v2pe_train.data.samples import PIXEL_DTYPES, SampleProcessor

SMALL = TilingConfig(tile_size=56, max_tiles=6)
# (width, height, mode, tiling): odd sizes, a single-tile grid, grey, palette, alpha, 16-bit, no thumbnail
CASES = [
    (333, 199, "RGB", SMALL),
    (17, 401, "L", SMALL),
    (1001, 57, "P", SMALL),
    (97, 89, "RGBA", TilingConfig(tile_size=56, max_tiles=1)),
    (250, 131, "I;16", TilingConfig(tile_size=56, max_tiles=4, use_thumbnail=False)),
    (913, 611, "RGB", TilingConfig()),  # the real 448-px tile
]


def _image(w: int, h: int, mode: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    # noise over a gradient: every 8-bit value occurs, with smooth and sharp regions
    grad = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
    arr = np.clip(grad + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(arr)
    if mode == "I;16":
        im = Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257)
    elif mode == "RGBA":
        im = im.convert("RGBA")
        im.putalpha(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)))
    else:
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _before_reference(data: bytes, tiling: TilingConfig, dtype: torch.dtype) -> torch.Tensor:
    """The reference path before the tables: the processor normalises to float32, then one copy into `dtype`."""
    with Image.open(io.BytesIO(data)) as im:
        pixels = image_processor(tiling)(images=to_rgb(im), return_tensors="pt", image_mean=list(IMAGENET_MEAN),
                                         image_std=list(IMAGENET_STD))["pixel_values"]
    if not tiling.use_thumbnail and pixels.shape[0] > 1:
        pixels = pixels[:-1]
    return pixels.to(dtype)


def _tile(backend: str, data: bytes, tiling: TilingConfig, pixel_dtype: str) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as im:
        n = num_tiles(im.width, im.height, tiling)
    out = torch.empty((n, 3, tiling.tile_size, tiling.tile_size), dtype=PIXEL_DTYPES[pixel_dtype])
    SampleProcessor(None, SampleConfig(tiling_backend=backend), pixel_dtype=pixel_dtype).tile(
        data, "0.png", n, tiling, out)
    return out


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    assert a.dtype == b.dtype and a.shape == b.shape
    return torch.equal(a.view(torch.int16 if a.element_size() == 2 else torch.int32),
                       b.view(torch.int16 if b.element_size() == 2 else torch.int32))


@pytest.mark.parametrize("pixel_dtype", sorted(PIXEL_DTYPES))
@pytest.mark.parametrize("w,h,mode,tiling", CASES)
def test_reference_tiles_are_bit_identical_to_the_processor_normalising_then_copying(w, h, mode, tiling, pixel_dtype):
    data = _image(w, h, mode, seed=w)
    assert _same_bits(_tile("reference", data, tiling, pixel_dtype),
                      _before_reference(data, tiling, PIXEL_DTYPES[pixel_dtype]))


@pytest.mark.parametrize("pixel_dtype", sorted(PIXEL_DTYPES))
@pytest.mark.parametrize("w,h,mode,tiling", CASES[:3] + CASES[4:])
def test_fast_tiles_are_bit_identical_to_the_float32_multiply_add(w, h, mode, tiling, pixel_dtype):
    data = _image(w, h, mode, seed=h)
    with Image.open(io.BytesIO(data)) as im:
        tiles = fast_tiling.tiles_uint8(to_rgb(im), tiling)
    before = torch.empty(tiles.shape, dtype=PIXEL_DTYPES[pixel_dtype])
    fast_tiling.normalise_into(before, tiles, IMAGENET_MEAN, IMAGENET_STD)
    assert _same_bits(_tile("fast", data, tiling, pixel_dtype), before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_augmentation_table_is_its_torch_formula_on_every_value(dtype):
    """Re-encoded JPEG tiles were normalised by this formula; the table must give its bits at any position."""
    tiles = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 3, 56, 56), dtype=np.uint8))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    before = ((tiles.float() / 255.0 - mean) / std).to(dtype)
    out = torch.empty(tiles.shape, dtype=dtype)
    pixel_lut.normalise_into(out, tiles, pixel_lut.table("augmented", IMAGENET_MEAN, IMAGENET_STD, dtype))
    assert _same_bits(out, before)


def test_the_lookup_refuses_tiles_that_are_not_8_bit_or_not_the_shape_of_out():
    lut = pixel_lut.table("reference", IMAGENET_MEAN, IMAGENET_STD, torch.float32)
    out = torch.empty((1, 3, 4, 4))
    with pytest.raises(ValueError, match="need uint8 tiles"):
        pixel_lut.normalise_into(out, torch.zeros((1, 3, 4, 4)), lut)
    with pytest.raises(ValueError, match="of the shape of out"):
        pixel_lut.normalise_into(out, torch.zeros((2, 3, 4, 4), dtype=torch.uint8), lut)
    with pytest.raises(ValueError, match="kind must be one of"):
        pixel_lut.table("bilinear", IMAGENET_MEAN, IMAGENET_STD, torch.float32)
