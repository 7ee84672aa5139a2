"""Ruled tables: the grid primitive shared by invoices and reports, and the standalone table page."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from .layout import line_height, row_height, smaller, snap
from .pen import Pen, text_height, text_width
from .spec import DataTable, TableSpec

HEADER_FILL = 222
ZEBRA_FILL = 244
RULE = 90


def grid_widths(header: Sequence[str], rows: Sequence[Sequence[str]], width: float, size: int,
                flex: int) -> tuple[int, list[float]]:
    """(font size, column widths) for a grid spanning `width`.

    Columns get their natural width (widest cell plus padding); the font shrinks until that fits. Spare
    room goes half to the `flex` column (descriptions, labels), half evenly to the rest, so numbers
    keep a compact right-aligned block the way printed tables look.
    """
    while True:
        pad = size * 0.7
        natural = [max(text_width(t, size) for t in column) + 2 * pad + 3  # +3: faux-bold header
                   for column in zip(header, *rows)]
        if sum(natural) <= width or size <= 10:
            break
        size = smaller(size)
    spare = max(0.0, width - sum(natural))
    others = len(natural) - 1
    widths = [w + (spare / 2 if i == flex else spare / 2 / others) for i, w in enumerate(natural)]
    if others == 0:
        widths[flex] = width
    return size, widths


def draw_grid(pen: Pen, x: float, y: float, width: float, header: Sequence[str], rows: Sequence[Sequence[str]],
              align: Sequence[str], size: int, flex: int = 0, footer: Sequence[Sequence[str]] = ()) -> float:
    """Draw a header row, zebra-striped body rows and bold footer rows; returns the y below the table."""
    size, widths = grid_widths(header, [*rows, *footer], width, size, flex)
    pad = size * 0.7
    rh = row_height(size)
    dy = (rh - text_height(size)) / 2
    right = x + sum(widths)
    draw = pen.draw

    def put(cells: Sequence[str], top: float, bold: bool) -> None:
        cx = x
        for cell, w, a in zip(cells, widths, align):
            if a == "right":
                pen.text(cx + w - pad, top + dy, cell, size, bold=bold, align="right")
            else:
                pen.text(cx + pad, top + dy, cell, size, bold=bold)
            cx += w

    draw.rectangle((x, y, right, y + rh), fill=HEADER_FILL)
    put(header, y, bold=True)
    y += rh
    draw.line((x, y, right, y), fill=RULE, width=2)
    for i, cells in enumerate(rows):
        if i % 2:
            draw.rectangle((x, y + 1, right, y + rh), fill=ZEBRA_FILL)
        put(cells, y, bold=False)
        y += rh
    for cells in footer:
        draw.line((x, y, right, y), fill=RULE, width=2)
        put(cells, y, bold=True)
        y += rh
    draw.line((x, y, right, y), fill=RULE, width=2)
    return y


def draw_data_table(pen: Pen, x: float, y: float, width: float, table: DataTable, size: int) -> float:
    rows = [[label, *(table.cell(r, c) for c in range(len(table.columns)))]
            for r, label in enumerate(table.row_labels)]
    footer = [["Total", *(table.total_cell(c) for c in range(len(table.columns)))]] if table.total else []
    align = ["left"] + ["right"] * len(table.columns)
    return draw_grid(pen, x, y, width, [table.row_header, *table.columns], rows, align, size, flex=0, footer=footer)


def title_size(body: int) -> int:
    return snap(body * 1.2)


def render_table(spec: TableSpec, strict: bool = False) -> tuple[Image.Image, Pen]:
    """A standalone statistical table: heading, unit line, the grid, a source note."""
    image = Image.new("L", (spec.width, spec.height), 255)
    pen = Pen(image, strict)
    body = spec.body
    small = snap(body * 0.85)
    margin = round(body * 1.6)
    x, y = margin, margin
    inner = spec.width - 2 * margin
    pen.text(x, y, spec.title, spec.title_size, bold=True)
    y += line_height(spec.title_size)
    pen.text(x, y, f"All figures in {spec.unit}.", small, fill=80)
    y += line_height(small) + body // 2
    y = draw_data_table(pen, x, y, inner, spec.table, body)
    y += body // 2
    pen.text(x, y, spec.source_note, small, fill=80)
    return image, pen
