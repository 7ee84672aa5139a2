"""Document specs: everything a page shows, drawn from one `random.Random` without touching pixels.

A spec is a frozen, picklable value. Its width and height are the exact size `render` produces, and its
content is what questions are answered from, so answers never depend on the renderer. Amounts are
scaled integers (cents, tenths) so printed totals are exact sums of printed parts.

How much content a page holds is planned here with generous width estimates (`layout.estimate_width`);
the renderer measures real widths and shrinks a font where a plan was optimistic, and
`render(spec, strict=True)` checks the result (the tests run it over every kind).
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass
from typing import ClassVar, Union

from . import text as tx
from .layout import (
    EM_TEXT,
    MIN_SIZE,
    chart_body,
    estimate_width,
    line_height,
    page_metrics,
    row_height,
    smaller,
    snap,
)

KINDS = ("invoice", "form", "report", "table", "bar_chart", "line_chart", "pie_chart")
# Relative frequency of each kind in the default mix: about half pages, half charts and tables.
KIND_WEIGHTS = {"invoice": 3, "form": 3, "report": 3, "table": 3, "bar_chart": 3, "line_chart": 2, "pie_chart": 2}

# Identifier prefix per kind; with the code it names a document among distractors.
PREFIX = {"invoice": "INV", "form": "F", "report": "R", "table": "T", "bar_chart": "C", "line_chart": "C",
          "pie_chart": "C"}

MAX_PIXELS = 3_700_000  # about 1700 x 2200: keeps the largest page's encode near 10 ms


# ---------------------------------------------------------------------------------------------- tables


@dataclass(frozen=True, slots=True)
class DataTable:
    """A labelled grid of scaled integers; column c holds values in units of 10**-decimals[c]."""

    row_header: str
    columns: tuple[str, ...]
    row_labels: tuple[str, ...]
    values: tuple[tuple[int, ...], ...]  # [row][column]
    decimals: tuple[int, ...]
    total: bool  # whether a "Total" row (exact column sums) is printed

    def cell(self, r: int, c: int) -> str:
        return tx.fixed(self.values[r][c], self.decimals[c])

    def column_total(self, c: int) -> int:
        return sum(row[c] for row in self.values)

    def total_cell(self, c: int) -> str:
        return tx.fixed(self.column_total(c), self.decimals[c])


# -------------------------------------------------------------------------------------------- invoices


@dataclass(frozen=True, slots=True)
class LineItem:
    description: str
    quantity: int
    unit_cents: int

    @property
    def amount_cents(self) -> int:
        return self.quantity * self.unit_cents


@dataclass(frozen=True, slots=True)
class InvoiceSpec:
    kind: ClassVar[str] = "invoice"
    width: int
    height: int
    code: str
    title: str
    number: str  # "INV-K7QX3MB": the identifier printed on the page
    seller: str
    seller_address: tuple[str, str]
    seller_phone: str
    buyer: str
    buyer_address: tuple[str, str]
    issued: dt.date
    terms_days: int
    date_style: str
    currency: str
    po_number: str
    lines: tuple[LineItem, ...]
    tax_rate_bp: int  # basis points: 825 is 8.25 %

    @property
    def due(self) -> dt.date:
        return self.issued + dt.timedelta(days=self.terms_days)

    @property
    def subtotal_cents(self) -> int:
        return sum(line.amount_cents for line in self.lines)

    @property
    def tax_cents(self) -> int:
        # Round half up on whole cents, as the printed tax line does.
        return (self.subtotal_cents * self.tax_rate_bp + 5000) // 10000

    @property
    def total_cents(self) -> int:
        return self.subtotal_cents + self.tax_cents

    @property
    def tax_label(self) -> str:
        rate = tx.fixed(self.tax_rate_bp, 2, grouping=False).rstrip("0").rstrip(".")
        return f"Tax ({rate}%)"


# ----------------------------------------------------------------------------------------------- forms


@dataclass(frozen=True, slots=True)
class Field:
    label: str
    value: str
    wide: bool = False  # takes a whole row instead of half of one
    iso: str = ""  # the ISO form of a date value, an extra accepted answer


@dataclass(frozen=True, slots=True)
class Section:
    heading: str
    fields: tuple[Field, ...]


@dataclass(frozen=True, slots=True)
class Choice:
    label: str
    options: tuple[str, ...]
    selected: int


@dataclass(frozen=True, slots=True)
class FormSpec:
    kind: ClassVar[str] = "form"
    width: int
    height: int
    code: str
    title: str
    number: str  # "F-K7QX3MB"
    organisation: str
    form_name: str
    department: str
    revision: str
    instructions: str
    sections: tuple[Section, ...]
    choice: Choice
    signer: str
    signed: dt.date
    date_style: str


# --------------------------------------------------------------------------------------------- reports


@dataclass(frozen=True, slots=True)
class ReportSpec:
    kind: ClassVar[str] = "report"
    width: int
    height: int
    code: str
    title: str
    number: str  # "R-K7QX3MB"
    organisation: str
    report_name: str  # "Quarterly Sales Report 2019-Q3"
    author: str
    issued: dt.date
    date_style: str
    summary: tuple[str, ...]  # paragraphs; the renderer drops trailing sentences that do not fit
    caption: str
    table: DataTable
    outlook: tuple[str, ...]


# ---------------------------------------------------------------------------------- standalone tables


@dataclass(frozen=True, slots=True)
class TableSpec:
    kind: ClassVar[str] = "table"
    width: int
    height: int
    code: str
    title: str  # printed as the table's heading
    number: str  # "T-K7QX3MB"
    unit: str
    table: DataTable
    source_note: str
    body: int  # font sizes the height was planned with
    title_size: int


# ---------------------------------------------------------------------------------------------- charts


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: tuple[int, ...]  # scaled by 10**ChartSpec.decimals


@dataclass(frozen=True, slots=True)
class ChartSpec:
    kind: str  # "bar_chart" | "line_chart" | "pie_chart"
    width: int
    height: int
    code: str
    title: str  # printed at the top
    number: str  # "C-K7QX3MB"
    categories: tuple[str, ...]  # bars, x positions or slices
    series: tuple[Series, ...]
    decimals: int
    unit: str  # "thousand tonnes" or "%"
    x_label: str
    source_note: str
    horizontal: bool = False  # bar charts only

    def value(self, category: int, series: int = 0) -> str:
        return tx.fixed(self.series[series].values[category], self.decimals)


Spec = Union[InvoiceSpec, FormSpec, ReportSpec, TableSpec, ChartSpec]


# ------------------------------------------------------------------------------------------- sampling


def draw_spec(rng: random.Random, kind: str, code: str) -> Spec:
    """The spec of one document of `kind` named by `code`."""
    if kind not in _DRAW:
        raise ValueError(f"unknown kind {kind!r}; known: {KINDS}")
    return _DRAW[kind](rng, code)


def _cap_area(width: int, ratio: float) -> tuple[int, int]:
    """(width, height) for width/height == ratio, shrunk to stay under MAX_PIXELS."""
    height = width / ratio
    if width * height > MAX_PIXELS:
        width = math.sqrt(MAX_PIXELS * ratio)
        height = width / ratio
    return int(width), int(height)


def _page_size(rng: random.Random, landscape_p: float = 0.0) -> tuple[int, int]:
    """A page: mostly letter/A4-like portrait, some taller slips, optionally landscape."""
    u = rng.random()
    if u < landscape_p:
        return _cap_area(rng.randint(900, 1700), rng.uniform(1.25, 1.6))
    u = rng.random()
    if u < 0.6:
        ratio = rng.uniform(0.72, 0.82)  # letter-like
    elif u < 0.85:
        ratio = rng.uniform(0.62, 0.71)  # A4-like
    else:
        ratio = rng.uniform(0.5, 0.58)  # tall slip
    return _cap_area(rng.randint(700, 1700), ratio)


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
    width, height = _page_size(rng)
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


# ----------------------------------------------------------------------------------------------- form

# Value kinds a form field can hold; each is drawn by _field_value.
_MAKES = {"Toyota": ("Corolla", "RAV4", "Camry"), "Ford": ("Focus", "Ranger", "Escape"),
          "Volkswagen": ("Golf", "Passat", "Tiguan"), "Honda": ("Civic", "Accord", "CR-V"),
          "Kia": ("Rio", "Sportage", "Niro"), "Skoda": ("Octavia", "Fabia", "Kodiaq")}
_COLOURS = ("White", "Black", "Silver", "Blue", "Red", "Grey", "Green")
_EQUIPMENT = ("Laptop", "Projector", "Tablet", "Camera kit", "Conference phone", "Label printer", "Drone")
_INSURERS = ("Harbor Health", "Summit Mutual", "Crescent Care", "Meridian Life", "Oakmont Assurance")
_ALLERGIES = ("None known", "Penicillin", "Peanuts", "Latex", "Pollen", "Shellfish")
_PLATE_LETTERS = "ABCDEFGHJKLMNPRSTVWXYZ"
_PURPOSES = ("Client visit and contract review", "Annual sales conference", "Supplier audit",
             "Trade fair attendance", "Site inspection", "Team training week", "Product launch event")

# (form name, department, sections: (heading, ((label, value kind, wide), ...)), choice: (label, options))
_FORMS = (
    ("Leave Request", "Human Resources",
     (("Employee details", (("Full name", "self", False), ("Employee ID", "emp_id", False),
                            ("Department", "dept", False), ("Line manager", "name", False),
                            ("Work email", "email", True))),
      ("Leave details", (("First day of leave", "date", False), ("Last day of leave", "date_after", False),
                         ("Working days requested", "days", False), ("Cover arranged with", "name", False)))),
     ("Type of leave", ("Annual", "Sick", "Parental", "Unpaid"))),
    ("Expense Claim", "Finance",
     (("Claimant", (("Full name", "self", False), ("Employee ID", "emp_id", False),
                    ("Cost centre", "cost_centre", False), ("Phone", "phone", False))),
      ("Expense summary", (("Purpose of expense", "purpose", True), ("Date incurred", "date_before", False),
                           ("Amount claimed (USD)", "money", False), ("Advance received (USD)", "money", False),
                           ("Receipts attached", "count", False)))),
     ("Reimbursement method", ("Bank transfer", "Payroll", "Cheque"))),
    ("Vehicle Registration Application", "Motor Vehicles Office",
     (("Registered owner", (("Full name", "self", False), ("Date of birth", "dob", False),
                            ("Home address", "address", True), ("Phone", "phone", False))),
      ("Vehicle", (("Make", "make", False), ("Model", "model", False), ("Model year", "year", False),
                   ("Colour", "colour", False), ("VIN", "vin", False), ("Plate number", "plate", False)))),
     ("Registration type", ("New", "Renewal", "Transfer"))),
    ("Membership Application", "Member Services",
     (("Applicant", (("Full name", "self", False), ("Date of birth", "dob", False),
                     ("Email", "email", True), ("Phone", "phone", False), ("Home address", "address", True))),
      ("Membership", (("Membership number", "member_no", False), ("Start date", "date", False),
                      ("Referred by", "name", False)))),
     ("Membership level", ("Basic", "Standard", "Premium", "Family"))),
    ("Equipment Loan Request", "Facilities",
     (("Borrower", (("Full name", "self", False), ("Employee ID", "emp_id", False),
                    ("Department", "dept", False), ("Phone", "phone", False))),
      ("Equipment", (("Item", "equipment", False), ("Asset tag", "asset_tag", False),
                     ("Loan start", "date", False), ("Return by", "date_after", False),
                     ("Purpose", "purpose", True)))),
     ("Condition on issue", ("New", "Good", "Fair"))),
    ("Change of Address Notification", "Customer Records",
     (("Account", (("Account holder", "self", False), ("Account number", "account_no", False),
                   ("Email", "email", True))),
      ("Addresses", (("Previous address", "address", True), ("New address", "address", True),
                     ("Effective date", "date", False)))),
     ("Contact preference", ("Email", "Phone", "Post"))),
    ("Patient Registration", "Outpatient Clinic",
     (("Patient", (("Full name", "self", False), ("Date of birth", "dob", False), ("Phone", "phone", False),
                   ("Home address", "address", True))),
      ("Medical", (("Primary physician", "doctor", False), ("Insurance provider", "insurer", False),
                   ("Policy number", "policy", False), ("Allergies", "allergy", False)))),
     ("Preferred appointment time", ("Morning", "Afternoon", "Evening"))),
)


def _field_value(rng: random.Random, kind: str, who: str, org: str, dates: list[dt.date], date_style: str,
                 make: list[str]) -> tuple[str, str]:
    """(printed value, ISO date or "") for one form field.

    `dates` starts with the day the form was signed; planned dates follow it, a "date_after" follows the
    previous date (a leave never ends before it starts) and a "date_before" precedes the signature.
    """
    if kind in ("date", "date_after", "date_before", "dob"):
        if kind == "dob":
            d = tx.date_between(rng, 1950, 2003)
        elif kind == "date_before":  # something that happened before the form was filled in
            d = dates[0] - dt.timedelta(days=rng.randint(1, 30))
        else:
            d = dates[-1] + dt.timedelta(days=rng.randint(1, 21) if kind == "date_after" else rng.randint(3, 60))
            dates.append(d)
        return tx.format_date(d, date_style), d.isoformat()
    if kind == "make":  # the model field below must belong to this make
        make.append(rng.choice(sorted(_MAKES)))
        return make[-1], ""
    if kind == "model":
        return rng.choice(_MAKES[make[-1] if make else "Ford"]), ""
    simple = {
        "self": lambda: who,
        "name": lambda: tx.person(rng),
        "emp_id": lambda: f"E-{rng.randint(10000, 99999)}",
        "dept": lambda: rng.choice(tx.DEPARTMENTS),
        "email": lambda: tx.email(who, org),
        "days": lambda: str(rng.randint(1, 15)),
        "count": lambda: str(rng.randint(1, 12)),
        "cost_centre": lambda: f"CC-{rng.randint(100, 999)}",
        "phone": lambda: tx.phone(rng),
        "purpose": lambda: rng.choice(_PURPOSES),
        "money": lambda: tx.fixed(rng.randint(2000, 250000), 2),
        "address": lambda: ", ".join(tx.address(rng)),
        "year": lambda: str(rng.randint(2008, 2024)),
        "colour": lambda: rng.choice(_COLOURS),
        "vin": lambda: "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ0123456789") for _ in range(17)),
        "plate": lambda: (rng.choice(_PLATE_LETTERS) + rng.choice(_PLATE_LETTERS)
                          + f"{rng.randint(100, 999)} {rng.randint(10, 99)}"),
        "member_no": lambda: f"M-{rng.randint(100000, 999999)}",
        "equipment": lambda: rng.choice(_EQUIPMENT),
        "asset_tag": lambda: f"AT-{rng.randint(10000, 99999)}",
        "account_no": lambda: f"{rng.randint(10, 99)}-{rng.randint(1000000, 9999999)}",
        "doctor": lambda: f"Dr. {rng.choice(tx.LAST_NAMES)}",
        "insurer": lambda: rng.choice(_INSURERS),
        "policy": lambda: f"P{rng.randint(1000000, 9999999)}",
        "allergy": lambda: rng.choice(_ALLERGIES),
    }
    return simple[kind](), ""


def form_header_height(width: int, height: int) -> int:
    m = page_metrics(width, height)
    return m.margin + line_height(m.h2) + line_height(m.h1) + 2 * line_height(m.small) + m.line


def form_section_height(width: int, height: int, section: Section) -> int:
    m = page_metrics(width, height)
    rows = 0
    half = 0
    for f in section.fields:
        if f.wide:
            rows += 1 + half
            half = 0
        else:
            half += 1
            if half == 2:
                rows += 1
                half = 0
    rows += half
    return m.row + round(m.body * 0.6) + rows * form_field_height(m.small, m.body)


def form_field_height(small: int, body: int) -> int:
    return line_height(small) + round(body * 1.9) + round(body * 0.7)


def form_tail_height(width: int, height: int) -> int:
    """Choice line, signature block and footer."""
    m = page_metrics(width, height)
    return 2 * m.line + 4 * m.line + line_height(m.small) + m.margin


def _form(rng: random.Random, code: str) -> FormSpec:
    width, height = _page_size(rng)
    name, dept, section_defs, (choice_label, options) = rng.choice(_FORMS)
    org = tx.company(rng)
    who = tx.person(rng)
    date_style = rng.choice(tx.DATE_STYLES)
    year = rng.randint(2010, 2024)
    signed = tx.date_between(rng, year, year)
    dates = [signed]
    make: list[str] = []
    sections = []
    budget = height - form_header_height(width, height) - form_tail_height(width, height)
    for heading, defs in section_defs:
        fields = []
        for label, kind, wide in defs:
            value, iso = _field_value(rng, kind, who, org, dates, date_style, make)
            fields.append(Field(label, value, wide, iso))
        section = Section(heading, tuple(fields))
        # Short pages drop trailing fields, then trailing sections, rather than crowd the page.
        while len(section.fields) > 1 and form_section_height(width, height, section) > budget:
            section = Section(heading, section.fields[:-1])
        if form_section_height(width, height, section) > budget:
            break
        budget -= form_section_height(width, height, section)
        sections.append(section)
    number = f"F-{code}"
    return FormSpec(
        width=width, height=height, code=code, title=f"Form {number}: {name} ({org})", number=number,
        organisation=org, form_name=name, department=dept,
        revision=f"Rev. {rng.randint(2005, year)}-{rng.randint(1, 12):02d}",
        instructions=f"Please complete all fields in block capitals and return this form to {dept}.",
        sections=tuple(sections), choice=Choice(choice_label, options, rng.randrange(len(options))),
        signer=who, signed=signed, date_style=date_style,
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
    width, height = _page_size(rng, landscape_p=0.3)
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
    "form": _form,
    "report": _report,
    "table": _table,
    "bar_chart": lambda rng, code: _chart(rng, code, "bar_chart"),
    "line_chart": lambda rng, code: _chart(rng, code, "line_chart"),
    "pie_chart": lambda rng, code: _chart(rng, code, "pie_chart"),
}
