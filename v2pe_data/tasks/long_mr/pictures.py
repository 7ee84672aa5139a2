"""Image needles: small named pictures (a coloured shape on a framed tile) and the pixel work on hosts.

Every function that makes bytes is module-level and takes only picklable values, so an `Item` whose
`load` is a `functools.partial` of one crosses into the build's worker processes. Each decodes at most one
image (the host, or the picture being cut) and drops it before returning the encoded bytes.

Pasted pictures are square, their side a multiple of 16 and their corner on the 16-pixel grid: a JPEG
re-encoding (4:2:0 chroma, 16x16 blocks) then never mixes host and picture pixels in one block, so the
pasted region decodes to (almost) the picture itself.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

GRID = 16  # JPEG macro-block size under 4:2:0 subsampling
CHOICE_SIDE = 224  # choice and standalone needle pictures: half a tile, one tile of tokens
MIN_SIDE, MAX_SIDE = 64, 192
JPEG_QUALITY = 90

SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "ring")
COLOURS = {
    "red": (214, 39, 40), "orange": (255, 127, 14), "yellow": (240, 200, 20), "green": (44, 160, 44),
    "blue": (31, 90, 220), "purple": (148, 60, 190), "pink": (240, 110, 190), "brown": (140, 86, 45),
}
BACKGROUND = (236, 236, 236)
FRAME = (40, 40, 40)


@dataclass(frozen=True, slots=True)
class Picture:
    shape: str
    colour: str

    def __post_init__(self) -> None:
        if self.shape not in SHAPES or self.colour not in COLOURS:
            raise ValueError(f"unknown picture {self.colour!r} {self.shape!r}")

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def with_article(self) -> str:
        """'a green hexagon', 'an orange star': every colour name starts with its own sound."""
        return f"{'an' if self.colour[0] in 'aeiou' else 'a'} {self.name}"


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    def ring(n: int, radius: float, phase: float) -> list[tuple[float, float]]:
        angles = [phase + 2 * math.pi * k / n for k in range(n)]
        return [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in angles]

    if shape == "triangle":
        return ring(3, r, -math.pi / 2)
    if shape == "diamond":
        return ring(4, r, -math.pi / 2)
    if shape == "hexagon":
        return ring(6, r, 0.0)
    if shape == "star":
        outer, inner = ring(5, r, -math.pi / 2), ring(5, r * 0.42, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    if shape == "cross":
        a = r * 0.36
        return [(cx - a, cy - r), (cx + a, cy - r), (cx + a, cy - a), (cx + r, cy - a), (cx + r, cy + a),
                (cx + a, cy + a), (cx + a, cy + r), (cx - a, cy + r), (cx - a, cy + a), (cx - r, cy + a),
                (cx - r, cy - a), (cx - a, cy - a)]
    raise ValueError(shape)


def draw(picture: Picture, side: int):
    """The picture as an RGB image of side x side: the shape in its colour inside a dark frame."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (side, side), BACKGROUND)
    d = ImageDraw.Draw(im)
    frame = max(2, side // 32)
    d.rectangle((0, 0, side - 1, side - 1), outline=FRAME, width=frame)
    colour = COLOURS[picture.colour]
    c, r = side / 2, side * 0.36
    box = (c - r, c - r, c + r, c + r)
    if picture.shape == "circle":
        d.ellipse(box, fill=colour)
    elif picture.shape == "square":
        d.rectangle((c - r * 0.85, c - r * 0.85, c + r * 0.85, c + r * 0.85), fill=colour)
    elif picture.shape == "ring":
        d.ellipse(box, outline=colour, width=max(3, round(r * 0.35)))
    else:
        d.polygon(_polygon(picture.shape, c, c, r), fill=colour)
    return im


def encode(im, ext: str) -> bytes:
    """Fixed encoder settings, no metadata: the same pixels always give the same bytes."""
    buf = io.BytesIO()
    if ext == "jpg":
        im = im if im.mode in ("RGB", "L") else im.convert("RGB")
        im.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False, subsampling="4:2:0")
    elif ext == "png":
        im.save(buf, format="PNG", optimize=False, compress_level=3)
    elif ext == "webp":
        im.save(buf, format="WEBP", quality=JPEG_QUALITY, method=4)
    else:
        raise ValueError(f"cannot encode {ext!r}; expected jpg, png or webp")
    return buf.getvalue()


def picture_png(picture: Picture, side: int = CHOICE_SIDE) -> bytes:
    """A standalone picture (a choice, or a needle inserted on its own) as PNG: flat colours, lossless."""
    return encode(draw(picture, side), "png")


def _open_rgb(data: bytes):
    from PIL import Image

    from v2pe_common.images import to_rgb

    with Image.open(io.BytesIO(data)) as im:
        return to_rgb(im).copy()


def paste_pictures(host_load, pastes: tuple[tuple[Picture, tuple[int, int, int, int]], ...], ext: str) -> bytes:
    """The host image with each picture drawn into its box [x0, y0, x1, y1], re-encoded as `ext`."""
    canvas = _open_rgb(host_load())
    for picture, (x0, y0, x1, y1) in pastes:
        canvas.paste(draw(picture, x1 - x0), (x0, y0))
    return encode(canvas, ext)


def crop_piece(source_load, box: tuple[int, int, int, int], ext: str) -> bytes:
    """One piece [x0, y0, x1, y1] of the source image, encoded as `ext`."""
    return encode(_open_rgb(source_load()).crop(box), ext)


# ------------------------------------------------------------------------------------------ geometry


def paste_side(width: int, height: int) -> int:
    """Side of a picture pasted into a width x height host: about a sixth of its short side, on the grid."""
    side = (min(width, height) // 6) // GRID * GRID
    return max(MIN_SIDE, min(MAX_SIDE, side))


def paste_cells(width: int, height: int, side: int) -> list[tuple[int, int]]:
    """Top-left corners (on the 16-px grid) of non-overlapping side x side boxes that fit in the host."""
    step = side + GRID
    cols = (width - GRID) // step
    rows = (height - GRID) // step
    return [(GRID + c * step, GRID + r * step) for r in range(rows) for c in range(cols)]


def strip_boxes(width: int, height: int, k: int) -> list[tuple[int, int, int, int]]:
    """k horizontal strips covering the image top to bottom; the last takes the remainder."""
    h = height // k
    return [(0, i * h, width, height if i == k - 1 else (i + 1) * h) for i in range(k)]
