"""Fast text drawing with Pillow's bundled font, and a check that a page's text is readable.

FreeType rasterises every glyph of every `ImageDraw.text` call afresh (about 1 ms for a line of prose),
which would dominate a page's render time. Pages reuse a small vocabulary, so the pen rasterises each
word once per size, keeps the masks in a bounded cache, and stamps them with `ImageDraw.bitmap`: about
15x faster, and the pixels do not depend on whether a mask came from the cache. Tokens with digits are
stamped glyph by glyph, so numbers (which rarely repeat) also hit the cache.
"""

from __future__ import annotations

import functools
import math

from PIL import Image, ImageDraw, ImageFont

_PAD = 2  # room around a word mask for glyphs that overhang their advance box


@functools.lru_cache(maxsize=None)
def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled TrueType font (Aileron Regular) at `size` px: no font files, no downloads."""
    f = ImageFont.load_default(size=size)
    if not isinstance(f, ImageFont.FreeTypeFont):  # Pillow built without FreeType: only a bitmap font
        raise RuntimeError("the synthetic source needs Pillow with FreeType support (Pillow >= 10.1)")
    return f


@functools.lru_cache(maxsize=None)
def text_height(size: int) -> int:
    """Ascent plus descent: the height of a drawn line's ink box."""
    ascent, descent = font(size).getmetrics()
    return ascent + descent


@functools.lru_cache(maxsize=32768)
def _advance(size: int, token: str) -> float:
    return font(size).getlength(token)


@functools.lru_cache(maxsize=8192)
def _mask(size: int, token: str) -> Image.Image:
    f = font(size)
    mask = Image.new("L", (math.ceil(f.getlength(token)) + 2 * _PAD, text_height(size) + 2 * _PAD), 0)
    ImageDraw.Draw(mask).text((_PAD, _PAD), token, font=f, fill=255)
    return mask


def _by_glyph(token: str) -> bool:
    return any(c.isdigit() for c in token)


@functools.lru_cache(maxsize=32768)
def _token_width(size: int, token: str) -> float:
    if _by_glyph(token):
        return sum(_advance(size, c) for c in token)
    return _advance(size, token)


def text_width(text: str, size: int) -> float:
    """Width of `text` exactly as `Pen.text` lays it out."""
    tokens = text.split(" ")
    return sum(_token_width(size, t) for t in tokens) + _advance(size, " ") * (len(tokens) - 1)


@functools.lru_cache(maxsize=1024)
def has_glyph(char: str) -> bool:
    """Whether the bundled font draws `char` as itself rather than the missing-glyph box."""
    f = font(20)
    missing = f.getmask("\ue000")  # a private-use code point: certainly absent
    got = f.getmask(char)
    return not (got.size == missing.size and bytes(got) == bytes(missing)) or char == " "


def wrap(text: str, size: int, max_width: float) -> list[str]:
    """Greedy word wrap; a single word wider than max_width gets a line of its own."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        trial = f"{current} {word}" if current else word
        if current and text_width(trial, size) > max_width:
            lines.append(current)
            current = word
        else:
            current = trial
    if current:
        lines.append(current)
    return lines


def fit_size(texts: list[str], size: int, max_width: float, floor: int = 10) -> int:
    """The largest ladder size <= size at which every text is at most max_width wide."""
    from .layout import smaller

    while size > floor and any(text_width(t, size) > max_width for t in texts):
        size = smaller(size)
    return size


class LayoutError(AssertionError):
    """A rendered page broke a readability rule (text off the page, text over text, a missing glyph)."""


class Pen:
    """Draws text and shapes on one image; in strict mode it records every text box for `check`."""

    def __init__(self, image: Image.Image, strict: bool = False):
        self.image = image
        self.draw = ImageDraw.Draw(image)
        self.strict = strict
        self._boxes: list[tuple[float, float, float, float, str]] = []

    def text(self, x: float, y: float, text: str, size: int, fill=0, bold: bool = False,
             align: str = "left") -> float:
        """Draw one line with its top at y; x is its left edge, right edge or centre per `align`.

        Returns the drawn width.
        """
        width = text_width(text, size)
        if align == "right":
            x -= width
        elif align == "center":
            x -= width / 2
        if self.strict:
            self._boxes.append((x, y, x + width, y + text_height(size), text))
        # Faux bold: the font has one weight, so bold is the same mask struck again 1-2 px to the right.
        strikes = range(1 + max(1, size // 18)) if bold else range(1)
        space = _advance(size, " ")
        top = round(y) - _PAD
        for token in text.split(" "):
            if token:
                if _by_glyph(token):
                    gx = x
                    for c in token:
                        self._stamp(gx, top, size, c, fill, strikes)
                        gx += _advance(size, c)
                else:
                    self._stamp(x, top, size, token, fill, strikes)
            x += _token_width(size, token) + space
        return width

    def _stamp(self, x: float, top: int, size: int, token: str, fill, strikes: range) -> None:
        mask = _mask(size, token)
        left = round(x) - _PAD
        for dx in strikes:
            self.draw.bitmap((left + dx, top), mask, fill=fill)

    def lines(self, x: float, y: float, lines: list[str], size: int, fill=0, bold: bool = False,
              align: str = "left", leading: int | None = None) -> float:
        """Draw lines top-down; returns the y below the last one."""
        step = leading or round(size * 1.45)
        for line in lines:
            self.text(x, y, line, size, fill=fill, bold=bold, align=align)
            y += step
        return y

    def check(self) -> None:
        """Raise LayoutError if any text left the page, touched other text, or used a missing glyph."""
        if not self.strict:
            raise RuntimeError("check() needs a strict pen")
        width, height = self.image.size
        problems = []
        for x0, y0, x1, y1, t in self._boxes:
            if x0 < -0.5 or y0 < -0.5 or x1 > width + 0.5 or y1 > height + 0.5:
                problems.append(f"off the page: {t!r} at ({x0:.0f},{y0:.0f},{x1:.0f},{y1:.0f})")
            missing = sorted({c for c in t if not has_glyph(c)})
            if missing:
                problems.append(f"missing glyphs {missing} in {t!r}")
        boxes = sorted(self._boxes, key=lambda b: b[1])
        for i, (ax0, ay0, ax1, ay1, at) in enumerate(boxes):
            for bx0, by0, bx1, by1, bt in boxes[i + 1:]:
                if by0 >= ay1 - 1:
                    break
                if bx0 < ax1 - 1 and ax0 < bx1 - 1:
                    problems.append(f"overlap: {at!r} and {bt!r}")
        if problems:
            raise LayoutError("; ".join(problems[:8]) + (f" (+{len(problems) - 8} more)" if len(problems) > 8 else ""))
