"""Decoded images -> 8-bit pixels: the one conversion the data builder and the trainer share.

Pillow's `convert("RGB")` clips high-bit-depth grey to 0..255 instead of scaling it, so a 16-bit PNG (mode
`I;16`, or `I` in older Pillow releases) comes out almost all white. Here:

* `I;16`, `I;16L`, `I;16B`, `I;16N` (16-bit unsigned): scaled to 8 bit, `round(value / 257)` (65535 -> 255).
* `I` (32-bit signed): read as 16-bit data, which is how some Pillow releases decode 16-bit PNGs, and scaled
  the same way; values outside 0..65535 have no known scale and raise ValueError rather than being guessed.
* `F` (32-bit float): read on the 0..255 scale and clipped, Pillow's own convention for F -> L; NaN -> 0.
  JPEG, PNG and WebP never decode to it.
* A grey transparent colour (a 16-bit PNG's tRNS) becomes an alpha band.
* 8-bit modes are left to Pillow's `convert("RGB")`, except that transparency (an alpha band, or a palette
  or tRNS transparent colour) is composited onto white -- exactly what the trainer's transformers image
  processor did before, so its pixels do not change, and what keeps a transparent chart from being pasted
  black (the colour under a transparent pixel is often black).

Pillow's own 16-bit RGB and grey+alpha PNGs decode to 8-bit `RGB`, `RGBA` and `LA` already.
"""

from __future__ import annotations

import numpy as np

_WHITE = (255, 255, 255, 255)


def is_high_depth(mode: str) -> bool:
    """True for the modes `convert("RGB")` clips instead of scaling: more than 8 bits a grey sample."""
    return mode.startswith("I;16") or mode in ("I", "F")


def to_8bit(im):
    """`im` itself when its samples are 8-bit already, else its grey scaled to an `L` image (`LA` when a
    transparent grey value is set)."""
    from PIL import Image

    if not is_high_depth(im.mode):
        return im
    values = np.asarray(im)
    if im.mode == "F":
        grey = np.rint(np.clip(np.nan_to_num(values, nan=0.0), 0, 255))
    else:
        if im.mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"mode I image holds values {values.min()}..{values.max()}, outside the 16-bit "
                             f"range 0..65535: its scale is unknown")
        grey = (values.astype(np.uint32) * 255 + 32767) // 65535  # round(v / 257) in integers
    out = Image.fromarray(grey.astype(np.uint8))
    transparent = im.info.get("transparency")
    if isinstance(transparent, int) and im.mode != "F":
        alpha = Image.fromarray(np.where(values == transparent, 0, 255).astype(np.uint8))
        out = Image.merge("LA", (out, alpha))
    return out


def to_rgb(im):
    """An 8-bit RGB image of `im` (see the module docstring); `im` itself when it is RGB already, with no
    transparent colour. Raises ValueError for a mode `I` image outside the 16-bit range."""
    from PIL import Image

    im = to_8bit(im)
    if "A" in im.getbands() or im.info.get("transparency") is not None:
        return Image.alpha_composite(Image.new("RGBA", im.size, _WHITE), im.convert("RGBA")).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")
