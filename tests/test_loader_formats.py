"""The loader reads the parquet and InternVL outputs of a build exactly as it reads its tar shards.

One build folder holds the same 6 samples (3 shard tasks of 2) in all three formats, written by the
v2pe_data writers and described by one manifest; `LoaderConfig.format` picks which one is read. Batches
(ids, tokens, labels, positions, pixels) must be identical, resume must continue exactly, and bad input
must be counted with shard and sample id.
"""

from __future__ import annotations

import json
import shutil

import pytest

from v2pe_common import schema
from v2pe_common.formats.parquet import read_parquet_samples
from v2pe_common.tokenizer import load_tokenizer
from v2pe_data.build import Builder
from v2pe_data.config import BuildConfig
from v2pe_data.manifest import make_manifest
from v2pe_data.writers.base import ShardOutputs
from v2pe_data.writers.internvl import finalize_internvl
from v2pe_data.writers.parquet import ParquetShardWriter
from v2pe_train.data import LoaderConfig, PackedLoader

TOK = load_tokenizer()
FORMATS = ["wds", "parquet", "internvl"]
N = 6


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    """A build folder with every format of the same samples, its manifest listing all of them."""
    out = tmp_path_factory.mktemp("formats") / "b4k"
    cfg = BuildConfig(length=4096, min_length=1024, num_samples=N, shard_size=2, out=str(out), seed=5)
    b = Builder(cfg)
    markers = []
    for task in range(N // 2):
        outputs = ShardOutputs(FORMATS, out, cfg.split, task)
        tokens = []
        for i in range(2 * task, 2 * task + 2):
            plan = b.plan(i)
            outputs.begin(plan.record)
            for name, item in zip(plan.record["images"], plan.items):
                outputs.add_image(name, item.load())  # loaded once, handed to every format
            outputs.end()
            m = plan.record["meta"]
            tokens.append([m["num_tokens"], m["text_tokens"], m["image_tokens"], len(plan.items)])
        markers.append({"task": {"index": task, "start": 2 * task, "stop": 2 * task + 2}, "files": outputs.commit(),
                        "tokens": tokens, "rejected": {"counts": {}, "examples": []}})
    manifest = make_manifest(b.identity, cfg, b.acc, markers)
    schema.validate(manifest, schema.MANIFEST)
    (out / "manifest.json").write_text(json.dumps(manifest))
    finalize_internvl(out, "long_vqa_4k", manifest["shards"])
    return out


def run(cfg: LoaderConfig):
    loader = PackedLoader(cfg, TOK)
    return list(loader), loader


def ids_of(batches) -> list[str]:
    return [i for b in batches for i in b.ids]


def assert_batches_equal(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.ids == y.ids
        for name in ("input_ids", "labels", "position_ids", "pixel_values", "image_tiles", "sample_lengths",
                     "cu_seqlens", "num_supervised"):
            tx, ty = getattr(x, name), getattr(y, name)
            assert tx.dtype == ty.dtype and tx.shape == ty.shape and (tx == ty).all(), name


PACKED = dict(max_seq_len=10000, buffer_size=3, position_mode="v2pe_rnd", seed=3)  # leaves samples waiting


@pytest.fixture(scope="module")
def runs(build_dir):
    """A packed, shuffled 2-epoch pass over each format, with the loader state after every batch."""
    out = {}
    for fmt in FORMATS:
        cfg = LoaderConfig(paths=[str(build_dir)], format=fmt, num_epochs=2, **PACKED)
        loader = PackedLoader(cfg, TOK)
        batches, states = [], []
        for batch in loader:
            batches.append(batch)
            states.append(json.loads(json.dumps(loader.state_dict())))
        out[fmt] = (cfg, batches, states, loader)
    return out


def test_every_format_gives_the_same_batches_and_reads_each_sample_once(runs):
    _, tar_batches, _, tar_loader = runs["wds"]
    ids = ids_of(tar_batches)
    assert len(ids) == 2 * N and sorted(ids[:N]) == sorted(set(ids)) and len(set(ids)) == N
    assert any(b.num_samples > 1 for b in tar_batches)
    for fmt in ("parquet", "internvl"):
        _, batches, _, loader = runs[fmt]
        assert loader.stats.num_errors == 0, loader.stats.summary()
        assert loader.stats.samples == tar_loader.stats.samples == 2 * N
        assert_batches_equal(batches, tar_batches)


@pytest.mark.parametrize("fmt", ["parquet", "internvl"])
def test_resume_gives_the_same_next_batches(runs, fmt):
    cfg, full, states, _ = runs[fmt]
    pending = next(k for k, st in enumerate(states) if st["pending"])
    boundary = max(k for k, st in enumerate(states) if st["epoch"] == 0)
    for k in sorted({pending, boundary}):
        resumed = PackedLoader(cfg, TOK)
        resumed.load_state_dict(states[k])
        assert_batches_equal(list(resumed), full[k + 1 :])
        assert resumed.stats.samples == 2 * N
    # the state names its format's files: it cannot resume a run over another format
    with pytest.raises(ValueError, match="shards"):
        PackedLoader(LoaderConfig(paths=cfg.paths, format="wds", num_epochs=2, **PACKED), TOK).load_state_dict(states[0])


def test_direct_paths_glob_and_internvl_meta(build_dir):
    """A parquet glob (shards in name order) and internvl/meta.json (one merged annotation) give the same batches."""
    cfg = dict(num_epochs=1, shuffle=False, max_seq_len=10000)
    pq, pq_loader = run(LoaderConfig(paths=[str(build_dir / "parquet" / "*.parquet")], **cfg))
    meta, loader = run(LoaderConfig(paths=[str(build_dir / "internvl" / "meta.json")], **cfg))
    assert [r.format for r in pq_loader.shards] == ["parquet"] * 3
    assert len(loader.shards) == 1 and loader.shards[0].format == "internvl"
    assert pq_loader.stats.num_errors == loader.stats.num_errors == 0
    assert ids_of(pq) == [f"long_vqa-train-{i:08d}" for i in range(N)]
    assert_batches_equal(meta, pq)
    (ref,) = PackedLoader(LoaderConfig(paths=[str(build_dir / "internvl")]), TOK).shards  # a folder holding meta.json
    assert ref.path == build_dir / "internvl" / "long_vqa_4k.jsonl" and ref.root == build_dir / "internvl"


def test_a_missing_internvl_image_is_counted_with_its_id(build_dir, tmp_path):
    data = tmp_path / "b4k"
    shutil.copytree(build_dir, data)
    line = json.loads((data / "internvl" / "annotations" / "train-000001.jsonl").read_text().splitlines()[1])
    gone = line["image"][-1]
    (data / "internvl" / gone).unlink()
    batches, loader = run(LoaderConfig(paths=[str(data)], format="internvl", shuffle=False))
    assert loader.stats.counts == {"bad_image": 1}
    (example,) = loader.stats.examples["bad_image"]
    assert example.startswith(f"b4k/internvl/annotations/train-000001.jsonl:{line['id']}: image {gone} is missing")
    assert len(ids_of(batches)) == N - 1 and line["id"] not in ids_of(batches)


def test_bad_parquet_and_jsonl_shards_are_counted(build_dir, tmp_path):
    src = sorted((build_dir / "parquet").glob("*.parquet"))
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(src[0].read_bytes()[:-100])  # footer gone
    ann = tmp_path / "annotations"
    ann.mkdir()
    lines = (build_dir / "internvl" / "annotations" / "train-000000.jsonl").read_text().splitlines()
    (ann / "broken.jsonl").write_text("{not json\n" + lines[1] + "\n")  # root = tmp_path: images absent
    undecodable = tmp_path / "undecodable.parquet"  # written so: an image that is not one, a record that fails
    with ParquetShardWriter(undecodable) as w:
        for k, (record, images) in enumerate(read_parquet_samples(src[2])):
            if k == 1:
                record = {**record, "task": "not_a_task"}
            w.begin(record)
            for n, (name, data) in enumerate(images.items()):
                w.add_image(name, b"\xff\xd8 not an image" if k == 0 and n == len(images) - 1 else data)
            w.end()
    data = [str(cut), str(tmp_path / "gone.parquet"), str(ann / "broken.jsonl"), str(src[1]), str(undecodable)]
    batches, loader = run(LoaderConfig(paths=data, shuffle=False))
    assert len(ids_of(batches)) == 2  # the good parquet shard
    assert loader.stats.counts == {"corrupt_shard": 1, "missing_shard": 1, "schema": 2, "bad_image": 2}
    first, second = (r["id"] for r, _ in read_parquet_samples(src[2]))
    assert any(f"undecodable.parquet:{first}: image " in e and "does not decode" in e
               for e in loader.stats.examples["bad_image"])
    assert any(f"undecodable.parquet:{second}: " in e and "$.task" in e for e in loader.stats.examples["schema"])
    ex = {k: "\n".join(v) for k, v in loader.stats.examples.items()}
    assert "cut.parquet" in ex["corrupt_shard"] and "gone.parquet" in ex["missing_shard"]
    assert "broken.jsonl:line 1: line 1 is not a JSON object" in ex["schema"]
    assert f"broken.jsonl:{json.loads(lines[1])['id']}: image images/" in ex["bad_image"]


def test_a_folder_without_the_requested_format_is_refused(build_dir, tmp_path):
    data = tmp_path / "only_wds"
    shutil.copytree(build_dir / "shards", data / "shards")
    manifest = json.loads((build_dir / "manifest.json").read_text())
    manifest["shards"] = [s for s in manifest["shards"] if s["format"] == "wds"]
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"holds no 'parquet' shards \(formats present: wds\)"):
        PackedLoader(LoaderConfig(paths=[str(data)], format="parquet"), TOK)
    with pytest.raises(ValueError, match="format must be one of"):
        LoaderConfig(paths=[str(data)], format="zip")
