"""Float64 rotary and the mask trap: why the patch exists and that it changes nothing it should not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import InternVLForConditionalGeneration, LlamaConfig, LlamaForCausalLM

from v2pe_common.tokenizer import load_tokenizer
from v2pe_train.model import tiny_config
from v2pe_train.positions import position_ids
from v2pe_train.rope import (
    Float64RotaryEmbedding,
    dense_attention_mask,
    has_float64_rope,
    install_float64_rope,
    packed_causal_mask,
)

TPT = 256


@pytest.fixture(scope="module")
def stock_and_patched():
    tok = load_tokenizer()
    cfg = tiny_config(tok.vocab_size, tok.img_context_id)
    cfg._attn_implementation = "eager"  # the reference path, no kernel selection surprises
    torch.manual_seed(0)
    stock = InternVLForConditionalGeneration(cfg).eval()
    patched = InternVLForConditionalGeneration(cfg).eval()
    patched.load_state_dict(stock.state_dict())
    install_float64_rope(patched)
    return tok, stock, patched


def _text_ids(tok, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, tok.vocab_size, (1, n), generator=g)


def _lm_logits(model, input_ids, positions, attention_mask):
    with torch.no_grad():
        return model(input_ids=input_ids, position_ids=positions, attention_mask=attention_mask, use_cache=False).logits


def test_default_positions_match_stock_logits(stock_and_patched):
    tok, stock, patched = stock_and_patched
    ids = _text_ids(tok, 300)
    pos = torch.arange(300)[None]
    mask = dense_attention_mask(1, 300)
    want = _lm_logits(stock, ids, pos, mask)
    got = _lm_logits(patched, ids, pos.double(), mask)
    # Identical frequencies; only the rounding of pos·inv_freq differs (float32 vs float64) at 300 positions.
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_install_is_idempotent_and_reports(stock_and_patched):
    _, stock, patched = stock_and_patched
    assert not has_float64_rope(stock)
    rope = patched.model.language_model.rotary_emb
    install_float64_rope(patched)
    assert patched.model.language_model.rotary_emb is rope
    assert has_float64_rope(patched)


def test_fractional_steps_survive_at_a_million(stock_and_patched):
    _, stock, patched = stock_and_patched
    pos = torch.tensor([[1e6, 1e6 + 1 / 256]], dtype=torch.float64)
    x = torch.zeros(1, 2, 64)
    # The stock module sees the same float32 angle twice: 1e6 + 1/256 rounds to 1e6 in float32.
    cos_s, sin_s = stock.model.language_model.rotary_emb(x, pos)
    assert torch.equal(cos_s[0, 0], cos_s[0, 1]) and torch.equal(sin_s[0, 0], sin_s[0, 1])
    rope = patched.model.language_model.rotary_emb
    angles = rope.angles(pos)
    np.testing.assert_allclose((angles[0, 1] - angles[0, 0]).numpy(), rope._inv_freq.numpy() / 256, rtol=1e-6)
    cos_p, _ = rope(x, pos)
    assert not torch.equal(cos_p[0, 0], cos_p[0, 1])


def test_cos_sin_cast_to_activation_dtype(stock_and_patched):
    rope = stock_and_patched[2].model.language_model.rotary_emb
    cos, sin = rope(torch.zeros(1, 3, 8, dtype=torch.bfloat16), torch.tensor([[0.0, 0.5, 1e5]], dtype=torch.float64))
    assert cos.dtype == sin.dtype == torch.bfloat16 and cos.shape == (1, 3, 16)


def test_survives_dtype_cast():
    cfg = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    model = install_float64_rope(LlamaForCausalLM(cfg))
    model.to(torch.bfloat16)
    assert model.model.rotary_emb._inv_freq.dtype == torch.float64


def test_rejects_dynamic_ntk():
    cfg = LlamaConfig(
        vocab_size=32,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e6},
    )
    with pytest.raises(ValueError, match="only rope_type 'default'"):
        install_float64_rope(LlamaForCausalLM(cfg))
    with pytest.raises(ValueError, match="dynamic"):
        Float64RotaryEmbedding(cfg)


def _v2pe_text_layout(n_text_before=20, tiles=1, n_text_after=30):
    """A text-only stand-in for an image span: positions with fractional steps and a ceil jump."""
    length = n_text_before + tiles * TPT + 2 + n_text_after
    pos = position_ids(length, [n_text_before], [tiles], mode="v2pe_fix", stride=4)
    return length, torch.from_numpy(pos)[None]


def test_fractional_positions_do_not_change_the_mask(stock_and_patched):
    tok, _, patched = stock_and_patched
    length, pos = _v2pe_text_layout()
    ids = _text_ids(tok, length, seed=1)
    causal = torch.full((length, length), torch.finfo(torch.float32).min).triu(1)[None, None]
    explicit = _lm_logits(patched, ids, pos, causal)
    ours = _lm_logits(patched, ids, pos, dense_attention_mask(1, length))
    torch.testing.assert_close(ours, explicit, rtol=0, atol=1e-6)
    # The trap: with attention_mask=None transformers splits "sequences" at every step != 1.
    trapped = _lm_logits(patched, ids, pos, None)
    assert (trapped - explicit).abs().max() > 1e-3


def test_packed_mask_matches_separate_samples(stock_and_patched):
    tok, _, patched = stock_and_patched
    n1, pos1 = _v2pe_text_layout(5, 1, 10)
    n2, pos2 = _v2pe_text_layout(8, 1, 4)
    ids1, ids2 = _text_ids(tok, n1, 2), _text_ids(tok, n2, 3)
    pad = 3
    ids = torch.cat([ids1, ids2, torch.zeros(1, pad, dtype=torch.long)], dim=1)
    pos = torch.cat([pos1, pos2, torch.arange(pad, dtype=torch.float64)[None]], dim=1)
    mask = packed_causal_mask([[n1, n2]], n1 + n2 + pad)
    packed = _lm_logits(patched, ids, pos, mask)
    alone1 = _lm_logits(patched, ids1, pos1, dense_attention_mask(1, n1))
    alone2 = _lm_logits(patched, ids2, pos2, dense_attention_mask(1, n2))
    torch.testing.assert_close(packed[:, :n1], alone1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed[:, n1 : n1 + n2], alone2, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(packed).all()


def test_packed_mask_shape_and_validation():
    m = packed_causal_mask([[2, 1], [3]], 4)
    assert m.shape == (2, 1, 4, 4)
    allowed = (m[:, 0] == 0).int()
    assert allowed[0].tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    assert allowed[1].tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1]]
    with pytest.raises(ValueError, match="sum to at most"):
        packed_causal_mask([[3, 3]], 4)
