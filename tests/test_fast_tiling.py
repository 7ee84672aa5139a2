"""The `fast` tiling backend (torch resize) against the reference transformers processor.

The promise: the same number of tiles in the same order, and pixels within 2 of 255 levels of the reference
(mean difference under 0.25 levels) across sizes, aspect ratios, grid settings and image modes. Known gap
(fast_tiling's docstring): a resize shrinking both directions can differ more at a few saturated edges.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from v2pe_common.tiling import IMAGENET_STD, TilingConfig, num_tiles
from v2pe_train.data.samples import SampleError, SampleProcessor
from v2pe_train.data.options import SampleConfig

MAX_LEVELS = 2.0  # the stated tolerance, in 8-bit levels (1/255 of the unnormalised range)
MEAN_LEVELS = 0.25


def _picture(w: int, h: int, seed: int) -> Image.Image:
    """Gradients, shapes and text: the edges and flat areas documents and charts have."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, w)[None, :, None]
    y = np.linspace(0, 255, h)[:, None, None]
    base = np.broadcast_to((x + y) / 2, (h, w, 3)).astype(np.uint8).copy()
    im = Image.fromarray(base)
    draw = ImageDraw.Draw(im)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.rectangle([x0, y0, x0 + int(rng.integers(1, 60)), y0 + int(rng.integers(1, 60))], fill=colour)
        draw.text((x0, y0), "V2PE 0.75", fill=(0, 0, 0))
    return im


def _encode(im: Image.Image, mode: str, fmt: str) -> bytes:
    if mode == "I;16":
        im = Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257)
        assert im.mode == "I;16"
    elif mode == "RGBA":
        im = im.convert("RGBA")
        im.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, im.width, dtype=np.uint8), (im.height, 1))))
    elif mode == "P":
        im = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        im.info["transparency"] = 0
    else:
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _tiles(backend: str, data: bytes, tiling: TilingConfig, **kw) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as im:
        n = num_tiles(im.width, im.height, tiling)
    out = torch.empty((n, 3, tiling.tile_size, tiling.tile_size), dtype=torch.float32)
    processor = SampleProcessor(None, SampleConfig(tiling_backend=backend), pixel_dtype="fp32")
    processor.tile(data, "0.img", n, tiling, out, **kw)
    return out


def _levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| of normalised pixels, in 8-bit levels."""
    return (a - b).abs() * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255


SMALL = TilingConfig(tile_size=56, max_tiles=12)
CASES = [
    # (width, height, mode, format, tiling)
    (800, 1100, "RGB", "JPEG", TilingConfig()),  # a page at the real tile size: 12 tiles + thumbnail
    # 2x1 grid, 896x448 canvas: wider but less tall, where Pillow resizes vertically first
    (825, 450, "RGB", "PNG", TilingConfig(max_tiles=2)),
    (1000, 260, "RGB", "PNG", SMALL),  # wide
    (90, 700, "L", "JPEG", SMALL),  # tall, grey
    (1, 1, "RGB", "PNG", SMALL),  # one pixel: upsampled to one tile
    (37, 23, "RGBA", "PNG", SMALL),  # smaller than a tile, alpha composited onto white
    (300, 300, "P", "PNG", SMALL),  # palette with a transparent index
    (640, 480, "I;16", "PNG", SMALL),  # 16-bit grey, scaled by to_rgb
    (640, 480, "CMYK", "JPEG", SMALL),
    (500, 333, "RGB", "JPEG", TilingConfig(tile_size=56, max_tiles=6, use_thumbnail=False)),
    (500, 333, "RGB", "JPEG", TilingConfig(tile_size=56, min_tiles=4, max_tiles=9)),
    (500, 333, "RGB", "JPEG", TilingConfig(tile_size=56, max_tiles=1)),
]


@pytest.mark.parametrize("w,h,mode,fmt,tiling", CASES, ids=[f"{c[0]}x{c[1]}-{c[2]}-{c[3]}-{c[4].max_tiles}" for c in CASES])
def test_fast_tiles_match_the_reference_processor_within_two_levels(w, h, mode, fmt, tiling):
    data = _encode(_picture(w, h, seed=w * 7 + h), mode, fmt)
    ref, fast = _tiles("reference", data, tiling), _tiles("fast", data, tiling)
    assert fast.shape == ref.shape  # same count, thumbnail rule and order
    diff = _levels(fast, ref)
    assert float(diff.max()) <= MAX_LEVELS + 1e-3, f"max {float(diff.max()):.2f} levels"
    assert float(diff.mean()) <= MEAN_LEVELS, f"mean {float(diff.mean()):.4f} levels"


def test_fast_augmentation_draws_the_same_qualities_per_key_and_stays_near_the_reference():
    """JPEG re-encoding runs per tile on the fast path too: deterministic per key, off without one."""
    data = _encode(_picture(300, 200, seed=1), "RGB", "PNG")
    key = ("s1", 0, 3)
    fast = SampleProcessor(None, SampleConfig(tiling_backend="fast", data_augment=True), pixel_dtype="fp32", seed=5)
    n = num_tiles(300, 200, SMALL)

    def run(proc, **kw):
        out = torch.empty((n, 3, 56, 56))
        proc.tile(data, "0.png", n, SMALL, out, **kw)
        return out

    first = run(fast, key=key)
    assert torch.equal(first, run(fast, key=key))
    assert not torch.equal(first, run(fast, key=("s1", 0, 4)))
    assert torch.equal(run(fast), _tiles("fast", data, SMALL))  # no key: never augmented
    ref = run(SampleProcessor(None, SampleConfig(data_augment=True), pixel_dtype="fp32", seed=5), key=key)
    # re-encoding may move a 2-level input difference by a quantisation step, never the picture
    assert float(_levels(first, ref).mean()) < 1.0


def test_fast_backend_reports_undecodable_bytes_and_wrong_tile_counts_like_the_reference():
    fast = SampleProcessor(None, SampleConfig(tiling_backend="fast"), pixel_dtype="fp32")
    out = torch.empty((1, 3, 56, 56))
    with pytest.raises(SampleError, match="image 0.img does not decode"):
        fast.tile(b"not an image", "0.img", 1, SMALL, out)
    data = _encode(_picture(300, 200, seed=2), "RGB", "PNG")
    with pytest.raises(SampleError, match=r"gives \d+ tiles, \$.meta.tiles says 1"):
        fast.tile(data, "0.img", 1, SMALL, out)


def test_an_unknown_tiling_backend_is_refused_with_the_key_named():
    from v2pe_train.data import LoaderConfig

    with pytest.raises(ValueError, match="tiling_backend must be one of .*'gpu'"):
        LoaderConfig(paths=["x"], tiling_backend="gpu")
    with pytest.raises(ValueError, match="tiling_backend must be one of"):
        SampleConfig(tiling_backend="torchvision")


def test_the_training_recipe_key_picks_the_tiling_backend_and_names_a_bad_one():
    from v2pe_train.config import ConfigError, TrainConfig

    assert TrainConfig.from_dict({"sample": {"tiling_backend": "fast"}}).sample.tiling_backend == "fast"
    assert TrainConfig().sample.tiling_backend == "reference"
    with pytest.raises(ConfigError, match=r"sample\.tiling_backend: must be one of \['fast', 'reference'\], got 'turb"):
        TrainConfig.from_dict({"sample.tiling_backend": "turbo"})
