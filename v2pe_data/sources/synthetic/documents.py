"""Page renderers: invoices, forms and reports, drawn in grayscale like scanned office documents.

Grayscale is a speed choice as much as a look: a 1700 x 2200 page encodes in about 11 ms as "L" and
about 50 ms as "RGB". Each layout follows the height plan its spec was drawn with (see `spec`), so the
content the questions ask about always fits; only prose is trimmed to the room left.
"""

from __future__ import annotations

from PIL import Image

from . import text as tx
from .layout import line_height, page_metrics, row_height
from .pen import Pen, fit_size, text_height, wrap
from .spec import FormSpec, InvoiceSpec, ReportSpec
from .tables import draw_data_table, draw_grid

INK = 20
GREY = 95
LIGHT = 150
BAND = 228


def _page(width: int, height: int, strict: bool) -> tuple[Image.Image, Pen]:
    image = Image.new("L", (width, height), 255)
    return image, Pen(image, strict)


# -------------------------------------------------------------------------------------------- invoice


def render_invoice(s: InvoiceSpec, strict: bool = False) -> tuple[Image.Image, Pen]:
    image, pen = _page(s.width, s.height, strict)
    m = page_metrics(s.width, s.height)
    x0, x1 = m.margin, s.width - m.margin
    inner = x1 - x0
    y = m.margin

    # Letterhead: seller left, the document's identifier right, as invoices print them.
    pen.text(x0, y, s.seller, m.h1, fill=INK, bold=True)
    pen.text(x1, y, "INVOICE", m.h1, fill=GREY, bold=True, align="right")
    y += line_height(m.h1)
    pen.text(x0, y, f"{s.seller_address[0]}, {s.seller_address[1]}", m.small, fill=GREY)
    y += line_height(m.small)
    pen.text(x0, y, f"Phone {s.seller_phone}", m.small, fill=GREY)
    y += line_height(m.small) + m.line
    pen.draw.line((x0, y - m.line // 2, x1, y - m.line // 2), fill=LIGHT, width=1)

    # Parties and invoice facts side by side.
    pen.text(x0, y, "BILL TO", m.small, fill=GREY, bold=True)
    left = y + line_height(m.small)
    pen.text(x0, left, s.buyer, m.body, fill=INK, bold=True)
    pen.lines(x0, left + m.line, list(s.buyer_address), m.body, fill=INK, leading=m.line)
    facts = [("Invoice no.", s.number), ("Invoice date", tx.format_date(s.issued, s.date_style)),
             ("Due date", tx.format_date(s.due, s.date_style)), ("PO number", s.po_number)]
    fx = x0 + inner * 0.52
    fy = y
    for label, value in facts:
        pen.text(fx, fy, f"{label}:", m.body, fill=GREY)
        pen.text(x1, fy, value, m.body, fill=INK, bold=label == "Invoice no.", align="right")
        fy += m.line
    y += line_height(m.small) + 4 * m.line + m.line

    header = ["#", "Description", "Qty", "Unit price", "Amount"]
    rows = [[str(i + 1), li.description, str(li.quantity), tx.fixed(li.unit_cents, 2), tx.fixed(li.amount_cents, 2)]
            for i, li in enumerate(s.lines)]
    y = draw_grid(pen, x0, y, inner, header, rows, ["right", "left", "right", "right", "right"], m.body, flex=1)
    y += m.line // 2

    totals = [("Subtotal", tx.fixed(s.subtotal_cents, 2)), (s.tax_label, tx.fixed(s.tax_cents, 2)),
              (f"Total due ({s.currency})", tx.fixed(s.total_cents, 2))]
    lx = x0 + inner * 0.55
    rh = row_height(m.body)
    dy = (rh - text_height(m.body)) / 2
    for i, (label, value) in enumerate(totals):
        last = i == len(totals) - 1
        if last:
            pen.draw.rectangle((lx - m.body * 0.5, y, x1, y + rh), fill=BAND)
        pen.text(lx, y + dy, label, m.body, fill=INK, bold=last)
        pen.text(x1 - m.body * 0.7, y + dy, value, m.body, fill=INK, bold=last, align="right")
        y += rh

    fy = s.height - m.margin - 2 * line_height(m.small)
    pen.draw.line((x0, fy - m.small // 2, x1, fy - m.small // 2), fill=LIGHT, width=1)
    note = (f"All amounts in {s.currency}. Payment terms: net {s.terms_days} days. "
            f"Please quote {s.number} with your payment.")
    pen.text(x0, fy, note, fit_size([note], m.small, inner), fill=GREY)
    pen.text(x0, fy + line_height(m.small), "Thank you for your business.", m.small, fill=GREY)
    return image, pen


# ----------------------------------------------------------------------------------------------- form


def render_form(s: FormSpec, strict: bool = False) -> tuple[Image.Image, Pen]:
    image, pen = _page(s.width, s.height, strict)
    m = page_metrics(s.width, s.height)
    x0, x1 = m.margin, s.width - m.margin
    inner = x1 - x0
    y = m.margin

    pen.text(x0, y, s.organisation, m.h2, fill=INK, bold=True)
    pen.text(x1, y, f"Form {s.number}", m.h2, fill=INK, bold=True, align="right")
    y += line_height(m.h2)
    pen.text(x0, y, s.form_name, m.h1, fill=INK, bold=True)
    y += line_height(m.h1)
    pen.text(x0, y, f"{s.department}  |  {s.revision}", m.small, fill=GREY)
    y += line_height(m.small)
    pen.text(x0, y, s.instructions, fit_size([s.instructions], m.small, inner), fill=GREY)
    y += line_height(m.small) + m.line

    gap = m.body
    half = (inner - gap) / 2
    box_h = round(m.body * 1.9)
    field_h = line_height(m.small) + box_h + round(m.body * 0.7)

    def field(x: float, top: float, w: float, f) -> None:
        pen.text(x, top, f.label, m.small, fill=GREY)
        by = top + line_height(m.small)
        pen.draw.rectangle((x, by, x + w, by + box_h), outline=LIGHT, width=1)
        size = fit_size([f.value], m.body, w - m.body)
        pen.text(x + m.body * 0.5, by + (box_h - text_height(size)) / 2, f.value, size, fill=INK)

    for section in s.sections:
        pen.draw.rectangle((x0, y, x1, y + m.row), fill=BAND)
        pen.text(x0 + m.body * 0.5, y + (m.row - text_height(m.body)) / 2, section.heading, m.body, fill=INK, bold=True)
        y += m.row + round(m.body * 0.6)
        column = 0
        for f in section.fields:
            if f.wide:
                if column:
                    y += field_h
                    column = 0
                field(x0, y, inner, f)
                y += field_h
            else:
                field(x0 + column * (half + gap), y, half, f)
                column += 1
                if column == 2:
                    y += field_h
                    column = 0
        if column:
            y += field_h

    # Tick boxes: the label on one line, the options on the next.
    pen.text(x0, y, f"{s.choice.label}:", m.body, fill=INK, bold=True)
    y += m.line
    box = round(m.body * 0.95)
    cx = x0
    for i, option in enumerate(s.choice.options):
        top = y + (text_height(m.body) - box) / 2
        pen.draw.rectangle((cx, top, cx + box, top + box), outline=INK, width=max(1, m.body // 12))
        if i == s.choice.selected:
            inset = box * 0.2
            w = max(2, m.body // 8)
            pen.draw.line((cx + inset, top + inset, cx + box - inset, top + box - inset), fill=INK, width=w)
            pen.draw.line((cx + inset, top + box - inset, cx + box - inset, top + inset), fill=INK, width=w)
        cx += box + m.body * 0.4
        cx += pen.text(cx, y, option, m.body, fill=INK) + m.body * 1.5
    y += 2 * m.line

    # Signature block: typed name over a rule, date beside it.
    sig_w = inner * 0.55
    pen.text(x0, y, s.signer, m.body, fill=INK)
    pen.text(x0 + sig_w + gap, y, tx.format_date(s.signed, s.date_style), m.body, fill=INK)
    y += m.line
    pen.draw.line((x0, y, x0 + sig_w, y), fill=INK, width=1)
    pen.draw.line((x0 + sig_w + gap, y, x1, y), fill=INK, width=1)
    y += m.line // 4
    pen.text(x0, y, "Signature of applicant", m.small, fill=GREY)
    pen.text(x0 + sig_w + gap, y, "Date", m.small, fill=GREY)
    y += 2 * m.line

    footer_y = s.height - m.margin - line_height(m.small)
    # Spare room becomes an office-use box, as real forms have, instead of an empty band.
    if footer_y - y > 5 * m.line:
        top, bottom = y, min(footer_y - m.line, y + 7 * m.line)
        pen.draw.rectangle((x0, top, x1, bottom), outline=LIGHT, width=1)
        pen.text(x0 + m.body * 0.5, top + m.body * 0.4, "FOR OFFICE USE ONLY", m.small, fill=GREY, bold=True)
        ly = top + m.body * 0.4 + 2 * m.line
        for label in ("Received by", "Reference"):
            if ly + line_height(m.small) < bottom:
                pen.text(x0 + m.body * 0.5, ly, f"{label}: ______________________", m.small, fill=LIGHT)
            ly += m.line * 1.5
    pen.text(x0, footer_y, f"{s.number}  |  {s.form_name}", m.small, fill=LIGHT)
    pen.text(x1, footer_y, "Page 1 of 1", m.small, fill=LIGHT, align="right")
    return image, pen


# --------------------------------------------------------------------------------------------- report


def _prose(pen: Pen, x: float, y: float, width: float, paragraphs: tuple[str, ...], size: int,
           bottom: float) -> float:
    """Set paragraphs until `bottom`; a paragraph that does not fit is cut after its last whole sentence."""
    lh = line_height(size)
    for para in paragraphs:
        lines = wrap(para, size, width)
        room = int((bottom - y) // lh)
        if room <= 0:
            break
        if len(lines) > room:
            lines = lines[:room]
            while lines and not lines[-1].endswith("."):
                lines.pop()
            if not lines:
                break
        y = pen.lines(x, y, lines, size, fill=INK, leading=lh)
        y += lh // 2
    return y


def render_report(s: ReportSpec, strict: bool = False) -> tuple[Image.Image, Pen]:
    image, pen = _page(s.width, s.height, strict)
    m = page_metrics(s.width, s.height)
    x0, x1 = m.margin, s.width - m.margin
    inner = x1 - x0
    y = m.margin

    pen.text(x0, y, s.organisation.upper(), m.small, fill=GREY, bold=True)
    y += line_height(m.small)
    title = wrap(s.report_name, m.h1, inner)[:2]
    y = pen.lines(x0, y, title, m.h1, fill=INK, bold=True, leading=line_height(m.h1))
    meta = f"Report {s.number}  |  Prepared by {s.author}  |  {tx.format_date(s.issued, s.date_style)}"
    pen.text(x0, y, meta, fit_size([meta], m.small, inner), fill=GREY)
    y += line_height(m.small) + m.line // 2
    pen.draw.line((x0, y, x1, y), fill=INK, width=2)
    y += m.line // 2

    footer_y = s.height - m.margin - line_height(m.small)
    heading = line_height(m.h2) + m.line // 2
    table_h = line_height(m.small) + (len(s.table.row_labels) + 2) * m.row + m.line
    prose_room = footer_y - m.line - y - 3 * heading - table_h
    cut = y + heading + prose_room * 0.45

    def section(title_: str, top: float) -> float:
        pen.text(x0, top, title_, m.h2, fill=INK, bold=True)
        return top + heading

    y = section("1. Summary", y)
    y = _prose(pen, x0, y, inner, s.summary, m.body, cut)
    y = section("2. Results", y)
    pen.text(x0, y, s.caption, m.small, fill=GREY, bold=True)
    y += line_height(m.small)
    y = draw_data_table(pen, x0, y, inner, s.table, m.body) + m.line
    y = section("3. Outlook", y)
    _prose(pen, x0, y, inner, s.outlook, m.body, footer_y - m.line)

    pen.draw.line((x0, footer_y - m.small // 2, x1, footer_y - m.small // 2), fill=LIGHT, width=1)
    pen.text(x0, footer_y, f"{s.organisation}  |  Report {s.number}  |  Confidential", m.small, fill=GREY)
    pen.text(x1, footer_y, "Page 1 of 1", m.small, fill=GREY, align="right")
    return image, pen

