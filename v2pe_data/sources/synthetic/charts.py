"""Chart renderers: bar (vertical, horizontal, grouped), line (one or two series) and pie.

Every plotted value is printed next to its mark, so "what is the value of X" has a readable answer and
the exact answer is the printed label. Label sizes shrink until labels cannot touch their neighbours.
"""

from __future__ import annotations

import math

from PIL import Image

from .layout import chart_body, line_height, smaller, snap
from .pen import Pen, fit_size, text_height, text_width, wrap
from .spec import ChartSpec

PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
INK = (25, 25, 25)
GREY = (95, 95, 95)
GRID = (225, 225, 225)
AXIS = (60, 60, 60)


def nice_ticks(lo: float, hi: float, target: int = 5) -> tuple[list[float], int]:
    """Round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 times a power of ten), and the
    number of decimals their labels need."""
    span = max(hi - lo, 1e-9)
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(f * mag for f in (1, 2, 2.5, 5, 10) if f * mag >= raw * 0.999)
    start = math.floor(lo / step + 1e-9) * step
    count = math.ceil((hi - start) / step - 1e-9)
    ticks = [start + i * step for i in range(count + 1)]
    decimals = next(d for d in range(6) if abs(step * 10**d - round(step * 10**d)) < 1e-6)
    return ticks, decimals


def _tick_label(v: float, decimals: int) -> str:
    return f"{v:,.{decimals}f}"


def _frame(s: ChartSpec, strict: bool) -> tuple[Image.Image, Pen, int, tuple[float, float, float, float]]:
    """White canvas, centred title, source note; returns the box left for the plot."""
    image = Image.new("RGB", (s.width, s.height), "white")
    pen = Pen(image, strict)
    body = chart_body(s.width, s.height)
    pad = round(min(s.width, s.height) * 0.045)
    size = snap(body * 1.3)
    lines = wrap(s.title, size, s.width - 2 * pad)
    while len(lines) > 2 and size > body:
        size = smaller(size)
        lines = wrap(s.title, size, s.width - 2 * pad)
    y = pen.lines(s.width / 2, pad, lines, size, fill=INK, bold=True, align="center", leading=line_height(size))
    small = snap(body * 0.85)
    note_y = s.height - pad - text_height(small)
    pen.text(pad, note_y, s.source_note, small, fill=GREY)
    return image, pen, body, (pad, y + body * 0.6, s.width - pad, note_y - body * 0.6)


def _legend_row(pen: Pen, right: float, y: float, names: list[str], size: int, colours) -> float:
    """Swatch-and-name entries in one row ending at `right`; returns its width."""
    sw = size * 0.9
    widths = [sw + size * 0.4 + text_width(n, size) for n in names]
    total = sum(widths) + size * 1.2 * (len(names) - 1)
    x = right - total
    for name, w, c in zip(names, widths, colours):
        top = y + (text_height(size) - sw) / 2
        pen.draw.rectangle((x, top, x + sw, top + sw), fill=c)
        pen.text(x + sw + size * 0.4, y, name, size, fill=INK)
        x += w + size * 1.2
    return total


def _values(s: ChartSpec) -> list[list[float]]:
    scale = 10**s.decimals
    return [[v / scale for v in series.values] for series in s.series]


def _y_axis(pen: Pen, ticks: list[float], decimals: int, left: float, right: float, y_of, size: int) -> None:
    for t in ticks:
        ty = y_of(t)
        pen.draw.line((left, ty, right, ty), fill=GRID, width=1)
        pen.text(left - size * 0.4, ty - text_height(size) / 2, _tick_label(t, decimals), size, fill=GREY,
                 align="right")


# ------------------------------------------------------------------------------------------------ bar


def _unit_and_legend(pen: Pen, s: ChartSpec, body: int, box):
    """The unit above the plot and, for several series, a legend row: (values, series, categories, colours, top)."""
    l, t, r, _ = box
    vals = _values(s)
    k, n = len(vals), len(s.categories)
    colours = [PALETTE[j] for j in range(k)]
    pen.text(l, t, s.unit, body, fill=GREY)
    if k > 1:
        _legend_row(pen, r, t, [ser.name for ser in s.series], body, colours)
    return vals, k, n, colours, t + line_height(body)


def _bar_vertical(pen: Pen, s: ChartSpec, body: int, box) -> None:
    l, t, r, b = box
    vals, k, n, colours, top = _unit_and_legend(pen, s, body, box)
    ticks, dec = nice_ticks(0, max(max(v) for v in vals))
    left = l + max(text_width(_tick_label(x, dec), body) for x in ticks) + body * 0.6
    slot = (r - left) / n

    # Category names wrap onto at most two lines under their bar.
    csize = body
    while True:
        cat_lines = [wrap(c, csize, slot * 0.92) for c in s.categories]
        if csize <= 10 or all(len(ls) <= 2 and all(text_width(x, csize) <= slot * 0.92 for x in ls)
                              for ls in cat_lines):
            break
        csize = smaller(csize)
    rows = max(len(ls) for ls in cat_lines)
    x_label_y = b - text_height(body)
    axis_y = x_label_y - body * 0.5 - rows * line_height(csize) - body * 0.3

    group = slot * (0.62 if k == 1 else 0.8)
    bw = group / k
    labels = [[s.value(i, j) for i in range(n)] for j in range(k)]
    vsize = fit_size([x for ls in labels for x in ls], body, slot * 0.92 if k == 1 else bw * 0.96)
    plot_top = top + line_height(vsize)
    y_of = lambda v: axis_y - v / ticks[-1] * (axis_y - plot_top)  # noqa: E731
    _y_axis(pen, ticks, dec, left, r, y_of, body)

    for i in range(n):
        cx = left + slot * (i + 0.5)
        for j in range(k):
            bx = cx - group / 2 + j * bw
            by = y_of(vals[j][i])
            pen.draw.rectangle((bx + 1, by, bx + bw - 1, axis_y), fill=colours[j])
            pen.text(bx + bw / 2, by - text_height(vsize) - 2, labels[j][i], vsize, fill=INK, align="center")
        pen.lines(cx, axis_y + body * 0.3, cat_lines[i], csize, fill=INK, align="center", leading=line_height(csize))
    pen.draw.line((left, axis_y, r, axis_y), fill=AXIS, width=2)
    pen.text((left + r) / 2, x_label_y, s.x_label, body, fill=GREY, bold=True, align="center")


def _bar_horizontal(pen: Pen, s: ChartSpec, body: int, box) -> None:
    l, t, r, b = box
    vals = _values(s)
    k, n = len(vals), len(s.categories)
    colours = [PALETTE[j] for j in range(k)]
    top = t
    if k > 1:
        _legend_row(pen, r, t, [ser.name for ser in s.series], body, colours)
        top += line_height(body)
    unit_y = b - text_height(body)
    axis_y = unit_y - body * 0.3 - line_height(body) - body * 0.2
    slot = (axis_y - top) / n
    bh = slot * 0.72 / k

    csize = fit_size(list(s.categories), body, (r - l) * 0.32)
    while csize > 10 and text_height(csize) > slot * 0.95:
        csize = smaller(csize)
    labels = [[s.value(i, j) for i in range(n)] for j in range(k)]
    vsize = body
    while vsize > 10 and text_height(vsize) > (bh if k > 1 else slot * 0.95):
        vsize = smaller(vsize)
    left = l + max(text_width(c, csize) for c in s.categories) + body * 0.6
    right = r - max(text_width(x, vsize) for ls in labels for x in ls) - body * 0.5
    ticks, dec = nice_ticks(0, max(max(v) for v in vals), target=4)
    x_of = lambda v: left + v / ticks[-1] * (right - left)  # noqa: E731

    for tk in ticks:
        tx_ = x_of(tk)
        pen.draw.line((tx_, top, tx_, axis_y), fill=GRID, width=1)
        pen.text(tx_, axis_y + body * 0.3, _tick_label(tk, dec), body, fill=GREY, align="center")
    for i in range(n):
        cy = top + slot * (i + 0.5)
        pen.text(left - body * 0.4, cy - text_height(csize) / 2, s.categories[i], csize, fill=INK, align="right")
        for j in range(k):
            by = cy - bh * k / 2 + j * bh
            bx = x_of(vals[j][i])
            pen.draw.rectangle((left, by + 1, bx, by + bh - 1), fill=colours[j])
            pen.text(bx + body * 0.3, by + (bh - text_height(vsize)) / 2, labels[j][i], vsize, fill=INK)
    pen.draw.line((left, top, left, axis_y), fill=AXIS, width=2)
    pen.text((left + right) / 2, unit_y, s.unit, body, fill=GREY, bold=True, align="center")


# ----------------------------------------------------------------------------------------------- line


def _line(pen: Pen, s: ChartSpec, body: int, box) -> None:
    l, t, r, b = box
    vals, k, n, colours, top = _unit_and_legend(pen, s, body, box)
    lo, hi = min(min(v) for v in vals), max(max(v) for v in vals)
    margin = (hi - lo) * 0.08
    ticks, dec = nice_ticks(max(0.0, lo - margin) if lo >= 0 else lo - margin, hi + margin)
    left = l + max(text_width(_tick_label(x, dec), body) for x in ticks) + body * 0.6
    slot = (r - left) / n
    x_label_y = b - text_height(body)
    axis_y = x_label_y - body * 0.5 - line_height(body) - body * 0.3

    labels = [[s.value(i, j) for i in range(n)] for j in range(k)]
    vsize = fit_size([x for ls in labels for x in ls], body, slot * 0.92)
    dot = max(3, body // 4)
    # Labels sit above the upper point and below the lower one, so the plot keeps a label's room at both ends.
    room = text_height(vsize) + dot + 3
    plot_top, plot_bottom = top + room, axis_y - room
    y_of = lambda v: plot_bottom - (v - ticks[0]) / (ticks[-1] - ticks[0]) * (plot_bottom - plot_top)  # noqa: E731
    _y_axis(pen, ticks, dec, left, r, y_of, body)
    pen.draw.line((left, axis_y, r, axis_y), fill=AXIS, width=2)

    xs = [left + slot * (i + 0.5) for i in range(n)]
    width = max(2, body // 7)
    for j in range(k):
        pts = [(x, y_of(v)) for x, v in zip(xs, vals[j])]
        pen.draw.line(pts, fill=colours[j], width=width, joint="curve")
        for x, y in pts:
            pen.draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=colours[j], outline="white")
    th = text_height(vsize)
    for i, x in enumerate(xs):
        for j in range(k):
            y = y_of(vals[j][i])
            if k > 1:  # two series: the upper point's label goes above, the lower one's below
                above = j == max(range(k), key=lambda q: (vals[q][i], -q))
            else:  # one series: away from the line, i.e. below a dip and above anything else
                near = [vals[j][q] for q in (i - 1, i + 1) if 0 <= q < n]
                above = vals[j][i] >= sum(near) / len(near)
            ly = y - dot - 3 - th if above else y + dot + 3
            w = text_width(labels[j][i], vsize)
            # A white backing keeps the number legible where a line passes behind it.
            pen.draw.rectangle((x - w / 2 - 2, ly, x + w / 2 + 2, ly + th), fill="white")
            pen.text(x, ly, labels[j][i], vsize, fill=colours[j] if k > 1 else INK, align="center")
        pen.text(x, axis_y + body * 0.3, s.categories[i], body, fill=INK, align="center")
    pen.text((left + r) / 2, x_label_y, s.x_label, body, fill=GREY, bold=True, align="center")


# ------------------------------------------------------------------------------------------------ pie


def _luminance(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _pie(pen: Pen, s: ChartSpec, body: int, box) -> None:
    l, t, r, b = box
    shares = s.series[0].values
    total = sum(shares)
    n = len(shares)
    entries = [f"{c} ({s.value(i)}%)" for i, c in enumerate(s.categories)]
    sw = body * 0.9
    step = line_height(body) * 1.15
    side = s.width / s.height >= 1.15
    if side:  # legend to the right of the pie, vertically centred
        lsize = fit_size(entries, body, (r - l) * 0.45 - sw - body * 0.5)
        legend_w = sw + body * 0.5 + max(text_width(e, lsize) for e in entries)
        pie_box = (l, t, r - legend_w - body, b)
        lx, ly = r - legend_w, (t + b) / 2 - n * step / 2
    else:  # legend under the pie, one entry a row
        lsize = fit_size(entries, body, (r - l) - sw - body * 0.5)
        legend_h = n * step
        pie_box = (l, t, r, b - legend_h - body * 0.5)
        legend_w = sw + body * 0.5 + max(text_width(e, lsize) for e in entries)
        lx, ly = (l + r) / 2 - legend_w / 2, b - legend_h
    px0, py0, px1, py1 = pie_box
    radius = min(px1 - px0, py1 - py0) / 2 * 0.95
    cx, cy = (px0 + px1) / 2, (py0 + py1) / 2

    start = -90.0
    for i, v in enumerate(shares):
        extent = v / total * 360
        colour = PALETTE[i % len(PALETTE)]
        # Fill only: Pillow's wide pie outlines cost ~1 ms a slice; white spokes separate slices instead.
        pen.draw.pieslice((cx - radius, cy - radius, cx + radius, cy + radius), start, start + extent, fill=colour)
        # The share is also printed on the slice when the slice is wide enough to hold it.
        label = f"{s.value(i)}%"
        mid = math.radians(start + extent / 2)
        at = radius * 0.64
        lw = text_width(label, body)
        if at * math.radians(extent) >= 1.5 * lw and text_height(body) < radius * 0.3:
            ink = (255, 255, 255) if _luminance(colour) < 150 else INK
            pen.text(cx + at * math.cos(mid), cy + at * math.sin(mid) - text_height(body) / 2, label, body,
                     fill=ink, align="center")
        start += extent

    if n > 1:
        angle = -90.0
        for v in shares:
            a = math.radians(angle)
            pen.draw.line((cx, cy, cx + radius * math.cos(a), cy + radius * math.sin(a)), fill="white",
                          width=max(2, body // 8))
            angle += v / total * 360

    for i, entry in enumerate(entries):
        y = ly + i * step
        top = y + (text_height(lsize) - sw) / 2
        pen.draw.rectangle((lx, top, lx + sw, top + sw), fill=PALETTE[i % len(PALETTE)])
        pen.text(lx + sw + body * 0.5, y, entry, lsize, fill=INK)


def render_chart(s: ChartSpec, strict: bool = False) -> tuple[Image.Image, Pen]:
    image, pen, body, box = _frame(s, strict)
    if s.kind == "bar_chart":
        (_bar_horizontal if s.horizontal else _bar_vertical)(pen, s, body, box)
    elif s.kind == "line_chart":
        _line(pen, s, body, box)
    elif s.kind == "pie_chart":
        _pie(pen, s, body, box)
    else:
        raise ValueError(f"not a chart kind: {s.kind!r}")
    return image, pen

