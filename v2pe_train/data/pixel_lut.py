"""8-bit tiles -> normalised tiles in the batch's dtype, in one pass, through a per-channel lookup table.

A tile channel holds at most 256 distinct values, so each backend's normalisation (rescale, subtract the mean,
divide by the std, round to the batch dtype) is a function of (channel, 8-bit value) alone. The table is made
by running that backend's own arithmetic on the 256 values of each channel, so a looked-up tile is
bit-identical to the arithmetic run on the tile (tests/test_pixel_lut.py): the reference processor's float64
rescale and float32 normalise, the fast backend's float32 multiply-add, the augmentation's torch formula. The
lookup writes straight into the destination slice, replacing a float32 image-sized intermediate and its
separate copy into bf16 (about half the reference processor's time, issue 23).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from v2pe_common.tiling import TilingConfig, image_processor

from . import fast_tiling

KINDS = ("reference", "fast", "augmented")


def _ramp() -> np.ndarray:
    """[3, 1, 256] uint8: every 8-bit value once in each channel, channels first as the tiles are."""
    return np.broadcast_to(np.arange(256, dtype=np.uint8), (3, 1, 256)).copy()


def _normalised_ramp(kind: str, mean: tuple, std: tuple, tiling: TilingConfig) -> torch.Tensor:
    """[3, 256] float32: the ramp through `kind`'s own normalisation."""
    ramp = _ramp()
    if kind == "reference":  # the processor's rescale (float64, then float32) and normalise, as __call__ runs them
        proc = image_processor(tiling)
        return torch.from_numpy(proc.normalize(proc.rescale(ramp, proc.rescale_factor), list(mean), list(std))[:, 0])
    if kind == "fast":
        out = torch.empty((1, 3, 1, 256), dtype=torch.float32)
        fast_tiling.normalise_into(out, torch.from_numpy(ramp).unsqueeze(0), mean, std)
        return out[0, :, 0]
    if kind == "augmented":  # the re-encoded JPEG tiles' rescale and normalise (SampleProcessor.tile)
        m = torch.tensor(mean).view(3, 1, 1)
        s = torch.tensor(std).view(3, 1, 1)
        return ((torch.from_numpy(ramp).float() / 255.0 - m) / s)[:, 0]
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


@functools.lru_cache(maxsize=32)
def table(kind: str, mean: tuple, std: tuple, dtype: torch.dtype, tiling: TilingConfig = TilingConfig()) -> np.ndarray:
    """[3, 256] numpy table of `kind`'s normalised values in `dtype` (as int16 bit patterns for 16-bit dtypes)."""
    values = _normalised_ramp(kind, tuple(mean), tuple(std), tiling).to(dtype)  # the rounding `copy_` does
    if dtype == torch.float32:
        return values.numpy()
    return values.view(torch.int16).numpy()


def normalise_into(out: torch.Tensor, tiles: torch.Tensor, lut: np.ndarray) -> None:
    """out[n, c] = lut[c][tiles[n, c]]: `tiles` [n, 3, H, W] uint8, `out` the same shape in the table's dtype."""
    if tiles.dtype != torch.uint8 or tiles.shape != out.shape:
        raise ValueError(f"need uint8 tiles of the shape of out {tuple(out.shape)}, got {tiles.dtype} "
                         f"{tuple(tiles.shape)}")
    # numpy has no bfloat16: 16-bit tables and outputs move as int16 bit patterns
    dst = out.numpy() if out.dtype == torch.float32 else out.view(torch.int16).numpy()
    src = tiles.numpy()
    # One tile channel a call: take converts its indices to intp, and that array (8 bytes a pixel) then stays
    # small enough to be reused from the heap; a whole image at once costs ~10x in fresh pages. mode="clip":
    # uint8 indices are always in range, and "raise" would buffer `out`.
    for t in range(src.shape[0]):
        for c in range(src.shape[1]):
            np.take(lut[c], src[t, c], out=dst[t, c], mode="clip")
