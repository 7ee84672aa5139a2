"""The loader on a real `v2pe-data` build: every sample's length is the length its meta promises.

The build (4 samples at 8K, 2 shards) is made by `v2pe_data.build.build`; the loader reads the build folder
through its manifest and only imports `v2pe_common`, never `v2pe_data`.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from v2pe_common.tiling import TilingConfig, image_processor
from v2pe_common.tokenizer import load_tokenizer
from v2pe_data.build import build
from v2pe_data.config import BuildConfig
from v2pe_data.validate import iter_tar_samples
from v2pe_train.data import IMAGENET_MEAN, IMAGENET_STD, LoaderConfig, PackedLoader, stride_rng
from v2pe_train.positions import position_ids

TOK = load_tokenizer()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("xp") / "b8k"
    manifest = build(BuildConfig(length=8192, num_samples=4, shard_size=2, out=str(out), seed=11), show_progress=False)
    records, first_image = {}, {}
    for shard in (s for s in manifest["shards"] if s["format"] == "wds"):
        for key, record, members in iter_tar_samples(out / shard["path"]):
            records[key] = record
            first_image[key] = members[record["images"][0]]
    return out, records, first_image


def test_every_sample_has_the_length_its_meta_promises(built):
    out, records, first_image = built
    loader = PackedLoader(LoaderConfig(paths=[str(out)], pixel_dtype="fp32"), TOK)  # no packing: one sample a batch
    batches = list(loader)
    assert loader.stats.num_errors == 0, loader.stats.summary()
    assert sorted(i for b in batches for i in b.ids) == sorted(records)
    for b in batches:
        meta = records[b.ids[0]]["meta"]
        assert meta["tokenizer"]["sha256"] == TOK.sha256  # so the loader checked num_tokens itself too
        assert b.num_tokens == b.input_ids.shape[1] == meta["num_tokens"]
        assert b.image_tiles.tolist() == meta["tiles"]
        assert b.pixel_values.shape[0] == sum(meta["tiles"])
        assert int((b.input_ids == TOK.img_context_id).sum()) == 256 * sum(meta["tiles"])
        assert torch.equal(b.position_ids[0], torch.arange(b.num_tokens, dtype=torch.float64))  # default mode
    # the tiles are the transformers processor's, normalised with the ImageNet statistics
    from PIL import Image

    b = batches[0]
    rec = records[b.ids[0]]
    with Image.open(io.BytesIO(first_image[b.ids[0]])) as im:
        ref = image_processor(TilingConfig(**rec["meta"]["tiling"]))(
            images=im, return_tensors="pt", image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))["pixel_values"]
    assert torch.equal(b.pixel_values[: rec["meta"]["tiles"][0]], ref)


def test_packed_v2pe_rnd_batches_keep_each_sample_intact(built):
    out, records, _ = built
    cfg = LoaderConfig(paths=[str(out)], max_seq_len=16384, position_mode="v2pe_rnd", seed=3)
    loader = PackedLoader(cfg, TOK)
    batches = list(loader)
    assert any(b.num_samples == 2 for b in batches)
    seen = []
    for b in batches:
        tile0 = 0
        for sid, lo, hi, n_sup in zip(b.ids, b.cu_seqlens[:-1].tolist(), b.cu_seqlens[1:].tolist(), b.num_supervised):
            rec = records[sid]
            meta = rec["meta"]
            assert hi - lo == meta["num_tokens"]
            ids, labels, pos = b.input_ids[0, lo:hi], b.labels[0, lo:hi], b.position_ids[0, lo:hi]
            sup = labels != -100
            answers = [t["value"] for t in rec["conversations"] if t["from"] == "gpt"]
            assert TOK.hf.decode(ids[sup].tolist()) == "".join(a + "<|im_end|>" for a in answers)
            assert int(sup.sum()) == int(n_sup)
            starts = torch.nonzero(ids == TOK.img_start_id).flatten().tolist()
            expect = position_ids(hi - lo, starts, meta["tiles"], mode="v2pe_rnd", rng=stride_rng(3, 0, sid))
            assert np.array_equal(pos.numpy(), expect)
            assert pos[0] == 0 and torch.all(pos[1:] > pos[:-1])
            tile0 += sum(meta["tiles"])
            seen.append(sid)
        assert b.pixel_values.shape[0] == tile0
    assert sorted(seen) == sorted(records)
