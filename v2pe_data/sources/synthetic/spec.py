"""Document specs: everything a page shows, as frozen values; `sampling.draw_spec` draws them.

A spec is a frozen, picklable value. Its width and height are the exact size `render` produces, and its
content is what questions are answered from, so answers never depend on the renderer. Amounts are
scaled integers (cents, tenths) so printed totals are exact sums of printed parts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import ClassVar, Union

from . import text as tx

KINDS = ("invoice", "form", "report", "table", "bar_chart", "line_chart", "pie_chart")
# Relative frequency of each kind in the default mix: about half pages, half charts and tables.
KIND_WEIGHTS = {"invoice": 3, "form": 3, "report": 3, "table": 3, "bar_chart": 3, "line_chart": 2, "pie_chart": 2}


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
