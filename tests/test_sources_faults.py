"""Source faults: text that is not UTF-8, duplicate ids and high-bit-depth images cost one row at most,
are counted with a reason and a location, and never turn into an aborted build or white training pixels."""

from __future__ import annotations

import io
import json
import pickle
import re

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from tests.fixtures.sources import (make_image, png16, truncated_png, write_chartqa_official, write_docvqa_hf,
                                    write_docvqa_official, write_infovqa_official)
from v2pe_common.images import is_high_depth, to_8bit, to_rgb
from v2pe_data.sources.base import REASONS, SourceError, probe
from v2pe_data.sources.real import open_real_source

COLUMNS = {"id": "qid", "question": "q", "answers": "ans", "image": "img"}


def jsonl_source(root, lines: list[bytes], images: dict[str, bytes] | None = None, **kw):
    """ROOT/val.jsonl from raw byte lines (images written next to it), opened as a generic source."""
    root.mkdir(parents=True, exist_ok=True)
    for name, data in (images or {"a.png": make_image("a", 30, 20)}).items():
        (root / name).write_bytes(data)
    (root / "val.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return open_real_source("generic", root, "val", columns=COLUMNS, **kw)


def line(qid: str, question: str = "q?", img: str = "a.png") -> bytes:
    return json.dumps({"qid": qid, "q": question, "ans": ["x"], "img": img}).encode()


def ids(src) -> list[str]:
    return [src.item(i).id for i in range(len(src))]


# ------------------------------------------------------------------------------------------ text encoding


def test_a_jsonl_line_with_a_non_utf8_byte_is_one_rejected_row_and_every_valid_row_is_kept(tmp_path):
    bad = line("q2", "caf@?").replace(b"@", b"\xff")
    broken = b'{"qid": "q4", "q": "\xff'  # neither UTF-8 nor JSON: the byte is named
    src = jsonl_source(tmp_path / "set", [line("q0"), line("q1"), bad, line("q3"), broken, line("q5")])
    assert ids(src) == ["q0", "q1", "q3", "q5"]
    got = [(r["id"], r["reason"], r["where"]) for r in src.rejected]
    assert got == [("q2", "bad_encoding", "val.jsonl:3"), ("#4", "bad_encoding", "val.jsonl:5")]
    assert "q holds byte 0xFF" in src.rejected[0]["detail"]
    assert "byte 0xFF" in src.rejected[1]["detail"] and "byte 20 of the line" in src.rejected[1]["detail"]
    assert src.describe()["rejected"]["bad_encoding"] == 2
    json.dumps(src.rejected, ensure_ascii=False).encode("utf-8")  # the manifest can hold it as UTF-8

    with pytest.raises(SourceError) as err:
        jsonl_source(tmp_path / "set", [line("q0"), line("q1"), bad], strict=True)
    assert err.value.reason == "bad_encoding" and err.value.id == "q2"
    assert "val.jsonl:3" in str(err.value) and "\n" not in str(err.value)


def test_a_lone_surrogate_escape_is_bad_encoding_and_a_utf8_bom_is_not(tmp_path):
    bom = b"\xef\xbb\xbf" + line("q0", "d\u00e9j\u00e0 vu?")
    src = jsonl_source(tmp_path / "set", [bom, line("q1", "\ud800?")])
    assert ids(src) == ["q0"] and src.item(0).question == "d\u00e9j\u00e0 vu?"
    assert [(r["id"], r["reason"]) for r in src.rejected] == [("q1", "bad_encoding")]
    assert "U+D800" in src.rejected[0]["detail"]


@pytest.mark.parametrize("writer", [write_docvqa_official, write_infovqa_official, write_chartqa_official])
def test_official_json_with_a_non_utf8_byte_in_one_row_loses_only_that_row(tmp_path, writer):
    w = writer(tmp_path, splits=("train",), bad_rows=True)
    src = open_real_source(w.kind, w, "train")
    assert [(src.item(i).id, src.item(i).question) for i in range(len(src))] == [
        (e.id, e.question) for e in w.expected["train"]]
    bad = [r for r in src.rejected if r["reason"] == "bad_encoding"]
    assert len(bad) == 1 and bad[0]["id"] in w.bad["train"]
    assert re.fullmatch(r"\S+\.json( data)?\[\d+\]", bad[0]["where"]) and bad[0]["reason"] in REASONS
    assert "byte 0xFF" in bad[0]["detail"]


def test_official_json_that_does_not_parse_is_one_line_error_naming_file_and_byte(tmp_path):
    root = tmp_path / "docvqa"
    root.mkdir()
    (root / "val_v1.0.json").write_bytes(b'{"data": [\xff]}')
    with pytest.raises(SourceError) as err:
        open_real_source("docvqa", root, "val")
    message = str(err.value)
    assert "val_v1.0.json" in message and "byte 10" in message and "\n" not in message


def test_a_parquet_string_cell_that_is_not_utf8_is_one_rejected_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "set"
    (root / "data").mkdir(parents=True)
    (root / "a.png").write_bytes(make_image("a", 30, 20))
    texts = [b"q0?", b"q\xff?", b"q2?"]
    offsets = np.cumsum([0] + [len(t) for t in texts]).astype(np.int32)
    question = pa.Array.from_buffers(pa.string(), 3, [None, pa.py_buffer(offsets.tobytes()),
                                                      pa.py_buffer(b"".join(texts))])
    pq.write_table(pa.table({"question": question, "answers": [["a"]] * 3, "image": ["a.png"] * 3}),
                   root / "data" / "val-00000-of-00001.parquet")
    src = open_real_source("generic", root, "val")
    assert [src.item(i).question for i in range(len(src))] == ["q0?", "q2?"]
    assert [(r["id"], r["reason"]) for r in src.rejected] == [("#1", "bad_encoding")]
    assert "column question" in src.rejected[0]["detail"]
    assert src.rejected[0]["where"] == "val-00000-of-00001.parquet row group 0 row 1"


# ------------------------------------------------------------------------------------------ duplicate ids


def test_a_repeated_generic_id_keeps_the_first_row_and_names_both_rows(tmp_path):
    src = jsonl_source(tmp_path / "set", [line("a", "first?"), line("b"), line("a", "second?"), line("c")])
    assert ids(src) == ["a", "b", "c"] and src.item(0).question == "first?"
    (rej,) = src.rejected
    assert (rej["id"], rej["reason"], rej["where"]) == ("a", "duplicate_id", "val.jsonl:3")
    assert "'a'" in rej["detail"] and "val.jsonl:1" in rej["detail"] and "val.jsonl:3" in rej["detail"]
    with pytest.raises(SourceError, match=r"generic:a: duplicate_id: .*val\.jsonl:1"):
        jsonl_source(tmp_path / "set", [line("a"), line("a")], strict=True)


def test_an_id_belongs_to_the_first_valid_row(tmp_path):
    images = {"a.png": make_image("a", 30, 20), "cut.png": truncated_png()}
    src = jsonl_source(tmp_path / "set", [line("a", "broken?", "cut.png"), line("a", "fine?")], images)
    assert ids(src) == ["a"] and src.item(0).question == "fine?"
    assert [r["reason"] for r in src.rejected] == ["corrupt_image"]


@pytest.mark.parametrize("layout", ["official", "parquet"])
def test_a_repeated_docvqa_question_id_keeps_the_first_row(tmp_path, layout):
    w = (write_docvqa_official(tmp_path, splits=("train",), bad_rows=True) if layout == "official"
         else write_docvqa_hf(tmp_path, splits=("train",), bad_rows=True))
    src = open_real_source("docvqa", w, "train")
    first = w.expected["train"][0]
    assert ids(src).count(first.id) == 1 and src.item(ids(src).index(first.id)).question == first.question
    (dup,) = [r for r in src.rejected if r["reason"] == "duplicate_id"]
    assert dup["id"] == first.id
    where_first = "data[0]" if layout == "official" else "train-00000-of-00002.parquet row group 0 row 0"
    assert where_first in dup["detail"] and dup["where"] in dup["detail"]


# ------------------------------------------------------------------------------------------ high bit depth


def test_to_rgb_scales_16_bit_grey_instead_of_clipping_it_to_white():
    data, values = png16(64, 32)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "I;16" and is_high_depth(im.mode)
        clipped = np.asarray(im.convert("RGB"))
        rgb = np.asarray(to_rgb(im))
    assert (clipped == 255).mean() > 0.9  # what Pillow alone does
    assert rgb.dtype == np.uint8 and rgb.shape == (32, 64, 3)
    want = np.rint(values / 257)
    assert np.abs(rgb[..., 0].astype(int) - want).max() <= 1 and (rgb[..., 0] == rgb[..., 2]).all()
    assert (rgb == 255).mean() < 0.01 and rgb.min() == 0 and rgb.max() == 255


def test_to_rgb_reads_every_16_bit_spelling_alike_and_refuses_an_unknown_scale():
    _, values = png16(16, 8)
    reference = np.asarray(to_rgb(Image.fromarray(values)))
    for im in (Image.fromarray(values.astype(">u2")), Image.fromarray(values.astype(np.int32))):
        assert im.mode in ("I;16B", "I") and (np.asarray(to_rgb(im)) == reference).all()
    with pytest.raises(ValueError, match="16-bit range"):
        to_rgb(Image.fromarray(np.array([[-1, 70000]], np.int32)))
    floats = Image.fromarray(np.array([[-5.0, 0.4, 100.6, 300.0]], np.float32))
    assert np.asarray(to_8bit(floats)).tolist() == [[0, 0, 101, 255]]  # the 0..255 scale, clipped


def test_to_rgb_matches_the_trainer_processors_conversion_for_8_bit_modes():
    from transformers.image_transforms import convert_to_rgb

    base = Image.frombytes("RGBA", (8, 6), bytes(range(192)))
    palette = base.convert("RGB").convert("P")
    palette.info["transparency"] = 3
    images = [base, base.convert("RGB"), base.convert("L"), base.convert("LA"), base.convert("CMYK"),
              base.convert("1"), palette, base.convert("RGB").convert("P")]
    for im in images:
        assert (np.asarray(to_rgb(im)) == convert_to_rgb(im, return_numpy=True)).all(), im.mode
    rgb = base.convert("RGB")
    assert to_rgb(rgb) is rgb  # no copy for the common case


def test_a_16_bit_png_in_a_source_loads_as_its_8_bit_png(tmp_path):
    data, values = png16(40, 24)
    plain = make_image("plain", 30, 20)
    src = jsonl_source(tmp_path / "set", [line("deep", img="deep.png"), line("plain", img="plain.png")],
                       {"deep.png": data, "plain.png": plain})
    deep, flat = src.item(0), src.item(1)
    assert (deep.width, deep.height, deep.ext, deep.doc_id) == (40, 24, "png", "deep.png")
    with Image.open(io.BytesIO(deep.load())) as im:
        assert im.format == "PNG" and im.mode == "L"
        assert np.abs(np.asarray(im).astype(int) - np.rint(values / 257)).max() <= 1
        assert (np.asarray(im.convert("RGB")) == 255).mean() < 0.01  # a reader's convert("RGB") is right now
    assert pickle.loads(pickle.dumps(deep)).load() == deep.load()
    assert flat.load() == plain  # 8-bit images keep their original bytes
    assert src.describe()["images_reencoded"] == 1


def test_the_loader_tiles_raw_16_bit_bytes_like_their_8_bit_conversion(tmp_path):
    from v2pe_common.tiling import IMAGENET_MEAN, IMAGENET_STD, TilingConfig
    from v2pe_common.tokenizer import load_tokenizer
    from v2pe_train.data.samples import SampleProcessor

    data, _ = png16(64, 48)
    with Image.open(io.BytesIO(data)) as im:
        buf = io.BytesIO()
        to_8bit(im).save(buf, "PNG")
    tiling = TilingConfig(max_tiles=1)
    proc = SampleProcessor(load_tokenizer(), tiling=tiling, pixel_dtype="fp32")
    raw, eight = (torch.empty((1, 3, 448, 448)) for _ in range(2))
    proc.tile(data, "deep", 1, tiling, raw)
    proc.tile(buf.getvalue(), "eight", 1, tiling, eight)
    white = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(3, 1, 1)
    assert (raw - white).abs().lt(1e-3).all(dim=0).float().mean() < 0.1
    assert torch.allclose(raw, eight)


def test_a_16_bit_image_pasted_on_a_canvas_is_its_8_bit_conversion():
    from v2pe_data.tasks.long_vqa.canvas import CanvasLayout, render_canvas
    from v2pe_data.records import Item

    data, _ = png16(64, 48)
    with Image.open(io.BytesIO(data)) as im:
        buf = io.BytesIO()
        to_8bit(im).save(buf, "PNG")

    def item(payload: bytes) -> Item:
        return Item(dataset="t", split="val", id="x", doc_id="x", width=64, height=48, ext="png", question="q",
                    answers=("a",), load=lambda: payload)
    layout = CanvasLayout(grid=1, cell=448)
    assert render_canvas(layout, [item(data)], ["A"]) == render_canvas(layout, [item(buf.getvalue())], ["A"])


# ------------------------------------------------------------------------------------------ Pillow globals


def test_probing_reads_no_pillow_bomb_limit_and_writes_no_pillow_global(monkeypatch):
    seen = []
    factory, accept = Image.OPEN["PNG"]

    def spy(fp, filename):
        seen.append((Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES))
        return factory(fp, filename)

    monkeypatch.setitem(Image.OPEN, "PNG", (spy, accept))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # far below the image: our max_pixels decides
    assert probe(make_image("p", 40, 30), 10_000) == (40, 30, "png", False)
    assert seen == [(100, False)]


def test_a_caller_who_loads_truncated_images_still_gets_truncated_data_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    images = {"a.png": make_image("a", 30, 20), "cut.png": truncated_png()}
    src = jsonl_source(tmp_path / "set", [line("a"), line("b", img="cut.png")], images)
    assert ids(src) == ["a"] and [r["reason"] for r in src.rejected] == ["corrupt_image"]
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True
