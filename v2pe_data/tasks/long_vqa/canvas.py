"""Paste-mode canvases: small images pasted into a grid of labelled cells, rendered one canvas at a time.

Only one sub-image is decoded at a time; the canvas is encoded to JPEG and dropped before the next one.
Sub-images become RGB through `v2pe_common.images.to_rgb`, as in the trainer: high-bit-depth grey is
scaled, not clipped to white, and transparency is composited onto white.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass

from v2pe_common.images import to_rgb
from v2pe_common.tiling import TILE_SIZE

from ...records import Item

LABEL_HEIGHT = 44
PADDING = 8
JPEG_QUALITY = 90


@dataclass(frozen=True)
class CanvasLayout:
    grid: int = 3  # cells per side
    cell: int = TILE_SIZE  # pixels per cell side: one InternVL tile

    @property
    def size(self) -> int:
        return self.grid * self.cell

    @property
    def cells(self) -> int:
        return self.grid * self.grid

    def box(self, cell: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the picture area of `cell` (row-major), below its label."""
        r, c = divmod(cell, self.grid)
        x0, y0 = c * self.cell, r * self.cell
        return (x0 + PADDING, y0 + LABEL_HEIGHT, x0 + self.cell - PADDING, y0 + self.cell - PADDING)


@functools.lru_cache(maxsize=4)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def render_canvas(layout: CanvasLayout, items: Sequence[Item], labels: Sequence[str]) -> bytes:
    """JPEG bytes of one canvas: items[i] fitted into cell i under its label; empty cells stay white."""
    from PIL import Image, ImageDraw, ImageOps

    canvas = Image.new("RGB", (layout.size, layout.size), "white")
    draw = ImageDraw.Draw(canvas)
    for cell, (item, label) in enumerate(zip(items, labels)):
        x0, y0, x1, y1 = layout.box(cell)
        with Image.open(io.BytesIO(item.load())) as im:
            fitted = ImageOps.contain(to_rgb(im), (x1 - x0, y1 - y0), Image.Resampling.BICUBIC)
        canvas.paste(fitted, (x0 + (x1 - x0 - fitted.width) // 2, y0 + (y1 - y0 - fitted.height) // 2))
        cx, cy = x0 - PADDING, y0 - LABEL_HEIGHT
        draw.rectangle((cx + 2, cy + 2, cx + layout.cell - 3, cy + layout.cell - 3), outline=(60, 60, 60), width=2)
        draw.rectangle((cx + 2, cy + 2, cx + 110, cy + LABEL_HEIGHT - 4), fill=(200, 30, 30))
        draw.text((cx + 10, cy + 6), label, fill="white", font=_font(28))
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=JPEG_QUALITY, optimize=False)
    return out.getvalue()


def canvas_item(sample_id: str, index: int, split: str, layout: CanvasLayout, items: Sequence[Item],
                labels: Sequence[str]) -> Item:
    """A canvas as an Item of the sample: size known up front, bytes rendered on load()."""
    cid = f"{sample_id}-canvas{index:03d}"
    return Item(dataset="paste", split=split, id=cid, doc_id=cid, width=layout.size, height=layout.size, ext="jpg",
                question="", answers=("",), load=functools.partial(render_canvas, layout, tuple(items), tuple(labels)))
