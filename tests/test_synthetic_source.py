"""The synthetic source: deterministic, exactly answerable, readable documents, generated on demand."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import subprocess
import sys
import time
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from PIL import Image

from v2pe_common.tiling import num_tiles
from v2pe_data.records import Item
from v2pe_data.sources.synthetic import KINDS, LayoutError, SyntheticSource, render
from v2pe_data.sources.synthetic import source as source_module
from v2pe_data.sources.synthetic.ids import document_code
from v2pe_data.sources.synthetic.pen import Pen
from v2pe_data.sources.synthetic.spec import ChartSpec, FormSpec, InvoiceSpec, ReportSpec, TableSpec
from v2pe_data.sources.synthetic.text import fixed

ROOT = Path(__file__).resolve().parents[1]


def items_of(kind: str, n: int, split: str = "train", seed: int = 0) -> list[tuple[Item, object]]:
    src = SyntheticSource(split=split, seed=seed, kinds=[kind])
    return [(src.item(i), src.spec(i)) for i in range(n)]


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# ------------------------------------------------------------------------------------------ contract


def test_item_fields_follow_the_record_contract():
    src = SyntheticSource(split="train", seed=3)
    item = src.item(123)
    assert isinstance(item, Item)
    assert (item.dataset, item.split, item.ext) == ("synthetic", "train", "jpg")
    assert item.id == item.doc_id == "synthetic-train-000000123"
    assert item.title and item.question and item.answers
    assert all(isinstance(a, str) and a for a in item.answers)
    assert item.question_type.split("/")[0] in KINDS
    assert len(src) == 10**9


def test_index_outside_the_virtual_length_is_an_index_error():
    src = SyntheticSource()
    with pytest.raises(IndexError):
        src.item(-1)
    with pytest.raises(IndexError):
        src.item(len(src))


def test_unknown_kind_or_format_is_rejected():
    with pytest.raises(ValueError):
        SyntheticSource(kinds=["poster"])
    with pytest.raises(ValueError):
        SyntheticSource(image_format="gif")


def test_kinds_restricts_the_mix():
    src = SyntheticSource(kinds=["pie_chart", "invoice"])
    seen = {src.spec(i).kind for i in range(60)}
    assert seen == {"pie_chart", "invoice"}


def test_default_mix_contains_every_kind():
    src = SyntheticSource()
    assert {src.spec(i).kind for i in range(300)} == set(KINDS)


# -------------------------------------------------------------------------------------- determinism


def test_same_seed_split_and_index_give_the_same_spec_and_bytes():
    a, b = SyntheticSource(seed=7), SyntheticSource(seed=7)
    for i in (0, 1, 17, 999_999):
        assert a.spec(i) == b.spec(i)
        ia, ib = a.item(i), b.item(i)
        assert (ia.question, ia.answers, ia.title, ia.width, ia.height) == (ib.question, ib.answers, ib.title,
                                                                            ib.width, ib.height)
        assert ia.load() == ib.load() == ia.load()


_DIGESTS = """
import hashlib, sys
from v2pe_data.sources.synthetic import SyntheticSource
src = SyntheticSource(seed=int(sys.argv[1]))
print(" ".join(hashlib.sha256(src.item(int(i)).load()).hexdigest() for i in sys.argv[2:]))
"""


def test_bytes_are_identical_in_a_fresh_process():
    # A fresh interpreter has another hash() salt and cold glyph caches: neither may change a byte.
    indices = ["0", "5", "42"]
    out = subprocess.run([sys.executable, "-c", _DIGESTS, "11", *indices], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": "12345"})
    src = SyntheticSource(seed=11)
    assert out.stdout.split() == [hashlib.sha256(src.item(int(i)).load()).hexdigest() for i in indices]


def test_different_seeds_give_different_documents():
    a, b = SyntheticSource(seed=0), SyntheticSource(seed=1)
    assert [a.item(i).title for i in range(20)] != [b.item(i).title for i in range(20)]


def test_item_is_drawn_without_rendering(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("item() must not render")

    monkeypatch.setattr(source_module, "encode", boom)
    src = SyntheticSource()
    start = time.perf_counter()
    items = [src.item(i) for i in range(1000)]
    assert time.perf_counter() - start < 5.0
    assert all(it.width > 0 and it.height > 0 for it in items)


def test_item_load_survives_pickling():
    item = SyntheticSource(seed=2).item(9)
    clone = pickle.loads(pickle.dumps(item))
    assert clone.load() == item.load()


# ----------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("kind", KINDS)
def test_item_size_equals_decoded_image_size(kind):
    for item, _ in items_of(kind, 5):
        assert decode(item.load()).size == (item.width, item.height)
    png = SyntheticSource(kinds=[kind], image_format="png").item(5)
    image = decode(png.load())
    assert (image.format, image.size, png.ext) == ("PNG", (png.width, png.height), "png")


def test_jpeg_bytes_carry_no_exif_or_timestamps():
    data = SyntheticSource().item(3).load()
    image = decode(data)
    assert image.format == "JPEG"
    assert not image.getexif()
    assert b"Exif" not in data[:200]


def test_strict_check_catches_text_off_the_page_over_text_or_in_missing_glyphs():
    pen = Pen(Image.new("L", (200, 100), 255), strict=True)
    pen.text(10, 10, "Price \u20ac5", 14)  # the bundled font has no euro sign
    pen.text(12, 12, "overlap", 14)
    pen.text(150, 80, "off the page", 14)
    with pytest.raises(LayoutError) as err:
        pen.check()
    assert all(word in str(err.value) for word in ("missing glyphs", "overlap", "off the page"))


@pytest.mark.parametrize("kind", KINDS)
def test_every_text_stays_on_the_page_apart_from_other_text_and_in_real_glyphs(kind):
    src = SyntheticSource(kinds=[kind], seed=5)
    for i in range(12):
        render(src.spec(i), strict=True)  # raises LayoutError on a broken rule


def test_pages_look_like_documents_not_blank_or_noise():
    src = SyntheticSource()
    for i in range(14):
        gray = render(src.spec(i)).convert("L")
        hist = gray.histogram()
        ink = sum(hist[:200]) / (gray.width * gray.height)
        assert 0.005 < ink < 0.6, (src.spec(i).kind, ink)


def test_sizes_stay_within_the_advertised_ranges():
    src = SyntheticSource()
    for i in range(400):
        s = src.spec(i)
        if s.kind in ("invoice", "form", "report"):
            assert 600 <= s.width <= 1700 and 600 <= s.height <= 2800, (s.kind, s.width, s.height)
        elif s.kind.endswith("_chart"):
            assert 500 <= s.width <= 1400, (s.kind, s.width)


def test_tile_counts_spread_from_one_tile_to_the_maximum():
    src = SyntheticSource()
    tiles = Counter(num_tiles(it.width, it.height) for it in (src.item(i) for i in range(1000)))
    assert tiles[1] > 0
    assert sum(n for t, n in tiles.items() if t >= 9) > 0
    assert len(tiles) >= 6, tiles


# ---------------------------------------------------------------------------------------- identity


def test_titles_are_unique_over_thousands_of_items():
    src = SyntheticSource()
    titles = [src.item(i).title for i in range(3000)]
    assert len(set(titles)) == len(titles)


def test_document_codes_never_repeat_within_or_across_splits():
    codes = [document_code(0, split, i) for split in ("train", "val", "test") for i in range(20000)]
    assert len(set(codes)) == len(codes)
    assert all(len(c) == 7 for c in codes)


def test_train_and_val_are_disjoint():
    train, val = SyntheticSource(split="train"), SyntheticSource(split="val")
    t = {train.item(i).title for i in range(1500)}
    v = {val.item(i).title for i in range(1500)}
    assert not t & v
    assert train.item(0).id != val.item(0).id
    assert train.spec(0) != val.spec(0)


def test_question_names_the_document_by_its_printed_identifier():
    src = SyntheticSource()
    for i in range(500):
        item, spec = src.item(i), src.spec(i)
        assert spec.number in item.question
        assert spec.number in item.title
        assert spec.code in spec.number


# ------------------------------------------------------------------------------------------ answers


def test_invoice_total_equals_sum_of_lines_plus_tax():
    for item, s in items_of("invoice", 200):
        assert isinstance(s, InvoiceSpec)
        lines = sum(li.quantity * li.unit_cents for li in s.lines)
        # Tax is rounded half up to the cent, as printed.
        tax = int((Decimal(lines) * s.tax_rate_bp / 10000).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        assert s.subtotal_cents == lines
        assert s.tax_cents == tax
        assert s.total_cents == lines + tax
        expected = {"total_due": s.total_cents, "subtotal": s.subtotal_cents, "tax_amount": s.tax_cents}
        kind = item.question_type.split("/")[1]
        if kind in expected:
            assert item.answers[0] == fixed(expected[kind], 2)
            assert fixed(expected[kind], 2, grouping=False) in item.answers


def test_invoice_line_questions_answer_from_the_named_line():
    for item, s in items_of("invoice", 300):
        kind = item.question_type.split("/")[1]
        m = re.search(r'"(.+)"', item.question)
        if kind in ("quantity", "unit_price", "line_amount"):
            line = next(li for li in s.lines if li.description == m.group(1))
            want = {"quantity": str(line.quantity), "unit_price": fixed(line.unit_cents, 2),
                    "line_amount": fixed(line.amount_cents, 2)}[kind]
            assert item.answers[0] == want
        if kind == "largest_line_item":
            assert item.answers == (max(s.lines, key=lambda li: li.amount_cents).description,)
        if kind == "line_count":
            assert item.answers == (str(len(s.lines)),)


def _series_named_in(question: str, s: ChartSpec) -> int:
    if len(s.series) == 1:
        return 0
    return next(k for k, ser in enumerate(s.series) if f"{ser.name}?" in question)


def test_bar_chart_highest_and_lowest_answers_are_the_argmax_and_argmin():
    checked = 0
    for item, s in items_of("bar_chart", 250):
        kind = item.question_type.split("/")[1]
        if kind in ("highest", "lowest"):
            values = s.series[_series_named_in(item.question, s)].values
            pick = max if kind == "highest" else min
            assert item.answers == (s.categories[values.index(pick(values))],)
            assert sorted(values).count(pick(values)) == 1  # never a tie
            checked += 1
        if kind == "value":
            c = next(i for i, cat in enumerate(s.categories) if f"for {cat}" in item.question)
            assert item.answers[0] == s.value(c, _series_named_in(item.question, s))
    assert checked > 10


def test_line_chart_peak_year_is_the_year_of_the_maximum():
    for item, s in items_of("line_chart", 200):
        if item.question_type.endswith("/peak_year"):
            k = next((k for k, ser in enumerate(s.series) if f"for {ser.name} " in item.question), 0)
            values = s.series[k].values
            assert item.answers == (s.categories[values.index(max(values))],)


def test_pie_shares_sum_to_exactly_100_percent_and_largest_share_is_the_argmax():
    for item, s in items_of("pie_chart", 150):
        shares = s.series[0].values
        assert sum(shares) == 100 * 10**s.decimals
        assert len(set(shares)) == len(shares)
        if item.question_type.endswith("/largest_share"):
            assert item.answers == (s.categories[shares.index(max(shares))],)
        if item.question_type.endswith("/share"):
            assert item.answers[0].endswith("%")


def test_table_cell_lookup_answers_the_named_row_and_column():
    checked = 0
    for item, s in items_of("table", 250):
        assert isinstance(s, TableSpec)
        t = s.table
        if item.question_type.endswith("/cell_lookup"):
            m = re.search(r"value for (.+) in (.+)\?$", item.question)
            r, c = t.row_labels.index(m.group(1)), t.columns.index(m.group(2))
            assert item.answers[0] == fixed(t.values[r][c], t.decimals[c])
            checked += 1
        if item.question_type.endswith("/column_total"):
            c = t.columns.index(re.search(r"total for (.+)\?$", item.question).group(1))
            assert item.answers[0] == fixed(sum(row[c] for row in t.values), t.decimals[c])
    assert checked > 10


def test_report_total_row_is_the_column_sum_and_lookups_match_cells():
    for item, s in items_of("report", 150):
        assert isinstance(s, ReportSpec)
        t = s.table
        for c in range(len(t.columns)):
            assert t.total_cell(c) == fixed(sum(row[c] for row in t.values), t.decimals[c])
        if item.question_type.endswith("/cell_lookup"):
            r = next(i for i, lab in enumerate(t.row_labels) if item.question.endswith(f" {lab}?"))
            c = next(i for i, col in enumerate(t.columns) if f" {col.split(' (')[0].lower()} " in item.question)
            assert item.answers[0] == t.cell(r, c)
        if item.question_type.endswith("/author"):
            assert item.answers == (s.author,)


def test_form_field_answer_is_the_value_printed_in_that_field():
    for item, s in items_of("form", 200):
        assert isinstance(s, FormSpec)
        if item.question_type.endswith("/field_value"):
            label = re.search(r'"(.+)" field', item.question).group(1)
            field = next(f for sec in s.sections for f in sec.fields if f.label == label)
            assert item.answers[0] == field.value
        if item.question_type.endswith("/checked_option"):
            assert item.answers == (s.choice.options[s.choice.selected],)


def test_several_question_types_occur_for_every_kind():
    for kind in KINDS:
        types = {item.question_type for item, _ in items_of(kind, 120)}
        assert len(types) >= 3, (kind, types)
