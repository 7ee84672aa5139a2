"""Real-data source adapters (DocVQA, InfoVQA, ChartQA, generic) on tiny fixtures in the published layouts."""

from __future__ import annotations

import io
import json
import os
import pickle

import pytest
from PIL import Image

from tests.fixtures.sources import (Written, bomb_png, make_image, write_all, write_chartqa_hf, write_docvqa_hf,
                                    write_generic)
from v2pe_data.records import Item
from v2pe_data.sources.base import REASONS, HubUnavailable, SourceError
from v2pe_data.sources.real import open_real_source

CASES = ["docvqa_parquet", "docvqa_disk", "docvqa_official", "infovqa_parquet", "infovqa_official", "chartqa_m4",
         "chartqa_masry", "chartqa_official", "generic_jsonl", "generic_parquet", "generic_imagefolder"]
SPLITS = ["train", "val"]


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Written]:
    return write_all(tmp_path_factory.mktemp("bad"), bad_rows=True)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict[str, Written]:
    return write_all(tmp_path_factory.mktemp("clean"), bad_rows=False)


def on_disk(w: Written, split: str) -> str:
    """The fixture's own name for a split (lmms-lab writes 'validation', the others 'val')."""
    return next(s for s in w.expected if s == split or (split == "val" and s == "validation"))


def open_(w: Written, split: str, **kw):
    return open_real_source(w.kind, w, split, columns=w.columns, config=w.config, **kw)


def as_tuple(x) -> tuple:
    return (x.id, x.doc_id, x.question, tuple(x.answers), x.width, x.height, x.ext, x.question_type)


# ------------------------------------------------------------------------------------------ every layout


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("case", CASES)
def test_valid_rows_become_items_with_provenance_and_original_bytes(bad, case, split):
    w = bad[case]
    src = open_(w, split)
    expected = w.expected[on_disk(w, split)]
    assert (src.name, src.split, src.describe()["dataset"]) == (w.kind, split, w.kind)
    assert len(src) == len(expected) > 0
    for i, exp in enumerate(expected):
        item = src.item(i)
        assert isinstance(item, Item)
        assert (item.dataset, item.split, item.title) == (src.name, split, "")
        assert as_tuple(item) == as_tuple(exp)
        data = item.load()
        assert data == exp.data  # the original encoded bytes, not a re-encode
        with Image.open(io.BytesIO(data)) as im:
            assert im.size == (item.width, item.height)
            assert {"PNG": "png", "JPEG": "jpg"}[im.format] == item.ext
    with pytest.raises(IndexError):
        src.item(len(src))


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("case", CASES)
def test_bad_rows_are_skipped_and_counted_with_id_and_reason(bad, case, split):
    w = bad[case]
    src = open_(w, split)
    want = w.bad[on_disk(w, split)]
    assert {r["id"]: r["reason"] for r in src.rejected} == want
    assert len(src.rejected) == len(want)
    assert all(r["source"] == src.name and r["detail"] and r["reason"] in REASONS for r in src.rejected)
    info = src.describe()
    json.dumps(info)  # goes into the manifest as is
    counts = {reason: list(want.values()).count(reason) for reason in REASONS}
    assert info["rejected"] == counts
    assert info["items_valid"] == len(src) and info["rows_seen"] == len(src) + len(want)
    assert (info["kind"], info["split"], info["layout"]) == (w.kind, split, w.layout)


@pytest.mark.parametrize("case", CASES)
def test_every_reason_the_layout_can_express_is_covered(bad, case):
    reasons = set(bad[case].bad["train"].values())
    raw = case.endswith(("official", "jsonl", "imagefolder"))
    assert reasons >= {"missing_field", "missing_image", "corrupt_image", "too_many_pixels"}
    if raw:
        # ChartQA's ids (DOC#K) and an imagefolder's without an id column (row numbers) cannot repeat
        unique_ids = case in ("chartqa_official", "generic_imagefolder")
        # special_token is decided by the build's tokenizer after the index pass (RealSource.screen)
        assert reasons == set(REASONS) - ({"duplicate_id"} if unique_ids else set()) - {"special_token"}


@pytest.mark.parametrize("case", CASES)
def test_strict_raises_at_the_first_bad_row_naming_source_id_and_reason(bad, clean, case):
    w = bad[case]
    first_id, reason = next(iter(w.bad["train"].items()))
    with pytest.raises(SourceError) as err:
        open_(w, "train", strict=True)
    name = open_(w, "train").name
    assert str(err.value).startswith(f"{name}:{first_id}: {reason}: ")
    assert (err.value.source, err.value.id, err.value.reason) == (name, first_id, reason)
    ok = open_(clean[case], "train", strict=True)  # clean data passes strict
    assert [as_tuple(ok.item(i)) for i in range(len(ok))] == [as_tuple(e) for e in clean[case].expected["train"]]
    assert ok.rejected == []


@pytest.mark.parametrize("case", CASES)
def test_splits_are_respected(bad, case):
    w = bad[case]
    train, val = open_(w, "train"), open_(w, "val")
    train_q = {train.item(i).question for i in range(len(train))}
    val_q = {val.item(i).question for i in range(len(val))}
    assert all(q.startswith("[train]") for q in train_q)
    assert all(q.startswith("[val") for q in val_q)
    if case != "generic_imagefolder":  # there ids default to row numbers, unique within a split only
        assert not {train.item(i).id for i in range(len(train))} & {val.item(i).id for i in range(len(val))}
    for name in ("validation", "dev"):  # spellings of val, kept as the caller wrote them
        other = open_(w, name)
        assert [as_tuple(other.item(i)) for i in range(len(other))] == [as_tuple(val.item(i)) for i in range(len(val))]
        assert {other.item(i).split for i in range(len(other))} == {name}
    with pytest.raises(SourceError, match="test"):
        open_(w, "test")


def test_items_pickle_and_load_lazily(bad):
    for case in ("docvqa_parquet", "docvqa_disk", "docvqa_official"):
        src = open_(bad[case], "val")
        for i in reversed(range(len(src))):  # out of order: parquet row groups and Arrow rows re-read
            item = src.item(i)
            again = pickle.loads(pickle.dumps(item))
            assert again.load() == item.load() == bad[case].expected["validation" if "official" not in case
                                                                       else "val"][i].data
        # only small values are kept per item: no bytes, no pixels
        assert all(isinstance(x, (str, int)) for e in src._entries for x in e.locator)


def test_items_sharing_an_image_share_a_doc_id(bad):
    for case in ("docvqa_parquet", "infovqa_official", "chartqa_m4", "chartqa_official", "generic_jsonl"):
        src = open_(bad[case], "train")
        by_bytes: dict[bytes, set] = {}
        for i in range(len(src)):
            item = src.item(i)
            by_bytes.setdefault(item.load(), set()).add(item.doc_id)
        assert all(len(ids) == 1 for ids in by_bytes.values())
        assert len(set().union(*by_bytes.values())) == len(by_bytes) < len(src)


# ------------------------------------------------------------------------------------------ layouts


def test_docvqa_hf_test_split_has_no_answers_so_every_row_is_missing_field(tmp_path):
    w = write_docvqa_hf(tmp_path, splits=("test",))
    src = open_real_source("docvqa", w, "test")
    assert len(src) == 0
    assert {r["id"]: r["reason"] for r in src.rejected} == w.bad["test"]
    assert set(w.bad["test"].values()) == {"missing_field"}


def test_infovqa_through_the_docvqa_kind_with_its_config(bad):
    w = bad["infovqa_parquet"]
    a = open_real_source("docvqa", w, "val", config="InfographicVQA")
    b = open_real_source("infovqa", w, "val")
    assert a.name == b.name == "infovqa"
    assert [as_tuple(a.item(i)) for i in range(len(a))] == [as_tuple(b.item(i)) for i in range(len(b))]


def test_hub_config_folder_or_a_single_parquet_file_can_be_given(bad):
    w = bad["docvqa_parquet"]
    whole = open_(w, "val")
    folder = open_real_source("docvqa", w.root / "DocVQA", "val")
    assert [as_tuple(folder.item(i)) for i in range(len(folder))] == [
        as_tuple(whole.item(i)) for i in range(len(whole))]
    single = open_real_source("docvqa", w.root / "DocVQA" / "validation-00001-of-00002.parquet", "val")
    assert 0 < len(single) < len(whole)
    with pytest.raises(SourceError, match="validation"):
        open_real_source("docvqa", w.root / "DocVQA" / "validation-00001-of-00002.parquet", "train")


def test_official_layout_variants(bad, tmp_path):
    import shutil

    # DocVQA: the annotations at the root, the images archive extracted with its documents/ folder
    src_root = bad["docvqa_official"].root
    root = tmp_path / "docvqa"
    (root / "spdocvqa_images" / "documents").mkdir(parents=True)
    for f in (src_root / "spdocvqa_images").iterdir():
        shutil.copy(f, root / "spdocvqa_images" / "documents" / f.name)
    shutil.copy(src_root / "spdocvqa_qas" / "val_v1.0_withQT.json", root / "val_v1.0_withQT.json")
    src = open_real_source("docvqa", root, "val")
    want = bad["docvqa_official"].expected["val"]
    assert [as_tuple(src.item(i)) for i in range(len(src))] == [as_tuple(e) for e in want]
    assert src.describe()["annotations"] == str(root / "val_v1.0_withQT.json")
    # InfoVQA: the release spells its train file infographicVQA_train_v1.0.json
    w = bad["infovqa_official"]
    root = tmp_path / "infovqa"
    shutil.copytree(w.root, root)
    qas = root / "infographicsvqa_qas"
    (qas / "infographicsVQA_train_v1.0_withQT.json").rename(qas / "infographicVQA_train_v1.0.json")
    src = open_real_source("infovqa", root, "train")
    assert [as_tuple(src.item(i)) for i in range(len(src))] == [as_tuple(e) for e in w.expected["train"]]


def test_save_to_disk_single_split_folders(tmp_path, bad):
    w = bad["docvqa_disk"]
    sub = open_real_source("docvqa", w.root / "validation", "val")  # one split of a DatasetDict
    assert len(sub) == len(w.expected["validation"])
    with pytest.raises(SourceError, match="holds split 'validation'"):
        open_real_source("docvqa", w.root / "validation", "train")
    w2 = write_chartqa_hf(tmp_path, splits=("val",), layout="save_to_disk")
    import datasets

    one = datasets.load_from_disk(str(w2.root))["val"]
    one.save_to_disk(str(tmp_path / "named"))  # state.json keeps _split = 'val'
    assert len(open_real_source("chartqa", tmp_path / "named", "val")) == len(w2.expected["val"])
    with pytest.raises(SourceError, match="holds split 'val', not 'train'"):
        open_real_source("chartqa", tmp_path / "named", "train")
    datasets.Dataset.from_dict(one.to_dict(), features=one.features).save_to_disk(str(tmp_path / "anon"))
    with pytest.raises(SourceError, match="cannot tell which split"):
        open_real_source("chartqa", tmp_path / "anon", "val")


def test_ahmed_masry_image_column_is_raw_binary(bad):
    import pyarrow.parquet as pq

    files = sorted((bad["chartqa_masry"].root / "data").glob("val-*.parquet"))
    schema = pq.ParquetFile(files[0]).schema_arrow
    assert str(schema.field("image").type) == "binary" and str(schema.field("label").type) == "string"
    m4 = sorted((bad["chartqa_m4"].root / "data").glob("val-*.parquet"))
    assert str(pq.ParquetFile(m4[0]).schema_arrow.field("image").type) == "struct<bytes: binary, path: string>"


def test_wrong_kind_or_missing_layout_is_a_clear_error(bad, tmp_path):
    with pytest.raises(SourceError, match="lacks columns"):
        open_real_source("docvqa", bad["chartqa_m4"], "val")
    with pytest.raises(SourceError, match="no 'val' split"):
        open_real_source("chartqa", tmp_path, "val")
    with pytest.raises(SourceError, match="no such file"):
        open_real_source("docvqa", tmp_path / "lmms-lab" / "DocVQA", "val")
    with pytest.raises(SourceError, match="unknown real source kind"):
        open_real_source("textvqa", tmp_path, "val")
    with pytest.raises(SourceError, match="kind 'generic' only"):
        open_real_source("docvqa", bad["docvqa_parquet"], "val", columns={"question": "q"})


def test_hub_id_offline_is_a_clear_error():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with pytest.raises(HubUnavailable, match="cannot load hub:v2pe-offline-test/DocVQA .*local folder") as err:
        open_real_source("docvqa", "hub:v2pe-offline-test/DocVQA", "val")
    assert isinstance(err.value, ConnectionError) and isinstance(err.value, SourceError)


# ------------------------------------------------------------------------------------------ images


def test_max_pixels_is_checked_before_decoding_and_pillow_limit_is_restored(bad, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # smaller than every fixture image
    w = bad["docvqa_official"]
    src = open_(w, "val")
    assert len(src) == len(w.expected["val"])  # Pillow's own bomb check did not fire
    assert Image.MAX_IMAGE_PIXELS == 100
    tiny = open_(w, "val", max_pixels=1000)  # every fixture image is larger
    assert len(tiny) == 0
    assert {r["reason"] for r in tiny.rejected} >= {"too_many_pixels"}
    with pytest.raises(SourceError, match="max_pixels"):
        open_(w, "val", max_pixels=0)


def test_bomb_header_other_formats_and_odd_paths_in_an_imagefolder(tmp_path):
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "bomb.png").write_bytes(bomb_png(200_000, 200_000))  # 40 G pixels
    Image.new("RGB", (20, 10), "red").save(tmp_path / "val" / "anim.gif")
    (tmp_path / "val" / "ok.webp").write_bytes(make_image("webp", 24, 16, "WEBP"))
    names = ["bomb.png", "anim.gif", "nul\0.png", "ok.webp", 7]
    (tmp_path / "val" / "metadata.jsonl").write_text("".join(json.dumps(
        {"file_name": n, "question": "q?", "answers": ["a"]}) + "\n" for n in names))
    src = open_real_source("generic", tmp_path, "val")
    assert [(r["id"], r["reason"]) for r in src.rejected] == [
        ("0", "too_many_pixels"), ("1", "bad_type"), ("2", "missing_image"), ("4", "bad_type")]
    assert "40000000000 pixels" in src.rejected[0]["detail"] and "GIF" in src.rejected[1]["detail"]
    item = src.item(0)
    assert (item.id, item.ext, item.doc_id, item.width, item.height) == ("3", "webp", "val/ok.webp", 24, 16)


def test_symlinks_and_absolute_paths_cannot_leave_the_root(tmp_path):
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    outside = tmp_path / "secret.png"
    outside.write_bytes(make_image("secret", 20, 20))
    inside = root / "images" / "ok.png"
    inside.write_bytes(make_image("ok", 24, 20))
    (root / "images" / "link.png").symlink_to(outside)
    (root / "linkdir").symlink_to(tmp_path)
    rows = [("a", "images/ok.png"), ("b", "images/link.png"), ("c", "linkdir/secret.png"), ("d", str(outside)),
            ("e", str(inside)), ("f", "images/../../secret.png"), ("g", "images/../images/ok.png")]
    (root / "val.jsonl").write_text("".join(
        json.dumps({"id": i, "question": "q?", "answers": "a", "image": p}) + "\n" for i, p in rows))
    src = open_real_source("generic", root, "val", columns={"id": "id"}, name="custom")
    assert [src.item(i).id for i in range(len(src))] == ["a", "e", "g"]
    assert {src.item(i).doc_id for i in range(len(src))} == {"images/ok.png"}
    assert {r["id"]: r["reason"] for r in src.rejected} == dict.fromkeys("bcdf", "path_escape")
    assert src.item(0).dataset == "custom" and src.item(0).answers == ("a",)


def test_parquet_image_struct_with_a_path_only(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "set"
    (root / "data").mkdir(parents=True)
    (root / "img.png").write_bytes(make_image("p", 30, 20))
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "question": ["q1?", "q2?", "q3?"], "answers": [["a"], ["b"], ["c"]],
        "image": pa.array([{"bytes": None, "path": "img.png"}, {"bytes": None, "path": "../x.png"},
                           {"bytes": None, "path": None}], type=image)})
    pq.write_table(table, root / "data" / "val-00000-of-00001.parquet")
    src = open_real_source("generic", root, "val")
    assert len(src) == 1 and src.item(0).load() == (root / "img.png").read_bytes()
    assert src.item(0).doc_id == "img.png" and (src.item(0).width, src.item(0).height) == (30, 20)
    assert [r["reason"] for r in src.rejected] == ["path_escape", "missing_image"]


# ------------------------------------------------------------------------------------------ generic


def test_generic_split_column_filters_one_file(tmp_path):
    root = tmp_path / "set"
    root.mkdir()
    (root / "a.png").write_bytes(make_image("a", 30, 20))
    lines = [{"question": f"q{i}?", "answers": ["x"], "image": "a.png", "part": part}
             for i, part in enumerate(["train", "validation", "train", "val", None])]
    (root / "all.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    src = open_real_source("generic", root / "all.jsonl", "val", columns={"split": "part"})
    assert [src.item(i).question for i in range(len(src))] == ["q1?", "q3?"]
    assert [src.item(i).id for i in range(len(src))] == ["1", "3"]  # row numbers in the file
    assert src.describe()["rows_other_split"] == 2
    assert [(r["id"], r["reason"]) for r in src.rejected] == [("4", "missing_field")]
    with pytest.raises(SourceError, match="cannot tell"):
        open_real_source("generic", root / "all.jsonl", "val")


def test_generic_column_mapping_errors(bad, tmp_path):
    with pytest.raises(SourceError, match="unknown column mapping key 'questoin'"):
        open_real_source("generic", bad["generic_jsonl"], "val", columns={"questoin": "q"})
    with pytest.raises(SourceError, match=r"lacks columns \['query'\]"):
        open_real_source("generic", bad["generic_parquet"], "val", columns={"question": "query"})
    w = write_generic(tmp_path, "jsonl", splits=("val",))
    src = open_real_source("generic", w, "val", columns={"question": "nope", "answers": "ans", "image": "img"})
    assert len(src) == 0 and {r["reason"] for r in src.rejected} == {"missing_field"}
