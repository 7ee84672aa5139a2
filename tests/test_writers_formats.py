"""The three output formats (webdataset tar, parquet, InternVL layout) written from the same planned samples.

Samples are planned by the real builder; every writer gets the same records and the same image bytes
through the streaming protocol (begin / add_image / end), and reading each format back must give the
records and bytes exactly. Also: `datasets` reads the parquet as List(Image()), the InternVL files meet
the reference trainer's expectations, the bytes are deterministic, and nothing appears under a final
name unless its shard completes.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from v2pe_common import schema
from v2pe_common.formats.internvl import read_internvl_samples
from v2pe_common.formats.parquet import read_parquet_samples
from v2pe_data.build import Builder
from v2pe_data.config import BuildConfig
from v2pe_data.writers.base import FormatOutput, ShardOutputs, WriterError, shard_relpath
from v2pe_data.writers.internvl import finalize_internvl
from v2pe_data.writers.wds import WdsWriter

FORMATS = ["wds", "parquet", "internvl"]


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """3 planned samples: (builder, plans, [(record, [image bytes])])."""
    b = Builder(BuildConfig(length=4096, min_length=1024, num_samples=3, out=str(tmp_path_factory.mktemp("unused"))))
    plans = [b.plan(i) for i in range(3)]
    samples = [(p.record, [it.load() for it in p.items]) for p in plans]
    assert sum(len(imgs) for _, imgs in samples) > 3  # some sample has several images
    return b, plans, samples


def write_all(out: Path, samples, formats=FORMATS, index: int = 0) -> list[dict]:
    outputs = ShardOutputs(formats, out, "train", index)
    try:
        for record, images in samples:
            outputs.begin(record)
            for name, data in zip(record["images"], images):
                outputs.add_image(name, data)
            outputs.end()
    except BaseException:
        outputs.abort()
        raise
    return outputs.commit()


def read_tar(path: Path):
    out = []
    with tarfile.open(path, "r|") as tar:
        for info in tar:
            key, _, suffix = info.name.partition(".")
            data = tar.extractfile(info).read()
            if suffix == "json":
                out.append((json.loads(data), {}))
            else:
                assert out[-1][0]["id"] == key
                out[-1][1][suffix] = data
    return out


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def written(planned, tmp_path_factory):
    _, _, samples = planned
    out = tmp_path_factory.mktemp("fmt")
    entries = write_all(out, samples)
    finalize_internvl(out, "long_vqa_4k", entries)
    return out, entries


def test_every_format_reads_back_the_same_records_and_bytes(planned, written):
    b, plans, samples = planned
    out, entries = written
    assert [e["format"] for e in entries] == FORMATS
    assert [e["path"] for e in entries] == [shard_relpath(f, "train", 0) for f in FORMATS]
    expect = [(record, dict(zip(record["images"], images))) for record, images in samples]
    by_format = {
        "wds": read_tar(out / entries[0]["path"]),
        "parquet": list(read_parquet_samples(out / entries[1]["path"])),
        "internvl": list(read_internvl_samples(out / "internvl")),
    }
    by_format["internvl_shard"] = list(read_internvl_samples(out / "internvl", out / entries[2]["path"]))
    for fmt, got in by_format.items():
        assert got == expect, fmt
    for record, _ in by_format["parquet"] + by_format["internvl"]:
        schema.validate(record, schema.SAMPLE)
    # the manifest entries: what build.py records, valid against the manifest schema
    tokens = sum(r["meta"]["num_tokens"] for r, _ in samples)
    for e in entries:
        size = (out / e["path"]).stat().st_size
        assert e["num_samples"] == 3 and e["num_tokens"] == tokens and e["bytes"] == size
    manifest = {"format_version": 1, "task": "long_vqa", "build_id": "0" * 16, "args": {}, "seed": 0, "versions": {},
                "tokenizer": {"name": "x", "sha256": "0" * 64}, "template": "t", "tiling": {}, "num_samples": 3,
                "shards": entries, "token_stats": {"count": 0, "min": None, "max": None, "mean": None, "total": 0},
                "rejected": {"counts": {}, "examples": []}}
    schema.validate(manifest, schema.MANIFEST)
    # the tar writer alone writes the very bytes that the multi-format output committed
    ref = out / "ref.tar"
    w = WdsWriter(ref)
    for plan in plans:
        w.begin(plan.record)
        for name, item in zip(plan.record["images"], plan.items):
            w.add_image(name, item.load())
        w.end()
    w.close()
    assert ref.read_bytes() == (out / entries[0]["path"]).read_bytes()


def test_parquet_loads_in_datasets_as_a_list_of_images(planned, written, tmp_path):
    import datasets
    from PIL import Image

    _, _, samples = planned
    out, entries = written
    ds = datasets.load_dataset("parquet", data_files=str(out / entries[1]["path"]), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert ds.features["images"] == datasets.List(datasets.Image())
    assert ds.features["conversations"] == datasets.List({"from": datasets.Value("string"), "value": datasets.Value("string")})
    assert ds.features["meta"] == datasets.Value("string") and len(ds) == 3
    for row, (record, _) in zip(ds, samples):
        assert row["id"] == record["id"] and row["conversations"] == record["conversations"]
        assert row["answer"] == record["answer"] and json.loads(row["meta"]) == record["meta"]
        assert all(isinstance(im, Image.Image) for im in row["images"])
        assert [list(im.size) for im in row["images"]] == record["meta"]["image_sizes"]
    # undecoded: the stored bytes, named by their member name
    raw = ds.cast_column("images", datasets.List(datasets.Image(decode=False)))
    assert [[im["path"] for im in r["images"]] for r in raw] == [rec["images"] for rec, _ in samples]
    assert [im["bytes"] for im in raw[0]["images"]] == samples[0][1]


def test_parquet_keeps_a_non_string_answer(planned, tmp_path):
    _, _, samples = planned
    record, images = samples[0]
    numeric = {**record, "id": "numeric", "answer": 42}
    listed = {**record, "id": "listed", "answer": ["3", 4]}
    text = {**record, "id": "text", "answer": "42"}
    entries = write_all(tmp_path, [(r, images) for r in (numeric, listed, text)], formats=["parquet", "internvl"])
    for got in (list(read_parquet_samples(tmp_path / entries[0]["path"])),
                list(read_internvl_samples(tmp_path / "internvl", tmp_path / entries[1]["path"]))):
        assert [r["answer"] for r, _ in got] == [42, ["3", 4], "42"]


def test_internvl_meets_the_reference_trainers_expectations(planned, written, tmp_path):
    _, _, samples = planned
    out, entries = written
    root = out / "internvl"
    meta = json.loads((root / "meta.json").read_text())
    assert list(meta) == ["long_vqa_4k"]
    item = meta["long_vqa_4k"]
    assert set(item) == {"root", "annotation", "data_augment", "repeat_time", "length"}
    assert item["data_augment"] is False and item["repeat_time"] == 1 and item["length"] == 3
    # written relative to the meta file's folder: the reference, run from there, finds everything
    assert item["root"] == "." and not Path(item["annotation"]).is_absolute()
    ann = root / item["annotation"]
    assert ann.parent == root  # beside annotations/, never inside: a glob over annotations/ reads nothing twice
    lines = [json.loads(raw) for raw in ann.read_text().splitlines()]
    assert len(lines) == item["length"]
    assert ann.read_bytes() == (out / entries[2]["path"]).read_bytes()  # one shard: the merge is the shard
    for line, (record, images) in zip(lines, samples):
        assert {"id", "image", "conversations"} <= set(line)
        assert line["id"] == record["id"] and isinstance(line["image"], list)
        assert all(t["from"] in ("human", "gpt") and isinstance(t["value"], str) for t in line["conversations"])
        assert line["conversations"][0]["from"] == "human"
        n_placeholders = sum(t["value"].count("<image>") for t in line["conversations"])
        assert n_placeholders == len(line["image"]) == len(images)
        for rel, data in zip(line["image"], images):
            assert not Path(rel).is_absolute() and ".." not in Path(rel).parts
            assert (root / item["root"] / rel).read_bytes() == data
    # absolute paths on request, and the build's max_tiles for the reference's tiling
    meta = finalize_internvl(out, "long_vqa_4k_abs", entries, absolute=True, max_dynamic_patch=12)
    item = meta["long_vqa_4k_abs"]
    assert Path(item["root"]).is_absolute() and Path(item["annotation"]).is_file()
    assert item["max_dynamic_patch"] == 12
    assert json.loads((root / "meta.json").read_text()) == meta
    assert Path(item["root"], lines[0]["image"][0]).is_file()


def test_same_input_gives_the_same_bytes(planned, written, tmp_path):
    _, _, samples = planned
    _, entries = written
    trees = []
    for name in ("a", "b"):
        out = tmp_path / name
        got = write_all(out, samples)
        finalize_internvl(out, "long_vqa_4k", got)
        assert got == entries  # same sizes and sha256 as the module's first write
        trees.append(files_under(out))
    assert trees[0] == trees[1]
    assert sum(k.startswith("internvl/images/") for k in trees[0]) == sum(len(i) for _, i in samples)


def test_pyarrow_writes_no_time_into_the_parquet(planned, tmp_path):
    import pyarrow.parquet as pq

    _, _, samples = planned
    entry = write_all(tmp_path, samples[:1], formats=["parquet"])[0]
    md = pq.read_metadata(tmp_path / entry["path"])
    assert set(md.metadata) == {b"ARROW:schema", b"huggingface"}
    assert md.created_by.startswith("parquet-cpp-arrow") and md.num_row_groups == 1
    rg = md.row_group(0)
    codecs = {rg.column(i).path_in_schema: rg.column(i).compression for i in range(rg.num_columns)}
    assert codecs["images.list.element.bytes"] == "UNCOMPRESSED" and codecs["meta"] == "ZSTD"


def test_an_exception_mid_shard_leaves_nothing_under_final_names(planned, tmp_path):
    _, _, samples = planned
    outputs = ShardOutputs(FORMATS, tmp_path, "train", 5)
    outputs.write(*samples[0])
    second, images = next((r, i) for r, i in samples if len(i) > 1)
    with pytest.raises(RuntimeError, match="source died"):
        try:
            outputs.begin(second)
            outputs.add_image(second["images"][0], images[0])
            assert outputs.size() > 0
            raise RuntimeError("source died")
        except BaseException:
            outputs.abort()
            raise
    assert files_under(tmp_path) == {}  # no final file, no temporary left behind
    assert not [p for p in tmp_path.rglob("*") if p.is_dir() and p.name not in ("shards", "parquet", "internvl", "annotations")]


def test_internvl_moves_images_before_the_jsonl_and_recovers_an_interrupted_commit(planned, tmp_path, monkeypatch):
    _, _, samples = planned
    # an earlier commit of this shard was killed after moving one sample folder (stale content)
    stale = tmp_path / "internvl" / "images" / samples[0][0]["id"]
    stale.mkdir(parents=True)
    (stale / "junk.bin").write_bytes(b"x")
    renames = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renames.append(Path(b)), real(a, b))[1])
    out = FormatOutput("internvl", tmp_path, "train", 0)
    for record, images in samples:
        out.write(record, images)
    [entry] = out.commit()
    assert renames[-1] == tmp_path / entry["path"]  # the JSONL is renamed last
    assert {p.name for p in renames[:-1]} == {r["id"] for r, _ in samples}
    assert sorted(p.name for p in stale.iterdir()) == samples[0][0]["images"]
    assert not (tmp_path / "internvl" / ".tmp").exists()
    got = list(read_internvl_samples(tmp_path / "internvl", tmp_path / entry["path"]))
    assert got == [(r, dict(zip(r["images"], i))) for r, i in samples]


def test_the_protocol_is_checked(planned, tmp_path):
    _, _, samples = planned
    record, images = next((r, i) for r, i in samples if len(i) > 1)
    for fmt in FORMATS:
        out = FormatOutput(fmt, tmp_path / fmt, "train", 0)
        out.begin(record)
        with pytest.raises(WriterError, match="expected"):
            out.add_image(record["images"][1], images[1])  # out of order
        with pytest.raises(WriterError, match="end\\(\\) after 0 of"):
            out.end()
        out.abort()
        assert files_under(tmp_path / fmt) == {}
    with pytest.raises(ValueError, match="formats"):
        ShardOutputs(["wds", "zip"], tmp_path, "train", 0)
