"""The loader against damaged or hostile input: shards that differ from their manifest, broken tar
headers, InternVL image paths that leave their root.

One small v2pe-data build (4 samples, 2 shards, every format, one manifest) is copied per test and then
damaged. What is promised: a shard whose bytes differ from the size/sha256 its manifest lists is
counted once as `checksum` and none of its samples is delivered, the other shards are read, strict mode
stops, and `verify=False` reads edited shards; one fault is counted once; a record never makes the
loader open a file outside its image root.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import time
from pathlib import Path

import pytest
import torch

from v2pe_common.formats.parquet import read_parquet_samples
from v2pe_common.tokenizer import load_tokenizer
from v2pe_data.build import build
from v2pe_data.config import BuildConfig
from v2pe_data.writers.parquet import ParquetShardWriter
from v2pe_train.data import LoaderConfig, LoaderError, PackedLoader

TOK = load_tokenizer()
FORMATS = ["wds", "parquet", "internvl"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "b"
    manifest = build(BuildConfig(length=2048, min_length=512, num_samples=4, shard_size=2, formats=FORMATS,
                                 out=str(out), seed=3), show_progress=False)
    ids = {}  # shard path -> its sample ids, from the tar shards (every format holds the same samples)
    for shard in manifest["shards"]:
        if shard["format"] == "wds":
            with tarfile.open(out / shard["path"]) as tar:
                ids[shard["path"]] = sorted({m.name.split(".")[0] for m in tar.getmembers()})
    return out, manifest, ids


@pytest.fixture(scope="module")
def baseline(built):
    """An undamaged pass (the same batches in every format): input ids by sample id."""
    out, _, _ = built
    loader = PackedLoader(LoaderConfig(paths=[str(out)], shuffle=False), TOK)
    batches = list(loader)
    assert loader.stats.num_errors == 0, loader.stats.summary()
    return {b.ids[0]: b.input_ids.clone() for b in batches}


def copy_of(built, tmp_path) -> Path:
    data = tmp_path / "b"
    shutil.copytree(built[0], data)
    return data


def shard_path(built, fmt: str, index: int) -> str:
    return [s["path"] for s in built[1]["shards"] if s["format"] == fmt][index]


def run(cfg: LoaderConfig):
    loader = PackedLoader(cfg, TOK)
    batches = list(loader)
    return {i: b.input_ids for b in batches for i in b.ids}, loader


# -- damage ---------------------------------------------------------------------------------------
def flip_byte(path: Path, at: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[at] ^= 0x40
    path.write_bytes(bytes(blob))


def flip_in_first_image(path: Path, image: bytes) -> None:
    """Flip one byte in the middle of an image's bytes where the file stores them as they are."""
    at = path.read_bytes().index(image)
    flip_byte(path, at + len(image) // 2)


def edit_first_answer(path: Path) -> str:
    """Change the first character of the first assistant turn in a record/line, same length; returns the sample id."""
    blob = bytearray(path.read_bytes())
    at = blob.index(b'"from":"gpt","value":"') + len(b'"from":"gpt","value":"')
    blob[at : at + 1] = b"7" if blob[at : at + 1] != b"7" else b"3"
    path.write_bytes(bytes(blob))
    start = blob.index(b'"id":"', at) + len(b'"id":"')  # keys are sorted: the id follows the conversations
    return blob[start : blob.index(b'"', start)].decode()


def first_tar_image(path: Path) -> bytes:
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if not m.name.endswith(".json"))
        return tar.extractfile(member).read()


# -- checksum -------------------------------------------------------------------------------------
def assert_shard_skipped_as_checksum(loader, delivered, built, fmt: str, bad: int) -> None:
    ids = built[2]
    bad_ids = set(ids[shard_path(built, "wds", bad)])
    good_ids = set(ids[shard_path(built, "wds", 1 - bad)])
    assert loader.stats.counts == {"checksum": 1}, loader.stats.summary()
    (example,) = loader.stats.examples["checksum"]
    assert example.startswith(f"b/{shard_path(built, fmt, bad)}: ") and "manifest" in example
    assert set(delivered) == good_ids and not bad_ids & set(delivered)


@pytest.mark.parametrize("fmt,damage", [
    ("wds", "image_byte"), ("wds", "answer"), ("parquet", "image_byte"), ("internvl", "answer"),
])
def test_a_shard_that_differs_from_its_manifest_is_skipped_whole(built, tmp_path, fmt, damage):
    """One flipped image byte or one edited answer: no sample of that shard is trained on, the others are."""
    data = copy_of(built, tmp_path)
    path = data / shard_path(built, fmt, 1)
    if damage == "answer":
        edit_first_answer(path)
    else:
        flip_in_first_image(path, first_tar_image(data / shard_path(built, "wds", 1)))
    delivered, loader = run(LoaderConfig(paths=[str(data)], format=fmt, shuffle=False))
    assert_shard_skipped_as_checksum(loader, delivered, built, fmt, bad=1)


@pytest.mark.parametrize("fmt", FORMATS)
def test_strict_stops_at_a_checksum_mismatch_naming_the_shard(built, tmp_path, fmt):
    """strict=True raises LoaderError at the mismatch, naming the reason and the shard, before any sample of it."""
    data = copy_of(built, tmp_path)
    edit = (lambda p: flip_in_first_image(p, first_tar_image(data / shard_path(built, "wds", 0)))) \
        if fmt == "parquet" else edit_first_answer
    edit(data / shard_path(built, fmt, 0))
    with pytest.raises(LoaderError, match=rf"checksum: b/{shard_path(built, fmt, 0)}: sha256 .* differs"):
        run(LoaderConfig(paths=[str(data)], format=fmt, shuffle=False, strict=True))


def rewrite_parquet_answer(path: Path) -> str:
    """A parquet shard edited on purpose: rewritten with the first sample's answer turn changed."""
    samples = list(read_parquet_samples(path))
    with ParquetShardWriter(path) as w:
        for k, (record, images) in enumerate(samples):
            if k == 0:
                convs = [dict(t) for t in record["conversations"]]
                turn = next(t for t in convs if t["from"] == "gpt")
                turn["value"] = ("7" if turn["value"][0] != "7" else "3") + turn["value"][1:]
                record = {**record, "conversations": convs}
            w.begin(record)
            for name, blob in images.items():
                w.add_image(name, blob)
            w.end()
    return samples[0][0]["id"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_verify_false_reads_shards_edited_on_purpose(built, baseline, tmp_path, fmt):
    data = copy_of(built, tmp_path)
    path = data / shard_path(built, fmt, 1)
    edited = rewrite_parquet_answer(path) if fmt == "parquet" else edit_first_answer(path)
    delivered, loader = run(LoaderConfig(paths=[str(data)], format=fmt, shuffle=False, verify_shards=False))
    assert loader.stats.num_errors == 0, loader.stats.summary()
    assert set(delivered) == set(baseline)
    assert not torch.equal(delivered[edited], baseline[edited])  # the edit is what is trained on
    assert all(torch.equal(delivered[i], baseline[i]) for i in baseline if i != edited)
    verified, loader = run(LoaderConfig(paths=[str(data)], format=fmt, shuffle=False))
    assert_shard_skipped_as_checksum(loader, verified, built, fmt, bad=1)


def test_a_truncated_shard_is_a_checksum_mismatch_before_any_sample(built, tmp_path):
    data = copy_of(built, tmp_path)
    path = data / shard_path(built, "wds", 0)
    path.write_bytes(path.read_bytes()[:-4096])
    delivered, loader = run(LoaderConfig(paths=[str(data)], shuffle=False))
    assert_shard_skipped_as_checksum(loader, delivered, built, "wds", bad=0)
    assert "bytes, its manifest says" in loader.stats.examples["checksum"][0]


def test_a_resume_rereads_only_verified_shards(built, tmp_path):
    """Samples waiting in the packing buffer are re-read on resume: from a shard changed since, none is used,
    and the shard is counted once in that epoch (its re-read and the rest of it are one fault)."""
    data = copy_of(built, tmp_path)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["shards"].reverse()  # read train-000001 first, so that train-000000's samples wait in the buffer
    (data / "manifest.json").write_text(json.dumps(manifest))
    cfg = LoaderConfig(paths=[str(data)], shuffle=False, max_seq_len=5000, buffer_size=4, num_epochs=2)
    loader = PackedLoader(cfg, TOK)
    it = iter(loader)
    next(it)
    state = json.loads(json.dumps(loader.state_dict()))
    rest = [i for b in it for i in b.ids]
    damaged = shard_path(built, "wds", 0)
    index = [s["path"] for s in manifest["shards"] if s["format"] == "wds"].index(damaged)
    waiting = [ref for refs in state["ready"] for ref in refs] + state["pending"]
    assert waiting and {shard for shard, _, _ in waiting} == {index}
    assert (state["epoch"], state["shard_pos"], state["offset"]) == (0, 1, 2)  # resumes at the end of that shard
    edit_first_answer(data / damaged)
    resumed = PackedLoader(cfg, TOK)
    resumed.load_state_dict(state)
    after = [i for b in resumed for i in b.ids]
    assert resumed.stats.counts == {"checksum": 2}  # once per epoch: at the resume, and in epoch 1
    assert after == [i for i in rest if i not in built[2][damaged]] == built[2][shard_path(built, "wds", 1)]


def test_a_state_saved_before_a_rebuild_is_refused(built, tmp_path):
    """Same shard names, other manifest sha256: the saved offsets would point at other samples."""
    data = copy_of(built, tmp_path)
    state = PackedLoader(LoaderConfig(paths=[str(data)]), TOK).state_dict()
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["shards"][0]["sha256"] = "f" * 64
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="manifest sha256 differ .* rebuilt"):
        PackedLoader(LoaderConfig(paths=[str(data)]), TOK).load_state_dict(state)
    PackedLoader(LoaderConfig(paths=[str(data)], verify_shards=False), TOK).load_state_dict(state)


def test_a_shard_is_hashed_once_per_process_until_it_changes(tmp_path, monkeypatch):
    """Later epochs cost a stat; an in-place edit that keeps size and mtime is still seen (its ctime moves)."""
    from v2pe_common import paths

    monkeypatch.setattr(paths, "_RACY_NS", 50_000_000)  # the timestamp-granularity window, shortened to keep this fast
    monkeypatch.setattr(paths, "_digests", {})
    hashed = []
    real = paths.file_digest
    monkeypatch.setattr(paths, "file_digest", lambda p: hashed.append(p) or real(p))
    path = tmp_path / "s.tar"
    path.write_bytes(b"a" * 1000)
    paths.cached_digest(path)
    paths.cached_digest(path)
    assert len(hashed) == 2  # written just now: a later edit could keep its timestamps, so nothing is remembered
    time.sleep(0.1)
    first = paths.cached_digest(path)
    assert paths.cached_digest(path) == first and len(hashed) == 3
    mtime = path.stat().st_mtime_ns
    with open(path, "r+b") as fh:
        fh.write(b"b")
    os.utime(path, ns=(mtime, mtime))
    assert path.stat().st_mtime_ns == mtime
    assert paths.cached_digest(path) == real(path) != first and len(hashed) == 4


# -- one fault, one count -------------------------------------------------------------------------
@pytest.mark.parametrize("member,fill", [(1, b"\x07"), (3, b"\x07"), (1, b"\x00"), (3, b"\x00")])
def test_a_broken_tar_header_counts_once_as_corrupt_shard(built, tmp_path, member, fill):
    """A member header overwritten (garbage or zeros) is the shard's fault: counted once, with the sample key.

    Samples are `KEY.json` + `KEY.0.jpg`; member 1 is the first sample's image, member 3 the second's.
    """
    data = copy_of(built, tmp_path)
    path = data / shard_path(built, "wds", 0)
    with tarfile.open(path) as tar:
        info = tar.getmembers()[member]
    blob = bytearray(path.read_bytes())
    blob[info.offset : info.offset + tarfile.BLOCKSIZE] = fill * tarfile.BLOCKSIZE
    path.write_bytes(bytes(blob))
    delivered, loader = run(LoaderConfig(paths=[str(data)], shuffle=False, verify_shards=False))
    assert loader.stats.counts == {"corrupt_shard": 1}, loader.stats.summary()
    (example,) = loader.stats.examples["corrupt_shard"]
    owner = info.name.split(".")[0]
    assert example.startswith(f"b/{shard_path(built, 'wds', 0)}:{owner}: ")
    first, _ = built[2][shard_path(built, "wds", 0)]
    expect = set(built[2][shard_path(built, "wds", 1)]) | ({first} if member == 3 else set())
    assert set(delivered) == expect


# -- InternVL image paths -------------------------------------------------------------------------
def test_internvl_image_paths_that_leave_the_root_are_never_read(built, tmp_path):
    """`../`, an absolute path elsewhere and a symlink out are rejected per sample; an absolute path inside is fine.

    Each escaping path leads to a valid copy of the sample's own image, so reading it would deliver the sample.
    """
    data = copy_of(built, tmp_path)
    root = data / "internvl"
    ann = root / "annotations" / Path(shard_path(built, "internvl", 0)).name
    lines = [json.loads(x) for x in ann.read_text().splitlines()]
    ann2 = root / "annotations" / Path(shard_path(built, "internvl", 1)).name
    lines += [json.loads(x) for x in ann2.read_text().splitlines()]
    outside = tmp_path / "outside"
    outside.mkdir()
    for line in lines:
        (outside / line["id"]).mkdir()
        shutil.copy(root / line["image"][0], outside / line["id"] / "0.jpg")
    a, b, c, d = lines
    a["image"] = [os.path.relpath(outside / a["id"] / "0.jpg", root)]  # ../../outside/...
    b["image"] = [str(outside / b["id"] / "0.jpg")]
    link = root / c["image"][0]
    link.unlink()
    link.symlink_to(outside / c["id"] / "0.jpg")
    d["image"] = [str(root / d["image"][0])]  # absolute, inside the root
    one = root / "annotations" / "all.jsonl"  # a bare JSONL: no manifest hash, the root is its folder's parent
    one.write_text("".join(json.dumps(x) + "\n" for x in lines))
    delivered, loader = run(LoaderConfig(paths=[str(one)], shuffle=False))
    assert set(delivered) == {d["id"]}
    assert loader.stats.counts == {"bad_image": 3}, loader.stats.summary()
    examples = loader.stats.examples["bad_image"]
    assert [e.split(":")[1] for e in examples] == [a["id"], b["id"], c["id"]]
    assert all("path escapes the root" in e for e in examples)


def test_the_path_rule_judges_real_paths(tmp_path):
    """Escapes are refused however they are spelt; a path into the root through a symlinked alias is kept."""
    from v2pe_common.paths import PathEscape, resolve_inside

    root = tmp_path / "root"
    (root / "img").mkdir(parents=True)
    (root / "img" / "0.jpg").write_bytes(b"x")
    alias = tmp_path / "alias"
    alias.symlink_to(root)
    assert resolve_inside(root, str(alias / "img" / "0.jpg")) == (root / "img" / "0.jpg").resolve()
    assert resolve_inside(alias, "img/./0.jpg") == (root / "img" / "0.jpg").resolve()
    for rel in ["..\\outside.jpg", "img/../../outside.jpg", "/etc/passwd", str(tmp_path / "outside.jpg")]:
        with pytest.raises(PathEscape, match="path escapes the root"):
            resolve_inside(root, rel)
    with pytest.raises(ValueError, match="cannot be resolved"):
        resolve_inside(root, "img/\0.jpg")
