"""Drawing document specs (`spec.py`) from one `random.Random`, without touching pixels: invoices,
reports, tables and charts here, forms in `sampling_forms.py`.

How much content a page holds is planned here with generous width estimates (`layout.estimate_width`);
the renderer measures real widths and shrinks a font where a plan was optimistic, and
`render(spec, strict=True)` checks the result (the tests run it over every kind).
"""

from __future__ import annotations

import datetime as dt
import random

from . import text as tx
from .layout import EM_TEXT, MIN_SIZE, chart_body, estimate_width, line_height, page_metrics, page_size, row_height, \
    smaller, snap
from .sampling_forms import draw_form
from .spec import KINDS, ChartSpec, DataTable, InvoiceSpec, LineItem, ReportSpec, Series, Spec, TableSpec


def draw_spec(rng: random.Random, kind: str, code: str) -> Spec:
    """The spec of one document of `kind` named by `code`."""
    if kind not in _DRAW:
        raise ValueError(f"unknown kind {kind!r}; known: {KINDS}")
    return _DRAW[kind](rng, code)


# -------------------------------------------------------------------------------------------- invoice

_CURRENCIES = ("USD", "USD", "USD", "EUR", "GBP", "CAD", "AUD")
_TAX_RATES_BP = (500, 600, 700, 750, 800, 825, 1000, 1300, 1500, 2000)
_TERMS = (14, 15, 30, 30, 45, 60)


def invoice_fixed_height(width: int, height: int) -> int:
    """Pixels an invoice takes besides its line-item rows (the renderer lays it out the same way)."""
    m = page_metrics(width, height)
    header = line_height(m.h1) + 2 * line_height(m.small)
    parties = line_height(m.small) + 4 * m.line
    totals = 3 * m.row
    footer = 3 * line_height(m.small)
    gaps = 4 * m.line
    return 2 * m.margin + header + parties + m.row + totals + footer + gaps


def _invoice(rng: random.Random, code: str) -> InvoiceSpec:
    width, height = page_size(rng)
    m = page_metrics(width, height)
    capacity = (height - invoice_fixed_height(width, height)) // m.row
    n = rng.randint(min(2, capacity), max(min(2, capacity), min(capacity, 16)))
    products = rng.sample(tx.PRODUCTS, n)
    # Cheap consumables come in bulk, services and equipment in ones and twos.
    bulk, few = (2, 4, 5, 6, 10, 12, 20, 24, 25, 40, 50), (1, 1, 1, 2, 2, 3, 4, 5)
    lines = tuple(
        LineItem(desc, rng.choice(bulk if hi < 10_000 else few), rng.randint(lo, hi) // 5 * 5)
        for desc, lo, hi in products
    )
    seller = tx.company(rng)
    buyer = tx.company(rng)
    while buyer == seller:
        buyer = tx.company(rng)
    number = f"INV-{code}"
    return InvoiceSpec(
        width=width, height=height, code=code, title=f"Invoice {number} - {seller}", number=number,
        seller=seller, seller_address=tx.address(rng), seller_phone=tx.phone(rng),
        buyer=buyer, buyer_address=tx.address(rng),
        issued=tx.date_between(rng, 2008, 2024), terms_days=rng.choice(_TERMS),
        date_style=rng.choice(tx.DATE_STYLES), currency=rng.choice(_CURRENCIES),
        po_number=f"PO-{rng.randint(10000, 99999)}", lines=lines, tax_rate_bp=rng.choice(_TAX_RATES_BP),
    )


# --------------------------------------------------------------------------------------------- report

# (header, lowest, highest, decimals): additive quantities, so a Total row is meaningful.
_METRICS = (("Revenue (USD)", 20_000, 2_500_000, 0), ("Units sold", 200, 60_000, 0), ("Orders", 50, 9_000, 0),
            ("New customers", 5, 1_200, 0), ("Returns", 1, 800, 0), ("Costs (USD)", 10_000, 900_000, 0),
            ("Support tickets", 10, 3_000, 0), ("Hours logged", 1000, 90000, 1))


def report_fixed_height(width: int, height: int, rows: int) -> int:
    """Pixels a report takes besides its prose: header, three headings, table, footer."""
    m = page_metrics(width, height)
    header = line_height(m.small) + 2 * line_height(m.h1) + line_height(m.small) + m.line
    headings = 3 * (line_height(m.h2) + m.line // 2)
    table = line_height(m.small) + (rows + 2) * m.row + m.line
    footer = line_height(m.small) + m.line
    return 2 * m.margin + header + headings + table + footer


def _report(rng: random.Random, code: str) -> ReportSpec:
    width, height = page_size(rng, landscape_p=0.3)
    m = page_metrics(width, height)
    year = rng.randint(2008, 2024)
    q = rng.randint(1, 4)
    org = tx.company(rng)
    style = rng.choice(("quarterly", "annual", "regional", "product"))
    if style == "annual" and report_fixed_height(width, height, 12) > height * 0.8:
        style = "quarterly"
    if style == "quarterly":
        name = f"Quarterly Sales Report {year}-Q{q}"
        labels, row_header = tx.MONTHS[3 * (q - 1):3 * q], "Month"
    elif style == "annual":
        name = f"Annual Operations Report {year}"
        labels, row_header = tx.MONTHS, "Month"
    elif style == "regional":
        name = f"Regional Performance Review {year}"
        n = max(3, min(8, int((height * 0.8 - report_fixed_height(width, height, 0)) // m.row)))
        labels, row_header = tuple(rng.sample(tx.REGIONS, rng.randint(3, n))), "Region"
    else:
        name = f"Product Line Summary {year}-Q{q}"
        n = max(3, min(8, int((height * 0.8 - report_fixed_height(width, height, 0)) // m.row)))
        labels, row_header = tuple(rng.sample(tx.PRODUCT_LINES, rng.randint(3, n))), "Product line"
    # Columns: as many metrics as fit across at the body size (label column ~ 14 ems, metric ~ 9 ems).
    inner_em = (width - 2 * m.margin) / m.body
    max_cols = max(2, min(5, int((inner_em - 9) / (13 * EM_TEXT + 2))))
    metrics = rng.sample(_METRICS, rng.randint(2, max_cols))
    values = tuple(tuple(rng.randint(lo * 10**d, hi * 10**d) for _, lo, hi, d in metrics) for _ in labels)
    table = DataTable(row_header, tuple(h for h, *_ in metrics), tuple(labels), values,
                      tuple(d for *_, d in metrics), total=True)

    # Prose that agrees with the table, padded with plausible filler to about the room left on the page.
    first = metrics[0][0].split(" (")[0].lower()
    best = max(range(len(labels)), key=lambda r: values[r][0])
    unit = " USD" if "(USD)" in metrics[0][0] else ""
    fact = (f"{first[0].upper()}{first[1:]} totalled {table.total_cell(0)}{unit} for the period, "
            f"with {labels[best]} contributing the most ({table.cell(best, 0)}{unit}).")
    room = height - report_fixed_height(width, height, len(labels))
    chars_per_line = (width - 2 * m.margin) / (m.body * 0.5)
    n_sentences = max(2, int(room / m.line * chars_per_line / 110 * 1.2))
    n_summary = max(2, n_sentences // 2)
    summary = _paragraphs(rng, [fact] + [tx.sentence(rng) for _ in range(n_summary - 1)])
    outlook = _paragraphs(rng, [tx.sentence(rng) for _ in range(max(2, n_sentences - n_summary))])
    # Reports are issued a few weeks after the period they cover.
    period_end = dt.date(year, 3 * q if style in ("quarterly", "product") else 12, 28)
    issued = period_end + dt.timedelta(days=rng.randint(3, 45))
    number = f"R-{code}"
    return ReportSpec(
        width=width, height=height, code=code, title=f"{name} - {org} ({number})", number=number,
        organisation=org, report_name=name, author=tx.person(rng), issued=issued,
        date_style=rng.choice(tx.DATE_STYLES), summary=summary,
        caption="Table 1. Monthly results" if row_header == "Month" else f"Table 1. Results by {row_header.lower()}",
        table=table, outlook=outlook,
    )


def _paragraphs(rng: random.Random, sentences: list[str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(sentences):
        k = rng.randint(2, 5)
        out.append(" ".join(sentences[i:i + k]))
        i += k
    return tuple(out)


# ---------------------------------------------------------------------------------- standalone table


def table_layout_height(body: int, grid_rows: int, title_size: int) -> int:
    """Height of a standalone table page whose grid has `grid_rows` rows (header and total included)."""
    margin = round(body * 1.6)
    small = snap(body * 0.85)
    return (2 * margin + line_height(title_size) + line_height(small) + body // 2
            + grid_rows * row_height(body) + body // 2 + line_height(small))


def _table(rng: random.Random, code: str) -> TableSpec:
    topic = rng.choice(tx.TOPICS)
    width = rng.randint(700, 1700)
    body = snap(width / 46)
    inner_em = (width - 2 * round(body * 1.6)) / body
    # Row labels take ~12 ems; value columns ~7 ems each (header "2019", values "12,345.6").
    max_cols = max(2, min(7, int((inner_em - 12) / 7)))
    first_year = rng.randint(2005, 2019)
    use_years = rng.random() < 0.6
    n_cols = rng.randint(2, max_cols) if use_years else min(4, max_cols)
    columns = (tuple(str(first_year + i) for i in range(n_cols)) if use_years
               else ("Q1", "Q2", "Q3", "Q4")[:n_cols])
    n_rows = rng.randint(3, len(topic.categories))
    labels = tuple(rng.sample(topic.categories, n_rows))
    scale = 10**topic.decimals
    values = tuple(tuple(rng.randint(topic.lo * scale, topic.hi * scale) for _ in columns) for _ in labels)
    additive = topic.unit not in ("tonnes per hectare",)
    table = DataTable(topic.by.capitalize(), columns, labels, values, (topic.decimals,) * n_cols, total=additive)
    span = f"{columns[0]}-{columns[-1]}" if use_years else str(first_year)
    number = f"T-{code}"
    title = f"Table {number}: {topic.measure.capitalize()} by {topic.by}, {span}"
    title_size = snap(body * 1.2)
    while estimate_width(title, title_size) > width - 2 * round(body * 1.6) and title_size > MIN_SIZE:
        title_size = smaller(title_size)
    height = table_layout_height(body, n_rows + (2 if additive else 1), title_size)
    return TableSpec(width=width, height=height, code=code, title=title, number=number, unit=topic.unit,
                     table=table, source_note=f"Source: {tx.company(rng)} statistics office.",
                     body=body, title_size=title_size)


# ---------------------------------------------------------------------------------------------- charts


def _chart_size(rng: random.Random, kind: str) -> tuple[int, int]:
    u = rng.random()
    if kind == "pie_chart" and u < 0.3:
        ratio = rng.uniform(0.78, 0.86)  # portrait: legend below the pie
    elif u < 0.3:
        ratio = rng.uniform(0.92, 1.08)
    elif u < 0.6:
        ratio = rng.uniform(1.22, 1.45)
    elif u < 0.85:
        ratio = rng.uniform(1.5, 1.75)
    else:
        ratio = rng.uniform(1.8, 2.1)
    width = rng.randint(500, 1400)
    return width, int(width / ratio)


def _chart(rng: random.Random, code: str, kind: str) -> ChartSpec:
    width, height = _chart_size(rng, kind)
    topic = rng.choice(tx.TOPICS)
    body = chart_body(width, height)
    scale = 10**topic.decimals
    number = f"C-{code}"
    year = rng.randint(2008, 2024)
    value_em = estimate_width(tx.fixed(topic.hi * scale, topic.decimals), body)
    plot_w = width * 0.78
    if kind == "bar_chart":
        two = rng.random() < 0.3
        per_slot = value_em * (2.3 if two else 1.25)
        n_max = max(3, min(len(topic.categories), 9, int(plot_w / per_slot)))
        n = rng.randint(3, n_max)
        cats = tuple(rng.sample(topic.categories, n))
        longest = max(estimate_width(w, body) for c in cats for w in c.split())
        horizontal = rng.random() < 0.35 or longest > plot_w / n * 0.9
        if horizontal:  # rows need vertical room: a label line plus spacing per bar (two bars when grouped)
            rows_fit = int(height * 0.6 / (line_height(body) * (2.2 if two else 1.3)))
            cats = cats[:max(3, min(n, rows_fit))]
        names = (str(year - 1), str(year)) if two else (str(year),)
        series = tuple(Series(s, tuple(tx.distinct_values(rng, len(cats), topic.lo * scale, topic.hi * scale)))
                       for s in names)
        title = f"Chart {number}: {topic.measure.capitalize()} by {topic.by}, {year - 1 if two else year}" + (
            f"-{year}" if two else "")
        return ChartSpec(kind, width, height, code, title, number, cats, series, topic.decimals, topic.unit,
                         topic.by.capitalize(), f"Source: {tx.company(rng)}", horizontal=horizontal)
    if kind == "line_chart":
        n_max = max(4, min(12, int(plot_w / (value_em * 1.2))))
        n = rng.randint(4, n_max)
        first = rng.randint(2000, 2024 - n)
        cats = tuple(str(first + i) for i in range(n))
        names = tuple(rng.sample(topic.categories, 2 if rng.random() < 0.4 else 1))
        series = tuple(Series(s, _walk(rng, n, topic.lo * scale, topic.hi * scale)) for s in names)
        title = f"Chart {number}: {topic.measure.capitalize()}, {cats[0]}-{cats[-1]}"
        return ChartSpec(kind, width, height, code, title, number, cats, series, topic.decimals, topic.unit,
                         "Year", f"Source: {tx.company(rng)}")
    # pie: shares in tenths of a percent (or whole percent) that sum to exactly 100
    decimals = rng.choice((0, 1))
    n = rng.randint(3, min(7, len(topic.categories)))
    cats = tuple(rng.sample(topic.categories, n))
    shares = _shares(rng, n, 100 * 10**decimals, 4 * 10**decimals)
    title = f"Chart {number}: Share of {topic.measure} by {topic.by}, {year}"
    return ChartSpec(kind, width, height, code, title, number, cats, (Series(topic.measure, shares),), decimals,
                     "%", topic.by.capitalize(), f"Source: {tx.company(rng)}")


def _walk(rng: random.Random, n: int, lo: int, hi: int) -> tuple[int, ...]:
    """A bounded random walk with distinct values: a plausible yearly series with one clear peak and low."""
    span = hi - lo
    while True:
        v = rng.randint(lo + span // 4, hi - span // 4)
        out = []
        for _ in range(n):
            out.append(v)
            v = min(hi, max(lo, v + rng.randint(-span // 6, span // 6)))
        if len(set(out)) == n:
            return tuple(out)


def _shares(rng: random.Random, n: int, total: int, floor: int) -> tuple[int, ...]:
    """n distinct integers >= floor summing to total, largest-remainder rounded from random weights."""
    while True:
        w = [rng.uniform(0.2, 1.0) ** 1.5 for _ in range(n)]
        free = total - n * floor
        raw = [x / sum(w) * free for x in w]
        out = [floor + int(r) for r in raw]
        order = sorted(range(n), key=lambda i: raw[i] - int(raw[i]), reverse=True)
        for i in order[:total - sum(out)]:
            out[i] += 1
        if len(set(out)) == n:
            return tuple(out)


_DRAW = {
    "invoice": _invoice,
    "form": draw_form,
    "report": _report,
    "table": _table,
    "bar_chart": lambda rng, code: _chart(rng, code, "bar_chart"),
    "line_chart": lambda rng, code: _chart(rng, code, "line_chart"),
    "pie_chart": lambda rng, code: _chart(rng, code, "pie_chart"),
}
