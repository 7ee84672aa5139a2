"""OBELICS-style interleaved documents (JSONL and parquet): valid rows kept whole, bad rows counted by reason."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import pytest
from PIL import Image

from tests.fixtures.sources import make_image
from v2pe_data.records import Item
from v2pe_data.sources.base import SourceError
from v2pe_data.sources.interleaved import REASONS, open_interleaved

PNG = make_image("page", 40, 30)
JPG = make_image("photo", 50, 20, "JPEG")
CORRUPT = PNG[: len(PNG) // 2]


def _good(tag: str, images: list[str]) -> dict:
    """A valid document: text, image, text, ... (None in the gaps)."""
    texts, imgs = [], []
    for k, img in enumerate(images):
        texts += [f"{tag} paragraph {k}.", None]
        imgs += [None, img]
    texts.append(f"{tag} closing words.")
    imgs.append(None)
    return {"id": tag, "texts": texts, "images": imgs}


def write_jsonl(root: Path) -> tuple[list[tuple[dict, int]], list[tuple[str, str]]]:
    """train.jsonl with good rows and bad rows of every reason; returns ([(good row, line)], [(reason, FILE:LINE)])."""
    (root / "img").mkdir(parents=True)
    (root / "img" / "a.png").write_bytes(PNG)
    (root / "img" / "b.jpg").write_bytes(JPG)
    (root / "img" / "broken.png").write_bytes(CORRUPT)
    (root.parent / "outside.png").write_bytes(PNG)
    good = [_good("g1", ["img/a.png"]), _good("g2", ["img/b.jpg", "img/a.png"]),
            {"texts": ["only text, no id"], "images": [None]}]
    bad = [
        ("missing_image", {"id": "m", "texts": ["x", None], "images": [None, "img/nowhere.png"]}),
        ("corrupt_image", {"id": "c", "texts": ["x", None], "images": [None, "img/broken.png"]}),
        ("misaligned", {"id": "l", "texts": ["x", None, "y"], "images": [None, "img/a.png"]}),
        ("misaligned", {"id": "b", "texts": ["x", "y"], "images": [None, "img/a.png"]}),
        ("misaligned", {"id": "n", "texts": ["x", None], "images": [None, None]}),
        ("misaligned", {"id": "p", "texts": ["see <image> here"], "images": [None]}),
        ("empty_document", {"id": "e", "texts": ["  "], "images": [None]}),
        ("path_escape", {"id": "x", "texts": ["x", None], "images": [None, "../outside.png"]}),
    ]
    lines: list[bytes] = []
    kept, expected_bad = [], []
    for row, reason in [(good[0], None), *[(b, r) for r, b in bad[:4]], (good[1], None),
                        *[(b, r) for r, b in bad[4:]], (good[2], None)]:
        lines.append(json.dumps(row).encode())
        if reason is None:
            kept.append((row, len(lines)))
        else:
            expected_bad.append((reason, f"train.jsonl:{len(lines)}"))
    lines.append(b'{"id": "enc", "texts": ["caf\xe9"], "images": [null]}')  # Latin-1, not UTF-8
    expected_bad.append(("bad_encoding", f"train.jsonl:{len(lines)}"))
    (root / "train.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (root / "val.jsonl").write_text(json.dumps(_good("v1", ["img/a.png"])) + "\n")
    return kept, expected_bad


def write_parquet(root: Path) -> tuple[list[dict], list[str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "img").mkdir(parents=True)
    (root / "img" / "a.png").write_bytes(PNG)
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows = [
        {"id": "g1", "texts": ["intro", None, "outro"], "images": [None, {"bytes": JPG, "path": None}, None]},
        {"id": "m", "texts": ["x", None], "images": [None, {"bytes": None, "path": "img/gone.png"}]},
        {"id": "g2", "texts": [None, "after"], "images": [{"bytes": None, "path": "img/a.png"}, None]},
        {"id": "c", "texts": ["x", None], "images": [None, {"bytes": CORRUPT, "path": None}]},
        {"id": "l", "texts": ["x"], "images": [None, None]},
        {"id": "e", "texts": [], "images": []},
        {"id": "x", "texts": [None], "images": [{"bytes": None, "path": "/etc/passwd"}]},
    ]
    table = pa.table({"id": [r["id"] for r in rows], "texts": [r["texts"] for r in rows],
                      "images": pa.array([r["images"] for r in rows], type=pa.list_(struct))})
    (root / "data").mkdir()
    pq.write_table(table, root / "data" / "train-00000-of-00001.parquet", row_group_size=3)
    return [rows[0], rows[2]], ["missing_image", "corrupt_image", "misaligned", "empty_document", "path_escape"]


def _decoded(data: bytes) -> tuple:
    with Image.open(io.BytesIO(data)) as im:
        return im.size, im.convert("RGB").tobytes()


def test_jsonl_keeps_every_valid_document_whole_in_file_order(tmp_path):
    good, _ = write_jsonl(tmp_path / "obelics")
    src = open_interleaved(tmp_path / "obelics", "train")
    assert len(src) == len(good)
    for i, (row, _) in enumerate(good):
        doc = src.document(i)
        expect = [t if t is not None else img for t, img in zip(row["texts"], row["images"])]
        assert len(doc.blocks) == len(expect)
        for block, want in zip(doc.blocks, expect):
            if isinstance(block, Item):
                original = (tmp_path / "obelics" / want).read_bytes()
                assert block.load() == original
                assert (block.width, block.height) == _decoded(original)[0]
                assert block.doc_id == doc.doc_id
            else:
                assert block == want
    assert src.document(0).doc_id == "interleaved:g1"
    assert src.document(2).doc_id == f"interleaved:train.jsonl:{good[2][1]}"  # no id: named by file and line


def test_jsonl_bad_rows_are_counted_by_reason_with_id_and_file_line(tmp_path):
    _, expected = write_jsonl(tmp_path / "obelics")
    src = open_interleaved(tmp_path / "obelics", "train")
    got = [(r["reason"], r["where"]) for r in src.rejected]
    assert got == expected
    assert {r["source"] for r in src.rejected} == {"interleaved"}
    assert [r["id"] for r in src.rejected][:2] == ["m", "c"]  # the row's own id when it has one
    counts = src.describe()["rejected"]
    assert set(counts) == set(REASONS)
    for reason in ("missing_image", "corrupt_image", "misaligned", "empty_document", "bad_encoding", "path_escape"):
        assert counts[reason] == sum(r == reason for r, _ in expected) > 0
    assert src.describe()["rows_seen"] == len(expected) + len(src)


def test_strict_raises_at_the_first_bad_row_naming_source_id_reason_and_line(tmp_path):
    write_jsonl(tmp_path / "obelics")
    with pytest.raises(SourceError) as err:
        open_interleaved(tmp_path / "obelics", "train", strict=True)
    assert err.value.reason == "missing_image" and err.value.id == "m"
    assert str(err.value).startswith("interleaved:m: missing_image:") and "train.jsonl:2" in str(err.value)


def test_parquet_images_as_bytes_or_paths_and_bad_rows_by_reason(tmp_path):
    good, reasons = write_parquet(tmp_path / "pq")
    src = open_interleaved(tmp_path / "pq", "train")
    assert [r["reason"] for r in src.rejected] == reasons
    assert all("row group" in r["where"] for r in src.rejected)
    assert len(src) == 2
    first, second = src.document(0), src.document(1)
    assert [b if isinstance(b, str) else b.load() for b in first.blocks] == ["intro", JPG, "outro"]
    assert first.blocks[1].ext == "jpg" and (first.blocks[1].width, first.blocks[1].height) == (50, 20)
    assert second.blocks[0].load() == PNG and second.blocks[1] == "after"
    # an image of the second row group is read back from its own list cell
    assert second.doc_id == "interleaved:g2"


def test_splits_are_told_apart_by_file_name_and_a_missing_split_is_a_clear_error(tmp_path):
    write_jsonl(tmp_path / "obelics")
    val = open_interleaved(tmp_path / "obelics", "val")
    assert len(val) == 1 and val.document(0).doc_id == "interleaved:v1"
    with pytest.raises(SourceError, match="no 'test' split"):
        open_interleaved(tmp_path / "obelics", "test")
    with pytest.raises(SourceError, match="no such file"):
        open_interleaved(tmp_path / "absent", "train")


def test_documents_and_their_image_items_pickle_and_load_lazily(tmp_path):
    write_parquet(tmp_path / "pq")
    src = open_interleaved(tmp_path / "pq", "train")
    doc = pickle.loads(pickle.dumps(src.document(0)))
    assert doc.images[0].load() == JPG


def test_a_byte_order_mark_on_the_first_line_costs_nothing(tmp_path):
    root = tmp_path / "bom"
    root.mkdir()
    row = {"id": "only", "texts": ["first words"], "images": [None]}
    (root / "train.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(row).encode() + b"\n")
    src = open_interleaved(root, "train")
    assert not src.rejected and src.document(0).blocks == ("first words",)


def test_a_document_changed_after_indexing_is_a_clear_error(tmp_path):
    write_jsonl(tmp_path / "obelics")
    src = open_interleaved(tmp_path / "obelics", "train")
    (tmp_path / "obelics" / "train.jsonl").write_text("{}\n")
    with pytest.raises(SourceError, match="interleaved:g1: document changed since the source was indexed"):
        src.document(0)
