"""Questions about a spec, with exact answers computed from the spec (never read back from pixels).

Every question names its document by the identifier printed on it ("In invoice INV-K7QX3MB, ..."), so it
stays answerable when the page sits among many distractor documents. The first answer is the string as
printed; the rest are forms a correct reader might also give (no thousands separators, ISO dates, units).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from . import text as tx
from .spec import ChartSpec, DataTable, FormSpec, InvoiceSpec, ReportSpec, Spec, TableSpec


@dataclass(frozen=True, slots=True)
class Question:
    type: str
    text: str
    answers: tuple[str, ...]


def ask(spec: Spec, rng: random.Random) -> Question:
    """One question about `spec`, its type drawn uniformly from those the spec supports."""
    makers = _askers(spec)
    return makers[rng.choice(sorted(makers))](rng)


def question_types(spec: Spec) -> tuple[str, ...]:
    return tuple(sorted(_askers(spec)))


def _askers(spec: Spec) -> dict[str, Callable[[random.Random], Question]]:
    if isinstance(spec, InvoiceSpec):
        return _invoice(spec)
    if isinstance(spec, FormSpec):
        return _form(spec)
    if isinstance(spec, ReportSpec):
        return _report(spec)
    if isinstance(spec, TableSpec):
        return _table(spec)
    if isinstance(spec, ChartSpec):
        return {"bar_chart": _bar, "line_chart": _line, "pie_chart": _pie}[spec.kind](spec)
    raise TypeError(f"not a synthetic spec: {type(spec).__name__}")


def _date_answers(d, style: str) -> tuple[str, ...]:
    return tx.unique([tx.format_date(d, style), d.isoformat()])


# -------------------------------------------------------------------------------------------- invoice


def _invoice(s: InvoiceSpec) -> dict[str, Callable[[random.Random], Question]]:
    who = f"In invoice {s.number}"

    def money(cents: int) -> tuple[str, ...]:
        dollar = "$" if s.currency == "USD" else ""
        forms = tx.number_answers(cents, 2, unit=s.currency, prefix=dollar)
        return tx.unique([*forms, f"{s.currency} {tx.fixed(cents, 2)}"])

    def fixed_q(name: str, text: str, answers: tuple[str, ...]) -> Callable[[random.Random], Question]:
        return lambda rng: Question(name, f"{who}, {text}", answers)

    def per_line(name: str, text: str, answer) -> Callable[[random.Random], Question]:
        def make(rng: random.Random) -> Question:
            li = rng.choice(s.lines)
            quoted = '"' + li.description + '"'
            return Question(name, f"{who}, {text.format(quoted)}", answer(li))
        return make

    out = {
        "total_due": fixed_q("total_due", "what is the total amount due?", money(s.total_cents)),
        "subtotal": fixed_q("subtotal", "what is the subtotal before tax?", money(s.subtotal_cents)),
        "tax_amount": fixed_q("tax_amount", "how much tax is charged?", money(s.tax_cents)),
        "due_date": fixed_q("due_date", "what is the payment due date?", _date_answers(s.due, s.date_style)),
        "bill_to": fixed_q("bill_to", "which company is billed?", (s.buyer,)),
        "line_count": fixed_q("line_count", "how many line items are listed?", (str(len(s.lines)),)),
        "quantity": per_line("quantity", "what quantity of {} is billed?", lambda li: (str(li.quantity),)),
        "unit_price": per_line("unit_price", "what is the unit price of {}?", lambda li: money(li.unit_cents)),
        "line_amount": per_line("line_amount", "what is the amount for {}?", lambda li: money(li.amount_cents)),
    }
    amounts = sorted(li.amount_cents for li in s.lines)
    if len(amounts) >= 2 and amounts[-1] != amounts[-2]:  # only asked when one line is strictly the largest
        top = max(s.lines, key=lambda li: li.amount_cents)
        out["largest_line_item"] = fixed_q("largest_line_item", "which line item has the largest amount?",
                                           (top.description,))
    return out


# ----------------------------------------------------------------------------------------------- form


def _form(s: FormSpec) -> dict[str, Callable[[random.Random], Question]]:
    who = f"In form {s.number}"
    fields = [f for sec in s.sections for f in sec.fields]

    def field(rng: random.Random) -> Question:
        f = rng.choice(fields)
        return Question("field_value", f"{who}, what is entered in the \"{f.label}\" field?",
                        tx.unique([f.value, f.iso] if f.iso else [f.value]))

    def checked(rng: random.Random) -> Question:
        return Question("checked_option", f"{who}, which option is ticked for \"{s.choice.label}\"?",
                        (s.choice.options[s.choice.selected],))

    return {
        "field_value": field,
        "checked_option": checked,
        "signed_date": lambda rng: Question("signed_date", f"{who}, on what date was the form signed?",
                                            _date_answers(s.signed, s.date_style)),
        "form_type": lambda rng: Question("form_type", f"What kind of form is form {s.number}?", (s.form_name,)),
    }


# --------------------------------------------------------------------------------------- report, table


def _row_phrase(row_header: str, label: str) -> str:
    return f"in {label}" if row_header == "Month" else f"for {label}"


def _unique_max_columns(t: DataTable) -> list[int]:
    out = []
    for c in range(len(t.columns)):
        column = [row[c] for row in t.values]
        if column.count(max(column)) == 1:
            out.append(c)
    return out


def _report(s: ReportSpec) -> dict[str, Callable[[random.Random], Question]]:
    """Report tables have metrics as columns ("Revenue (USD)") and months or groups as rows."""
    who, t = f"In report {s.number}", s.table

    def metric(c: int) -> str:
        return t.columns[c].split(" (")[0].lower()

    def unit(c: int) -> str:
        return "USD" if "(USD)" in t.columns[c] else ""

    def lookup(rng):
        r, c = rng.randrange(len(t.row_labels)), rng.randrange(len(t.columns))
        where = _row_phrase(t.row_header, t.row_labels[r])
        return Question("cell_lookup", f"{who}, what is the figure for {metric(c)} {where}?",
                        tx.number_answers(t.values[r][c], t.decimals[c], unit(c)))

    def highest(rng):
        c = rng.choice(_unique_max_columns(t))
        r = max(range(len(t.row_labels)), key=lambda i: t.values[i][c])
        return Question("highest_row", f"{who}, which {t.row_header.lower()} had the highest {metric(c)}?",
                        (t.row_labels[r],))

    def total(rng):
        c = rng.randrange(len(t.columns))
        return Question("column_total", f"{who}, what is the total for {metric(c)} over all {t.row_header.lower()}s?",
                        tx.number_answers(t.column_total(c), t.decimals[c], unit(c)))

    out = {"cell_lookup": lookup, "column_total": total,
           "author": lambda rng: Question("author", f"Who prepared report {s.number}?", (s.author,)),
           "report_date": lambda rng: Question("report_date", f"{who}, what is the report date?",
                                               _date_answers(s.issued, s.date_style))}
    if _unique_max_columns(t):
        out["highest_row"] = highest
    return out


def _table(s: TableSpec) -> dict[str, Callable[[random.Random], Question]]:
    """Standalone tables have periods as columns ("2019", "Q3") and categories as rows."""
    who, t = f"In table {s.number}", s.table
    noun = t.row_header.lower()

    def lookup(rng):
        r, c = rng.randrange(len(t.row_labels)), rng.randrange(len(t.columns))
        return Question("cell_lookup", f"{who}, what is the value for {t.row_labels[r]} in {t.columns[c]}?",
                        tx.number_answers(t.values[r][c], t.decimals[c], s.unit))

    def highest(rng):
        c = rng.choice(_unique_max_columns(t))
        r = max(range(len(t.row_labels)), key=lambda i: t.values[i][c])
        return Question("highest_row", f"{who}, which {noun} has the highest value in {t.columns[c]}?",
                        (t.row_labels[r],))

    def total(rng):
        c = rng.randrange(len(t.columns))
        return Question("column_total", f"{who}, what is the total for {t.columns[c]}?",
                        tx.number_answers(t.column_total(c), t.decimals[c], s.unit))

    out = {"cell_lookup": lookup,
           "row_count": lambda rng: Question("row_count", f"{who}, how many {noun} rows are listed, not counting "
                                             f"any total row?", (str(len(t.row_labels)),))}
    if _unique_max_columns(t):
        out["highest_row"] = highest
    if t.total:
        out["column_total"] = total
    return out


# --------------------------------------------------------------------------------------------- charts


def _argmax(values, sign: int = 1) -> int | None:
    """Index of the unique extreme value, or None on a tie."""
    best = max(values) if sign > 0 else min(values)
    return values.index(best) if values.count(best) == 1 else None


def _bar(s: ChartSpec) -> dict[str, Callable[[random.Random], Question]]:
    who = f"In chart {s.number}"
    two = len(s.series) == 2

    def pick_series(rng: random.Random) -> int:
        return rng.randrange(len(s.series))

    def of(k: int) -> str:
        return f" in {s.series[k].name}" if two else ""

    def value(rng):
        k, c = pick_series(rng), rng.randrange(len(s.categories))
        return Question("value", f"{who}, what is the value for {s.categories[c]}{of(k)}?",
                        tx.number_answers(s.series[k].values[c], s.decimals, s.unit))

    def extreme(sign: int, name: str, word: str):
        def ask_(rng):
            k = pick_series(rng)
            i = _argmax(list(s.series[k].values), sign)
            return Question(name, f"{who}, which {s.x_label.lower()} has the {word} value{of(k)}?", (s.categories[i],))
        return ask_

    def difference(rng):
        a, b = rng.sample(range(len(s.categories)), 2)
        va, vb = s.series[0].values[a], s.series[0].values[b]
        if va < vb:
            a, b, va, vb = b, a, vb, va
        return Question("difference", f"{who}, by how much does {s.categories[a]} exceed {s.categories[b]}{of(0)}?",
                        tx.number_answers(va - vb, s.decimals, s.unit))

    out = {"value": value, "highest": extreme(1, "highest", "highest"), "lowest": extreme(-1, "lowest", "lowest"),
           "difference": difference}
    if two:
        def compare(rng):
            c = rng.randrange(len(s.categories))
            a, b = s.series[0].values[c], s.series[1].values[c]
            if a == b:
                return value(rng)
            winner = s.series[0].name if a > b else s.series[1].name
            return Question("compare_series", f"{who}, was the value for {s.categories[c]} higher in "
                            f"{s.series[0].name} or {s.series[1].name}?", (winner,))
        out["compare_series"] = compare
    return out


def _line(s: ChartSpec) -> dict[str, Callable[[random.Random], Question]]:
    who = f"In chart {s.number}"

    def series_of(rng):
        return rng.randrange(len(s.series))

    def name(k: int) -> str:
        return f" for {s.series[k].name}" if len(s.series) > 1 else ""

    def value(rng):
        k, c = series_of(rng), rng.randrange(len(s.categories))
        return Question("value", f"{who}, what was the value{name(k)} in {s.categories[c]}?",
                        tx.number_answers(s.series[k].values[c], s.decimals, s.unit))

    def peak(rng):
        k = series_of(rng)
        return Question("peak_year", f"{who}, in which year was the value{name(k)} highest?",
                        (s.categories[_argmax(list(s.series[k].values))],))

    def low(rng):
        k = series_of(rng)
        return Question("lowest_year", f"{who}, in which year was the value{name(k)} lowest?",
                        (s.categories[_argmax(list(s.series[k].values), -1)],))

    def change(rng):
        k = series_of(rng)
        v = s.series[k].values
        return Question("change", f"{who}, by how much did the value{name(k)} change from {s.categories[0]} to "
                        f"{s.categories[-1]}?", tx.number_answers(v[-1] - v[0], s.decimals, s.unit))

    return {"value": value, "peak_year": peak, "lowest_year": low, "change": change}


def _pie(s: ChartSpec) -> dict[str, Callable[[random.Random], Question]]:
    who = f"In chart {s.number}"
    v = list(s.series[0].values)
    noun = s.x_label.lower()

    def share(rng):
        c = rng.randrange(len(s.categories))
        shown = tx.fixed(v[c], s.decimals)
        return Question("share", f"{who}, what share does {s.categories[c]} account for?", (f"{shown}%", shown))

    return {
        "share": share,
        "largest_share": lambda rng: Question("largest_share", f"{who}, which {noun} has the largest share?",
                                              (s.categories[_argmax(v)],)),
        "smallest_share": lambda rng: Question("smallest_share", f"{who}, which {noun} has the smallest share?",
                                               (s.categories[_argmax(v, -1)],)),
    }
