"""Font sizes and page metrics: plain arithmetic shared by spec drawing (how much content fits) and rendering,
and the page sizes specs are drawn at (`page_size`, capped at MAX_PIXELS).

Sizes snap to a short ladder so the glyph cache in `pen` is reused across pages of different widths.
"""

from __future__ import annotations

import bisect
import functools
import math
import random
from dataclasses import dataclass

LADDER = (10, 11, 12, 13, 14, 15, 16, 17, 18, 20, 22, 24, 26, 28, 30, 32, 36, 40, 44, 48, 56)
MIN_SIZE = LADDER[0]

# Aileron's advance widths as a fraction of the font size (digits 0.60, lower case 0.51, capitals 0.65),
# rounded up for mixed-case text: used only to plan how much content a page takes; rendering measures the
# real widths and shrinks a font where a plan was too optimistic.
EM_DIGIT = 0.62
EM_TEXT = 0.58


def snap(px: float) -> int:
    """The largest ladder size not above px (the smallest one if px is below it)."""
    return LADDER[max(0, bisect.bisect_right(LADDER, px) - 1)]


def smaller(size: int) -> int:
    """The next ladder size down (MIN_SIZE stays MIN_SIZE)."""
    return LADDER[max(0, bisect.bisect_left(LADDER, size) - 1)]


def line_height(size: int) -> int:
    return round(size * 1.45)


def row_height(size: int) -> int:
    """A table row: text plus breathing room for rules and zebra fills."""
    return round(size * 1.9)


def estimate_width(text: str, size: int) -> float:
    """A generous estimate of the drawn width of mixed-case text."""
    digits = sum(c.isdigit() for c in text)
    return size * (EM_DIGIT * digits + EM_TEXT * (len(text) - digits))


@dataclass(frozen=True, slots=True)
class PageMetrics:
    """Sizes for a document page, derived from its pixel size only."""

    margin: int
    body: int
    small: int
    h2: int
    h1: int

    @property
    def line(self) -> int:
        return line_height(self.body)

    @property
    def row(self) -> int:
        return row_height(self.body)


@functools.lru_cache(maxsize=4096)
def page_metrics(width: int, height: int) -> PageMetrics:
    # About 52 body-size ems across the page, like a printed page; landscape pages are sized by their
    # height too, or text on a wide, short page would be too large to hold any content.
    ref = min(width, 1.3 * height)
    body = snap(ref / 52)
    return PageMetrics(
        margin=round(width * 0.06),
        body=body,
        small=snap(body * 0.85),
        h2=snap(body * 1.25),
        h1=snap(body * 1.7),
    )


def chart_body(width: int, height: int) -> int:
    """Tick and legend text size for a chart: grows with the chart's linear size."""
    return snap(min(28.0, max(12.0, (width * height) ** 0.5 / 38)))


MAX_PIXELS = 3_700_000  # about 1700 x 2200: keeps the largest page's encode near 10 ms


def cap_area(width: int, ratio: float) -> tuple[int, int]:
    """(width, height) for width/height == ratio, shrunk to stay under MAX_PIXELS."""
    height = width / ratio
    if width * height > MAX_PIXELS:
        width = math.sqrt(MAX_PIXELS * ratio)
        height = width / ratio
    return int(width), int(height)


def page_size(rng: random.Random, landscape_p: float = 0.0) -> tuple[int, int]:
    """A page: mostly letter/A4-like portrait, some taller slips, optionally landscape."""
    u = rng.random()
    if u < landscape_p:
        return cap_area(rng.randint(900, 1700), rng.uniform(1.25, 1.6))
    u = rng.random()
    if u < 0.6:
        ratio = rng.uniform(0.72, 0.82)  # letter-like
    elif u < 0.85:
        ratio = rng.uniform(0.62, 0.71)  # A4-like
    else:
        ratio = rng.uniform(0.5, 0.58)  # tall slip
    return cap_area(rng.randint(700, 1700), ratio)
