"""Each context-parallel rank decodes and holds only its share of a pack's tiles (LoaderConfig.cp_rank /
cp_size), and the vision tower told so (`total_tiles`) gives the loss and gradients of the slicing path."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.distributed import run_distributed
from tests.test_loader import SAMPLES, TEMPLATE, TILING, TOK, write_shard
from v2pe_common import encoding
from v2pe_train.data import LoaderConfig, LoaderError, PackedLoader
from v2pe_train.parallel.context import cp_tile_range
from v2pe_train.data.samples import SampleProcessor


def text_only(index: int) -> tuple[dict, list[bytes]]:
    """A sample of the loader tests without its images: a pack with T = 0 tiles."""
    record, _ = copy.deepcopy(SAMPLES[index])
    convs = [{"from": "human", "value": f"Question {index}: no picture today?"}, {"from": "gpt", "value": "none"}]
    cnt = encoding.count(convs, [], TOK, TEMPLATE, TILING)
    record.update(id=f"t{index:05d}", images=[], conversations=convs, answer="none")
    record["meta"].update(num_tokens=cnt.total, text_tokens=cnt.text, image_tokens=cnt.image, tiles=[],
                          image_sizes=[], sources=[])
    return record, []


@pytest.fixture(scope="module")
def shard(tmp_path_factory) -> str:
    """Samples of 1..9 tiles in 1-3 images, and two with none."""
    path = tmp_path_factory.mktemp("cp_tiles") / "train-000000.tar"
    write_shard(path, [SAMPLES[0], text_only(1), *SAMPLES[2:7], text_only(7), SAMPLES[9]])
    return str(path)


def batches(shard: str, rank: int = 0, world: int = 1, **kw):
    cfg = LoaderConfig(paths=[shard], pixel_dtype="fp32", shuffle=False, position_mode="v2pe_rnd", seed=4,
                       cp_rank=rank, cp_size=world, **kw)
    loader = PackedLoader(cfg, TOK)
    return list(loader), loader


@pytest.mark.parametrize("max_seq_len", [None, 6000])  # one sample a pack; several samples a pack
@pytest.mark.parametrize("world", [2, 3, 4])
def test_the_rank_shares_concatenate_to_the_cp1_pixels_bit_for_bit(shard, world, max_seq_len):
    whole, _ = batches(shard, max_seq_len=max_seq_len)
    ranks = [batches(shard, r, world, max_seq_len=max_seq_len)[0] for r in range(world)]
    totals = [b.total_tiles for b in whole]
    if max_seq_len is None:
        assert 0 in totals and any(0 < t < world for t in totals) and any(t % world for t in totals)
    else:
        assert any(b.num_samples > 1 for b in whole)
    for i, one in enumerate(whole):
        shares = [ranks[r][i] for r in range(world)]
        for r, b in enumerate(shares):
            assert b.ids == one.ids and b.total_tiles == one.total_tiles
            for name in ("input_ids", "labels", "position_ids", "image_tiles", "cu_seqlens"):
                assert torch.equal(getattr(b, name), getattr(one, name)), name
            assert b.tile_range == cp_tile_range(one.total_tiles, r, world)
            assert b.num_tiles <= -(-one.total_tiles // world)  # never more than its share
        assert one.tile_range is None
        torch.testing.assert_close(torch.cat([b.pixel_values for b in shares]), one.pixel_values, rtol=0, atol=0)


def test_a_rank_decodes_only_the_images_that_overlap_its_share(shard, monkeypatch):
    decoded = []
    real = SampleProcessor.tile

    def counting(self, data, name, expect, tiling, out, **kw):
        decoded.append((kw["key"][0], kw["key"][1], expect))
        return real(self, data, name, expect, tiling, out, **kw)

    monkeypatch.setattr(SampleProcessor, "tile", counting)
    got, _ = batches(shard, 1, 2)
    want = []
    for b in got:
        start, stop = b.tile_range
        pos = 0
        for sample_id in b.ids:
            for i, n in enumerate(record_of(sample_id)["meta"]["tiles"]):
                if pos < stop and pos + n > start:
                    want.append((sample_id, i, n))
                pos += n
    assert decoded == want
    assert sum(t for *_, t in want) < sum(b.total_tiles for b in got)


def record_of(sample_id: str) -> dict:
    for record, _ in [*SAMPLES, text_only(1), text_only(7)]:
        if record["id"] == sample_id:
            return record
    raise KeyError(sample_id)


def test_a_cp_rank_resumes_exactly_from_a_saved_state(shard):
    full, _ = batches(shard, 1, 3, max_seq_len=6000, buffer_size=4)
    cfg = LoaderConfig(paths=[shard], pixel_dtype="fp32", shuffle=False, position_mode="v2pe_rnd", seed=4,
                       cp_rank=1, cp_size=3, max_seq_len=6000, buffer_size=4)
    first = PackedLoader(cfg, TOK)
    it = iter(first)
    head = [next(it), next(it)]
    state = first.state_dict()
    it.close()
    resumed = PackedLoader(cfg, TOK)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(head) + len(rest) == len(full)
    for a, b in zip(head + rest, full):
        assert a.ids == b.ids and a.tile_range == b.tile_range
        assert torch.equal(a.pixel_values, b.pixel_values) and torch.equal(a.position_ids, b.position_ids)


def truncated_jpeg(data: bytes) -> bytes:
    """Header intact (the size reads), pixel data cut: only a full decode finds it."""
    return data[: len(data) // 2]


def test_an_image_that_fails_only_in_full_decode_zeroes_its_tiles_on_the_rank_that_decodes_it(tmp_path):
    record, images = SAMPLES[10]  # one image of 4 tiles (1300x450): rank 0 of 2 holds tiles 0-1, rank 1 tiles 2-3
    assert record["meta"]["tiles"] == [4] and record["images"][0].endswith("jpg")
    path = tmp_path / "train-000000.tar"
    write_shard(path, [(record, [truncated_jpeg(images[0])])])
    for rank in (0, 1):
        got, loader = batches(str(path), rank, 2)
        assert [b.ids for b in got] == [[record["id"]]]  # kept on every rank: the group stays in step
        assert torch.count_nonzero(got[0].pixel_values) == 0
        assert loader.stats.counts == {"bad_image": 1}
        assert f"its tiles on cp rank {rank}/2 are zeros" in loader.stats.examples["bad_image"][0]
    with pytest.raises(LoaderError, match="bad_image: .*does not decode"):
        batches(str(path), 1, 2, strict=True)
    _, whole = batches(str(path))  # cp = 1 decodes before packing: the sample is skipped there
    assert whole.stats.counts == {"bad_image": 1}


def test_an_image_whose_header_is_bad_is_skipped_by_every_rank_before_packing(tmp_path):
    path = tmp_path / "train-000000.tar"
    write_shard(path, SAMPLES[:3], corrupt_image=SAMPLES[1][0]["id"])
    for rank in (0, 1):
        got, loader = batches(str(path), rank, 2)
        assert [i for b in got for i in b.ids] == [SAMPLES[0][0]["id"], SAMPLES[2][0]["id"]]
        assert loader.stats.counts == {"bad_image": 1}


def test_a_share_of_the_wrong_size_is_refused_naming_the_rank():
    from v2pe_train.model import build_model
    from v2pe_train.parallel.context import sharded_image_features

    model = build_model("tiny", TOK)
    with pytest.raises(ValueError, match=r"cp rank 1/2: 2 tiles given, its share of 3 is tiles \[2, 3\)"):
        sharded_image_features(model, torch.zeros(2, 3, 448, 448), None, 1, 2, total=3)


def test_loader_config_refuses_a_cp_rank_outside_its_group():
    with pytest.raises(ValueError, match="need 0 <= cp_rank < cp_size, got cp_rank=2, cp_size=2"):
        LoaderConfig(paths=["x.tar"], cp_rank=2, cp_size=2)


# -- the model side: pre-sliced pixels give the loss and gradients of the slicing path ---------------
def _presliced_worker(rank, world, group, num_tiles):
    from v2pe_train.model import build_model
    from v2pe_train.parallel.context import ContextParallel

    model = build_model("tiny", TOK, seed=1)
    gen = torch.Generator().manual_seed(7)
    text = 300
    ids = torch.randint(5, 90, (text + 256 * num_tiles,), generator=gen)
    ids[ids == model.config.image_token_id] = 4
    ids[40 : 40 + 256 * num_tiles] = model.config.image_token_id
    pos = torch.arange(ids.numel(), dtype=torch.float64)
    shifted = torch.cat([ids[1:], torch.tensor([-100])])
    shifted[shifted == model.config.image_token_id] = -100
    weights = (shifted != -100).float()
    pixels = torch.randn((num_tiles, 3, 448, 448), generator=gen)
    cp = ContextParallel(model, group, rank, world, pad_id=0, backend="torch")
    out = []
    for share in (None, cp_tile_range(num_tiles, rank, world)):
        model.zero_grad(set_to_none=True)
        given = pixels if share is None else pixels[share[0] : share[1]]
        loss = cp(ids[None], pos[None], given, [0, ids.numel()], shifted[None], weights[None],
                  total_tiles=None if share is None else num_tiles)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        out.append((float(loss), grads))
    return out


@pytest.mark.parametrize("num_tiles", [3, 1])  # T not a multiple of W; T < W (rank 1 holds no tile)
def test_presliced_pixels_give_the_loss_and_gradients_of_the_slicing_path(num_tiles):
    for (loss_a, grads_a), (loss_b, grads_b) in run_distributed(_presliced_worker, world=2, args=(num_tiles,),
                                                                timeout=120):
        assert loss_b == pytest.approx(loss_a, rel=1e-5)
        assert set(grads_a) == set(grads_b) and any("vision_tower" in n for n in grads_a)
        for name, g in grads_a.items():
            torch.testing.assert_close(grads_b[name], g, rtol=1e-5, atol=1e-5, msg=name)
