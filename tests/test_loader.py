"""The training loader on small hand-written tar shards: labels, positions, packing, order, dp split,
exact resume, bad input, torch DataLoader integration.

The shards follow the contract (`schemas/sample.schema.json`, `KEY.json` then `KEY.0.jpg`, ...) with
meta counts computed by `v2pe_common`, but images are small so a full pass costs a second or two.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from v2pe_common import encoding
from v2pe_common.template import get_template
from v2pe_common.tiling import TilingConfig, num_tiles
from v2pe_common.tokenizer import load_tokenizer
from v2pe_train.data import LoaderConfig, LoaderDataset, LoaderError, PackedLoader, TrainDataLoader

TOK = load_tokenizer()
TEMPLATE = get_template("internlm2-chat")
TILING = TilingConfig()
SIZES = [(200, 200), (900, 450), (220, 200), (210, 230), (1300, 450), (460, 440)]  # 1, 3, 1, 1, 4, 1 tiles


# -- fixtures: tiny v2pe shards -------------------------------------------------------------------
def image_bytes(w: int, h: int, seed: int, fmt: str) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = (rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)).repeat(8, 0).repeat(8, 1)[:h, :w]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG" if fmt == "jpg" else "PNG")
    return buf.getvalue()


def make_sample(index: int, *, multi_turn: bool = False) -> tuple[dict, list[bytes]]:
    key = f"s{index:05d}"
    n_images = 1 + index % 2 + (index % 5 == 2)
    sizes = [SIZES[(index + i) % len(SIZES)] for i in range(n_images)]
    fmts = ["png" if (index + i) % 4 == 0 else "jpg" for i in range(n_images)]
    answer = f"answer {index} is {index * 7}"
    convs = [{"from": "human", "value": "<image>\n" * n_images + f"Question {index}: what is shown?"},
             {"from": "gpt", "value": answer}]
    if multi_turn:
        convs += [{"from": "human", "value": "And twice that?"}, {"from": "gpt", "value": f"{index * 14}"}]
    tiles = [num_tiles(w, h, TILING) for w, h in sizes]
    cnt = encoding.count(convs, tiles, TOK, TEMPLATE, TILING)
    record = {
        "id": key, "task": "long_vqa", "subset": "loader_test",
        "images": [f"{i}.{f}" for i, f in enumerate(fmts)],
        "conversations": convs, "answer": answer,
        "meta": {
            "seed": 0, "sample_index": index, "target_len": 65536, "min_len": 0, "len_bin": "0_64",
            "num_tokens": cnt.total, "text_tokens": cnt.text, "image_tokens": cnt.image,
            "tiles": tiles, "image_sizes": [list(s) for s in sizes], "template": TEMPLATE.name,
            "tokenizer": TOK.identity, "tiling": TILING.to_dict(),
            "sources": [{"dataset": "test", "split": "train", "id": f"{key}-{i}", "role": "context"} for i in range(n_images)],
        },
    }
    return record, [image_bytes(w, h, index * 10 + i, f) for i, ((w, h), f) in enumerate(zip(sizes, fmts))]


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, samples, *, corrupt_image: str | None = None, bad_schema: str | None = None) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for record, images in samples:
            key = record["id"]
            rec = dict(record)
            if key == bad_schema:
                rec["task"] = "not_a_task"
            add(tar, f"{key}.json", json.dumps(rec).encode())
            for i, (name, data) in enumerate(zip(record["images"], images)):
                if key == corrupt_image and i == len(images) - 1:
                    data = b"\xff\xd8 definitely not an image " * 20
                add(tar, f"{key}.{name}", data)


SAMPLES = [make_sample(i, multi_turn=(i % 5 == 4)) for i in range(12)]
BY_ID = {r["id"]: r for r, _ in SAMPLES}
N = 8  # samples in the `shards` fixture
SHARDED = sorted(BY_ID)[:N]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[str]:
    """4 shards of 2 samples."""
    d = tmp_path_factory.mktemp("shards")
    paths = []
    for s in range(4):
        p = d / f"train-{s:06d}.tar"
        write_shard(p, SAMPLES[2 * s : 2 * s + 2])
        paths.append(str(p))
    return paths


def run(cfg: LoaderConfig):
    loader = PackedLoader(cfg, TOK)
    return list(loader), loader


_RUNS: dict[str, tuple] = {}


def cached_run(cfg: LoaderConfig):
    """A full pass shared by tests that only read its batches (decoding dominates the test time)."""
    key = repr(cfg)
    if key not in _RUNS:
        _RUNS[key] = run(cfg)
    return _RUNS[key]


def ids_of(batches) -> list[str]:
    return [i for b in batches for i in b.ids]


def assert_batches_equal(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.ids == y.ids
        for name in ("input_ids", "labels", "position_ids", "pixel_values", "image_tiles", "sample_lengths",
                     "cu_seqlens", "num_supervised"):
            tx, ty = getattr(x, name), getattr(y, name)
            assert tx.dtype == ty.dtype and torch.equal(tx, ty), name


# -- content of a batch ---------------------------------------------------------------------------
def test_every_sample_has_its_meta_length_and_tiles(shards):
    batches, loader = cached_run(LoaderConfig(paths=shards, pixel_dtype="fp32", shuffle=False, position_mode="v2pe_rnd", seed=5))
    assert sorted(ids_of(batches)) == SHARDED
    assert loader.stats.num_errors == 0 and loader.stats.samples == N
    for b in batches:
        meta = BY_ID[b.ids[0]]["meta"]
        assert b.num_samples == 1
        assert b.num_tokens == b.input_ids.shape[1] == meta["num_tokens"]
        assert b.image_tiles.tolist() == meta["tiles"]
        assert b.pixel_values.shape == (sum(meta["tiles"]), 3, 448, 448) and b.pixel_values.dtype == torch.float32
        assert int((b.input_ids == TOK.img_context_id).sum()) == 256 * b.num_tiles
        assert b.input_ids.dtype == b.labels.dtype == torch.int64 and b.position_ids.dtype == torch.float64
        assert b.cu_seqlens.dtype == torch.int32 and b.cu_seqlens.tolist() == [0, b.num_tokens]


def test_labels_only_on_assistant_turns(shards):
    batches, _ = cached_run(LoaderConfig(paths=shards, max_seq_len=4096))
    seen = 0
    for b in batches:
        for sid, lo, hi, n_sup in zip(b.ids, b.cu_seqlens[:-1], b.cu_seqlens[1:], b.num_supervised):
            ids, labels = b.input_ids[0, lo:hi], b.labels[0, lo:hi]
            sup = labels != -100
            assert torch.equal(labels[sup], ids[sup])  # not shifted
            assert int(sup.sum()) == int(n_sup)
            answers = [t["value"] for t in BY_ID[sid]["conversations"] if t["from"] == "gpt"]
            assert TOK.hf.decode(ids[sup].tolist()) == "".join(a + "<|im_end|>" for a in answers)
            seen += 1
    assert seen == N


def test_an_image_named_twice_fills_both_of_its_places(tmp_path):
    """A record may show one image member at two places; each place gets its tiles (not uninitialised memory)."""
    record, images = make_sample(1)
    name, size = record["images"][0], record["meta"]["image_sizes"][0]
    tiles = [num_tiles(*size, TILING)] * 2
    cnt = encoding.count(record["conversations"], tiles, TOK, TEMPLATE, TILING)
    record = {**record, "images": [name, name],
              "meta": {**record["meta"], "image_sizes": [size, size], "tiles": tiles, "num_tokens": cnt.total,
                       "text_tokens": cnt.text, "image_tokens": cnt.image}}
    path = tmp_path / "twice.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        add(tar, f"{record['id']}.json", json.dumps(record).encode())
        add(tar, f"{record['id']}.{name}", images[0])
    (batch,), loader = run(LoaderConfig(paths=[str(path)], pixel_dtype="fp32", shuffle=False))
    assert loader.stats.num_errors == 0 and batch.image_tiles.tolist() == tiles
    first, second = batch.pixel_values[: tiles[0]], batch.pixel_values[tiles[0]:]
    assert torch.equal(first, second) and torch.isfinite(first).all() and first.abs().sum() > 0


def test_train_on_prompt_supervises_every_text_token_and_no_image_token(shards):
    batches, _ = run(LoaderConfig(paths=shards[:1], max_seq_len=4096, train_on_prompt=True, shuffle=False))
    for b in batches:
        ids, labels = b.input_ids[0], b.labels[0]
        sup = labels != -100
        image = (ids == TOK.img_context_id) | (ids == TOK.img_start_id) | (ids == TOK.img_end_id)
        starts = set(b.cu_seqlens[:-1].tolist())  # a sample's BOS is never a target
        expect = ~image & torch.tensor([i not in starts or ids[i] != TOK.bos_id for i in range(len(ids))])
        assert torch.equal(sup, expect) and torch.equal(labels[sup], ids[sup])
        assert int(sup.sum()) == int(b.num_supervised.sum())


@pytest.mark.parametrize("mode", ["default", "v2pe_rnd"])
def test_packed_positions_restart_per_sample_and_increase(shards, mode):
    batches, _ = cached_run(LoaderConfig(paths=shards, max_seq_len=4096, position_mode=mode))
    assert any(b.num_samples > 1 for b in batches)
    for b in batches:
        assert b.num_tokens <= 4096
        pos = b.position_ids[0]
        lens = b.sample_lengths.tolist()
        assert sum(lens) == b.num_tokens and b.cu_seqlens.tolist() == np.cumsum([0] + lens).tolist()
        for lo, hi in zip(b.cu_seqlens[:-1].tolist(), b.cu_seqlens[1:].tolist()):
            assert pos[lo] == 0
            assert torch.all(pos[lo + 1 : hi] > pos[lo : hi - 1])
        assert b.pixel_values.shape[0] == int(b.image_tiles.sum()) == sum(
            sum(BY_ID[i]["meta"]["tiles"]) for i in b.ids)
        # tiles are in sequence order: sample by sample
        assert b.image_tiles.tolist() == [t for i in b.ids for t in BY_ID[i]["meta"]["tiles"]]
    if mode == "default":
        for b in batches:
            for lo, hi in zip(b.cu_seqlens[:-1].tolist(), b.cu_seqlens[1:].tolist()):
                assert torch.equal(b.position_ids[0, lo:hi], torch.arange(hi - lo, dtype=torch.float64))
    else:
        assert any((b.position_ids != b.position_ids.floor()).any() for b in batches)  # fractional visual steps


def test_packs_match_an_unpacked_pass_sample_by_sample(shards):
    single, _ = cached_run(LoaderConfig(paths=shards, pixel_dtype="fp32", shuffle=False, position_mode="v2pe_rnd", seed=5))
    packed, _ = run(LoaderConfig(paths=shards, pixel_dtype="fp32", shuffle=False, position_mode="v2pe_rnd", seed=5,
                                 max_seq_len=4096))
    ref = {b.ids[0]: b for b in single}
    for b in packed:
        t0 = 0
        for sid, lo, hi in zip(b.ids, b.cu_seqlens[:-1].tolist(), b.cu_seqlens[1:].tolist()):
            r = ref[sid]
            assert torch.equal(b.input_ids[:, lo:hi], r.input_ids)
            assert torch.equal(b.position_ids[:, lo:hi], r.position_ids)  # strides depend on (seed, epoch, id)
            assert torch.equal(b.pixel_values[t0 : t0 + r.num_tiles], r.pixel_values)
            t0 += r.num_tiles


def test_imagenet_normalisation_and_dtype(tmp_path):
    from PIL import Image

    rec, _ = make_sample(0)
    rec = json.loads(json.dumps(rec))
    buf = io.BytesIO()
    Image.new("RGB", (200, 200), (255, 255, 255)).save(buf, format="PNG")
    write_shard(tmp_path / "w.tar", [(rec, [buf.getvalue()])])
    (b,), _ = run(LoaderConfig(paths=[str(tmp_path / "w.tar")], pixel_dtype="fp32"))
    expect = (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    assert np.allclose(b.pixel_values[0, :, 0, 0].numpy(), expect, atol=1e-4)
    (b,), _ = run(LoaderConfig(paths=[str(tmp_path / "w.tar")]))
    assert b.pixel_values.dtype == torch.bfloat16


# -- order, dp split, resume ----------------------------------------------------------------------
RESUME_CFG = dict(seed=7, max_seq_len=2000, buffer_size=3, position_mode="v2pe_rnd")


@pytest.fixture(scope="module")
def two_epochs(shards):
    """An uninterrupted 2-epoch packed run, with the loader state saved after every batch."""
    cfg = LoaderConfig(paths=shards, num_epochs=2, **RESUME_CFG)
    loader = PackedLoader(cfg, TOK)
    batches, states = [], []
    for batch in loader:
        batches.append(batch)
        states.append(json.loads(json.dumps(loader.state_dict())))  # must survive a checkpoint as JSON
    return cfg, batches, states


def test_order_is_deterministic_per_seed(shards, two_epochs):
    _, batches, _ = two_epochs
    a = ids_of(batches)
    b = ids_of(run(LoaderConfig(paths=shards, num_epochs=1, **RESUME_CFG))[0])
    c = ids_of(run(LoaderConfig(paths=shards, num_epochs=1, **{**RESUME_CFG, "seed": 8}))[0])
    assert a[:N] == b and b != c
    assert a[:N] != a[N:]  # each epoch has its own shard order
    assert sorted(a[:N]) == sorted(a[N:]) == sorted(b) == sorted(c) == SHARDED


@pytest.mark.parametrize("n_shards", [4, 1], ids=["shard_split", "sample_split"])
def test_dp_ranks_are_disjoint_and_cover_everything(shards, tmp_path, n_shards):
    data = shards
    if n_shards == 1:  # fewer shards than ranks: split every dp_size-th sample
        write_shard(tmp_path / "one.tar", SAMPLES[:5])
        data = [str(tmp_path / "one.tar")]
    seen = [ids_of(run(LoaderConfig(paths=data, seed=3, dp_rank=r, dp_size=2))[0]) for r in range(2)]
    assert seen[0] and seen[1] and not set(seen[0]) & set(seen[1])
    expect = SHARDED if n_shards == 4 else [r["id"] for r, _ in SAMPLES[:5]]
    assert sorted(seen[0] + seen[1]) == sorted(expect)


def test_resume_from_state_gives_the_same_next_batches(two_epochs):
    """Resume from states saved during an uninterrupted 2-epoch run (packing buffer non-empty, packs formed
    but not handed out, the epoch boundary) and compare every later batch, tensors included."""
    cfg, full, states = two_epochs
    pending = [k for k, st in enumerate(states) if st["pending"]]  # samples waiting in the packing buffer
    ready = [k for k, st in enumerate(states) if st["ready"]]  # packs formed, not yet handed out
    boundary = max(k for k, st in enumerate(states) if st["epoch"] == 0)
    assert pending and ready and boundary < len(full) - 1
    for k in (pending[0], ready[0], boundary):
        resumed = PackedLoader(cfg, TOK)
        resumed.load_state_dict(states[k])
        assert resumed.state_dict() == states[k]
        assert_batches_equal(list(resumed), full[k + 1 :])
        assert resumed.stats.samples == 2 * N  # counters continue from the saved state


def test_state_refuses_another_split(shards):
    loader = PackedLoader(LoaderConfig(paths=shards, seed=1), TOK)
    state = loader.state_dict()
    with pytest.raises(ValueError, match="seed"):
        PackedLoader(LoaderConfig(paths=shards, seed=2), TOK).load_state_dict(state)
    with pytest.raises(ValueError, match="dp_size"):
        PackedLoader(LoaderConfig(paths=shards, seed=1, dp_size=2), TOK).load_state_dict(state)


# -- limits and bad input -------------------------------------------------------------------------
def test_too_long_samples_are_rejected_whole(shards):
    batches, loader = run(LoaderConfig(paths=shards, max_seq_len=1000))
    kept = ids_of(batches)
    too_long = [i for i in SHARDED if BY_ID[i]["meta"]["num_tokens"] > 1000]
    assert too_long and loader.stats.counts["too_long"] == len(too_long)
    assert sorted(kept) == sorted(set(SHARDED) - set(too_long))
    for b in batches:  # nothing was cut: every kept sample has its full length
        assert b.sample_lengths.tolist() == [BY_ID[i]["meta"]["num_tokens"] for i in b.ids]
    assert any("max_seq_len 1000" in e for e in loader.stats.examples["too_long"])


def test_max_tiles_per_pack(shards):
    batches, _ = run(LoaderConfig(paths=shards, max_seq_len=16384, max_tiles_per_pack=6))
    assert all(b.num_tiles <= 6 for b in batches) and len(ids_of(batches)) == N
    assert any(b.num_samples > 1 for b in batches)


def test_another_max_tiles_is_a_tiles_mismatch(shards):
    batches, loader = run(LoaderConfig(paths=shards, tiling=TilingConfig(max_tiles=2)))
    assert loader.stats.counts["tiles_mismatch"] > 0
    assert "max_tiles=2" in loader.stats.examples["tiles_mismatch"][0]
    for b in batches:
        assert all(t <= 3 for t in b.image_tiles.tolist())


def test_another_tokenizer_or_template_trusts_the_trainers_count(shards, tmp_path, caplog):
    import logging
    import shutil

    from v2pe_common.tokenizer import bundled_tokenizer_dir

    d = tmp_path / "tok"
    shutil.copytree(bundled_tokenizer_dir(), d)
    # Another BOS is another tokenizer (reformatting its files is not: the hash is of what tokenizes).
    config = json.loads((d / "tokenizer_config.json").read_text())
    (d / "tokenizer_config.json").write_text(json.dumps({**config, "bos_token": "<|im_start|>"}))
    other = load_tokenizer(str(d))
    assert other.sha256 != TOK.sha256
    with caplog.at_level(logging.WARNING, logger="v2pe_train.data"):
        loader = PackedLoader(LoaderConfig(paths=shards[:2]), other)
        batches = list(loader)
    assert loader.stats.num_errors == 0 and len(batches) == 4
    assert sum("the data was counted with tokenizer" in r.getMessage() for r in caplog.records) == 1  # once
    batches, loader = run(LoaderConfig(paths=shards[:1], template="chatml"))  # a trainer override
    assert loader.stats.num_errors == 0
    assert all(b.num_tokens != BY_ID[b.ids[0]]["meta"]["num_tokens"] for b in batches)


def test_a_broken_length_promise_is_counted(tmp_path):
    rec, images = make_sample(0)
    rec = json.loads(json.dumps(rec))
    rec["meta"]["num_tokens"] += 1
    rec["meta"]["text_tokens"] += 1
    write_shard(tmp_path / "l.tar", [(rec, images)])
    batches, loader = run(LoaderConfig(paths=[str(tmp_path / "l.tar")]))
    assert batches == [] and loader.stats.counts == {"length_mismatch": 1}
    assert "l.tar:s00000: encodes to 450 tokens, $.meta.num_tokens says 451" in loader.stats.examples["length_mismatch"][0]


def test_tar_reader_notices_a_garbage_header_and_members_in_any_order(tmp_path):
    from v2pe_train.data.shards import ShardReadError, ShardRef, iter_samples

    write_shard(tmp_path / "g.tar", SAMPLES[:3])
    blob = bytearray((tmp_path / "g.tar").read_bytes())
    at = blob.index(b"s00001.json")
    blob[at : at + 512] = b"\x07" * 512  # a header that is not one: tarfile alone stops quietly here
    (tmp_path / "g.tar").write_bytes(bytes(blob))
    keys = []
    with pytest.raises(ShardReadError, match="invalid header") as err:
        for ts in iter_samples(ShardRef(0, tmp_path / "g.tar", "g.tar")):
            keys.append(ts.key)
    assert keys == ["s00000"] and err.value.reason == "corrupt_shard"
    # images before the record (another writer's order) still make the same sample
    rec, images = SAMPLES[1]
    with tarfile.open(tmp_path / "o.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in reversed(list(zip(rec["images"], images))):
            add(tar, f"{rec['id']}.{name}", data)
        add(tar, f"{rec['id']}.json", json.dumps(rec).encode())
    (b,), loader = run(LoaderConfig(paths=[str(tmp_path / "o.tar")]))
    assert loader.stats.num_errors == 0 and b.ids == [rec["id"]] and b.image_tiles.tolist() == rec["meta"]["tiles"]
    write_shard(tmp_path / "p.tar", [SAMPLES[1]])
    (expect,), _ = run(LoaderConfig(paths=[str(tmp_path / "p.tar")]))
    assert_batches_equal([b], [expect])


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    write_shard(d / "good.tar", SAMPLES[0:3])
    write_shard(d / "mixed.tar", SAMPLES[3:7], corrupt_image="s00004", bad_schema="s00005")
    write_shard(d / "cut.tar", SAMPLES[7:10])
    blob = (d / "cut.tar").read_bytes()
    # cut inside the last image of the second sample
    s8_last = blob.index(b"s00008." + SAMPLES[8][0]["images"][-1].encode())
    (d / "cut.tar").write_bytes(blob[: s8_last + 512 + 100])
    write_shard(d / "short.tar", SAMPLES[10:12])  # cut at a member boundary: tarfile alone would not notice
    blob = (d / "short.tar").read_bytes()
    (d / "short.tar").write_bytes(blob[: blob.index(b"s00011.json")])
    (d / "garbage.tar").write_bytes(b"this is not a tar file" * 100)
    data = [str(d / n) for n in ("good.tar", "missing.tar", "mixed.tar", "cut.tar", "short.tar", "garbage.tar")]
    good = ["s00000", "s00001", "s00002", "s00003", "s00006", "s00007", "s00010"]
    return data, good


def test_bad_input_is_counted_with_shard_and_key_and_the_rest_delivered(bad_data):
    data, good = bad_data
    batches, loader = run(LoaderConfig(paths=data, max_seq_len=4096))
    st = loader.stats
    assert sorted(ids_of(batches)) == good
    assert st.counts == {"missing_shard": 1, "corrupt_shard": 3, "bad_image": 1, "schema": 1}
    ex = {k: "\n".join(v) for k, v in st.examples.items()}
    assert "missing.tar" in ex["missing_shard"]
    assert f"mixed.tar:s00004: image {BY_ID['s00004']['images'][-1]} does not decode" in ex["bad_image"]
    assert "mixed.tar:s00005:" in ex["schema"] and "$.task" in ex["schema"]
    assert "cut.tar:s00008:" in ex["corrupt_shard"]
    assert "short.tar:" in ex["corrupt_shard"] and "garbage.tar" in ex["corrupt_shard"]
    assert "corrupt_shard=3" in st.summary()


def test_endless_epochs_over_nothing_usable_raise_instead_of_spinning(bad_data):
    data, _ = bad_data
    with pytest.raises(LoaderError, match="a whole epoch over 2 shard"):
        next(iter(PackedLoader(LoaderConfig(paths=[data[1], data[5]], num_epochs=None), TOK)))


@pytest.mark.parametrize("name,match", [
    ("missing.tar", r"missing_shard: .*missing\.tar"),
    ("mixed.tar", r"bad_image: .*mixed\.tar:s00004: image \d\.(jpg|png) does not decode"),
    ("cut.tar", r"corrupt_shard: .*cut\.tar:s00008"),
])
def test_strict_raises_on_the_first_naming_shard_and_key(bad_data, name, match):
    data, _ = bad_data
    path = next(p for p in data if p.endswith(name))
    with pytest.raises(LoaderError, match=match):
        run(LoaderConfig(paths=[path], strict=True))


def test_manifest_promises_are_checked(tmp_path, shards):
    """A build folder: shards listed by manifest.json; a listed shard that is absent or short is counted."""
    import shutil

    from v2pe_common import schema
    from v2pe_common.paths import file_digest

    (tmp_path / "shards").mkdir()
    entries = []
    for i, p in enumerate(shards[:2]):
        shutil.copy(p, tmp_path / "shards" / Path(p).name)
        size, sha256 = file_digest(p)  # the shard as written: it passes verification, its sample count does not
        entries.append({"path": f"shards/{Path(p).name}", "format": "wds", "num_samples": 2 + i, "bytes": size,
                        "sha256": sha256})
    entries.append({"path": "shards/gone.tar", "format": "wds", "num_samples": 4, "bytes": 1, "sha256": "0" * 64})
    manifest = {"format_version": 1, "task": "long_vqa", "build_id": "0" * 16, "args": {}, "seed": 0, "versions": {},
                "tokenizer": TOK.identity, "template": TEMPLATE.name, "tiling": TILING.to_dict(), "num_samples": 12,
                "shards": entries, "token_stats": {"count": 0, "min": None, "max": None, "mean": None, "total": 0},
                "rejected": {"counts": {}, "examples": []}}
    schema.validate(manifest, schema.MANIFEST)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    batches, loader = run(LoaderConfig(paths=[str(tmp_path)], shuffle=False))
    assert len(ids_of(batches)) == 4
    assert loader.stats.counts == {"missing_shard": 1, "corrupt_shard": 1}
    assert "holds 2 samples, its manifest says 3" in loader.stats.examples["corrupt_shard"][0]
    assert loader.stats.examples["corrupt_shard"][0].startswith(f"{tmp_path.name}/shards/")


# -- torch integration ----------------------------------------------------------------------------
def test_torch_dataloader_without_workers(shards):
    cfg = LoaderConfig(paths=shards, max_seq_len=4096)
    expect = cached_run(cfg)[0]
    dl = torch.utils.data.DataLoader(LoaderDataset(cfg, TOK), batch_size=None, num_workers=0)
    assert_batches_equal(list(dl), expect)
    tdl = TrainDataLoader(cfg, TOK)
    assert ids_of(list(tdl)) == ids_of(expect) and tdl.stats.samples == N


def test_workers_split_the_data_and_resume_exactly(shards):
    cfg = LoaderConfig(paths=shards, seed=4, max_seq_len=3000, buffer_size=4, num_epochs=None)
    take, cut = 10, 5
    dl = TrainDataLoader(cfg, TOK, num_workers=2)
    it = iter(dl)
    ref = []
    for i in range(take):
        ref.append(next(it))
        if i == cut - 1:
            state = json.loads(json.dumps(dl.state_dict()))  # batches prefetched beyond `cut` are not in it
    del it
    assert {b.worker for b in ref} == {0, 1}
    # worker w of 2 reads as dp rank w of 2 (times dp_size): disjoint slices, checked by the dp tests
    assert [(w["dp_rank"], w["dp_size"]) for _, w in sorted(state["workers"].items())] == [(0, 2), (1, 2)]
    resumed = TrainDataLoader(cfg, TOK, num_workers=2)
    resumed.load_state_dict(state)
    it = iter(resumed)
    tail = [next(it) for _ in range(take - cut)]
    del it
    assert_batches_equal(ref[:cut] + tail, ref)
    with pytest.raises(ValueError, match="num_workers"):
        TrainDataLoader(cfg, TOK, num_workers=0).load_state_dict(state)
