"""The tiny InternVL on a real encoded sample: shapes, V2PE positions, backward, freezes, save/load."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from v2pe_common.encoding import IGNORE_INDEX, encode
from v2pe_common.template import get_template
from v2pe_common.tiling import TilingConfig, image_processor, num_tiles
from v2pe_common.tokenizer import load_tokenizer
from v2pe_train.model import build_model, forward, parts, save_model
from v2pe_train.positions import packed_position_ids, position_ids
from v2pe_train.rope import has_float64_rope

TILING = TilingConfig(max_tiles=2)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return build_model("tiny", tok, seed=0)


@pytest.fixture(scope="module")
def sample(tok):
    """One real sample: an image that tiles 2x1 (+ thumbnail) and a question/answer around it."""
    image = Image.new("RGB", (700, 320), (30, 140, 200))
    tiles = num_tiles(*image.size, TILING)
    pixels = image_processor(TILING)(images=[image], return_tensors="pt")["pixel_values"]
    conv = [{"from": "human", "value": "<image>\nWhat colour is this?"}, {"from": "gpt", "value": "Blue."}]
    enc = encode(conv, [tiles], tok, get_template("internlm2-chat"), TILING)
    pos = position_ids(len(enc), enc.image_starts, enc.tiles, mode="v2pe_rnd", rng=0)
    return enc, pixels, torch.from_numpy(pos)


def _batch(sample):
    enc, pixels, pos = sample
    return torch.from_numpy(enc.input_ids)[None], pos[None], pixels


def test_tiny_consumes_the_real_tile_contract(model, tok, sample):
    enc, pixels, pos = sample
    assert pixels.shape == (enc.tiles[0], 3, 448, 448)
    assert (enc.input_ids == tok.img_context_id).sum() == enc.tiles[0] * 256
    assert model.config.image_token_id == tok.img_context_id
    assert has_float64_rope(model)
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    assert pos.dtype == torch.float64 and pos[-1] < len(enc) - 1  # fractional image span compressed


def test_forward_and_backward(model, tok, sample):
    ids, pos, pixels = _batch(sample)
    enc = sample[0]
    model.zero_grad(set_to_none=True)
    logits = forward(model, ids, pos, pixel_values=pixels)
    assert logits.shape == (1, ids.shape[1], tok.vocab_size)
    assert torch.isfinite(logits).all()
    labels = torch.from_numpy(enc.labels)[None]
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
    )
    loss.backward()
    for name in ("vision", "projector", "language"):
        grads = [p.grad for m in parts(model)[name] for p in m.parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name} got no gradient"
    model.zero_grad(set_to_none=True)


def test_image_features_reach_the_logits(model, sample):
    ids, pos, pixels = _batch(sample)
    with torch.no_grad():
        a = forward(model, ids, pos, pixel_values=pixels)
        b = forward(model, ids, pos, pixel_values=torch.zeros_like(pixels))
    assert (a[0, -1] - b[0, -1]).abs().max() > 1e-6


def test_packed_rows_match_single_samples(model, tok, sample):
    enc, pixels, _ = sample
    ids1 = torch.from_numpy(enc.input_ids)
    ids2 = torch.tensor(tok.encode("A second, text-only sample in the same pack."))
    n1, n2 = ids1.numel(), ids2.numel()
    pos = packed_position_ids([n1, n2], enc.image_starts, enc.tiles, mode="v2pe_fix", stride=64)
    pos = torch.from_numpy(pos)[None]
    ids = torch.cat([ids1, ids2])[None]
    with torch.no_grad():
        packed = forward(model, ids, pos, pixel_values=pixels, sample_lengths=[[n1, n2]])
        first = forward(model, ids1[None], pos[:, :n1], pixel_values=pixels)
        second = forward(model, ids2[None], pos[:, n1:])
    torch.testing.assert_close(packed[:, :n1], first, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(packed[:, n1:], second, rtol=1e-4, atol=1e-5)


def test_freeze_flags(tok):
    m = build_model("tiny", tok, freeze_vision=True, freeze_projector=True)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.language_model.", "lm_head.")) for n in trainable)
    m = build_model("tiny", tok, freeze_language=True)
    frozen = {n for n, p in m.named_parameters() if not p.requires_grad}
    assert "lm_head.weight" in frozen and "model.language_model.embed_tokens.weight" in frozen
    assert all(p.requires_grad for n, p in m.named_parameters() if n.startswith("model.vision_tower."))
    assert all(p.requires_grad for n, p in m.named_parameters() if n.startswith("model.multi_modal_projector."))


def test_seeded_init(tok):
    a, b, c = (build_model("tiny", tok, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.lm_head.weight, b.lm_head.weight)
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_save_load_round_trip(model, tok, sample, tmp_path):
    out = save_model(model, tmp_path / "ckpt", tok)
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    loaded = build_model(out, tok)
    assert has_float64_rope(loaded)
    ids, pos, pixels = _batch(sample)
    with torch.no_grad():
        torch.testing.assert_close(
            forward(loaded, ids, pos, pixel_values=pixels), forward(model, ids, pos, pixel_values=pixels)
        )


def test_vocabulary_grows_with_mean_rows(model, tok, tmp_path):
    """A checkpoint with a smaller vocabulary gets the tokenizer's extra rows, set to the mean row."""
    small = build_model("tiny", tok, seed=3)
    keep = tok.vocab_size - 5  # <IMG_CONTEXT> (id 7) stays inside
    small.resize_token_embeddings(keep)
    save_model(small, tmp_path / "small")
    grown = build_model(tmp_path / "small", tok)
    emb, out = grown.get_input_embeddings().weight, grown.get_output_embeddings().weight
    assert emb.shape[0] == out.shape[0] == tok.vocab_size
    torch.testing.assert_close(emb[keep:], emb[:keep].mean(0).expand(5, -1))
    torch.testing.assert_close(out[keep:], out[:keep].mean(0).expand(5, -1))


def test_clear_errors(tok, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        build_model(tmp_path / "missing", tok)
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(
        json.dumps({"architectures": ["InternVLChatModel"], "model_type": "internvl_chat", "llm_config": {}})
    )
    with pytest.raises(ValueError, match="v2pe-train convert"):
        build_model(remote, tok)
