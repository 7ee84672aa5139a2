"""Remote-code InternVL2 → native: a tiny checkpoint in the original names converts, loads and computes the same."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers

from v2pe_common.tokenizer import load_tokenizer
from v2pe_train.convert import SIDECAR, convert, split_wqkv
from v2pe_train.model import build_model, forward

WORDS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"] + [f"w{i}" for i in range(27)]
V = len(WORDS)  # 32; the converter adds the three image tokens
VIS = dict(
    architectures=["InternVisionModel"],
    model_type="intern_vit_6b",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=448,
    patch_size=14,
    num_channels=3,
    qkv_bias=True,
    qk_normalization=False,
    norm_type="layer_norm",
    layer_norm_eps=1e-6,
    hidden_act="gelu",
)
LLM = dict(
    architectures=["InternLM2ForCausalLM"],
    model_type="internlm2",
    vocab_size=V,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    hidden_act="silu",
    rms_norm_eps=1e-5,
    rope_theta=1e6,
    rope_scaling={"type": "dynamic", "factor": 2.0},
    max_position_embeddings=32768,
    bias=False,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=2,
)
REMOTE = {
    "architectures": ["InternVLChatModel"],
    "model_type": "internvl_chat",
    "auto_map": {"AutoModel": "modeling_internvl_chat.InternVLChatModel"},
    "vision_config": VIS,
    "llm_config": LLM,
    "template": "internlm2-chat",
    "ps_version": "v2",
    "downsample_ratio": 0.5,
    "force_image_size": 448,
    "select_layer": -1,
    "use_thumbnail": True,
    "max_dynamic_patch": 12,
}


def _remote_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    d, h, n_patches = VIS["hidden_size"], LLM["hidden_size"], (448 // 14) ** 2
    w = {
        "vision_model.embeddings.class_embedding": r(1, 1, d),
        "vision_model.embeddings.patch_embedding.weight": r(d, 3, 14, 14, scale=0.05),
        "vision_model.embeddings.patch_embedding.bias": r(d),
        "vision_model.embeddings.position_embedding": r(1, n_patches + 1, d),
        "mlp1.0.weight": 1 + r(4 * d),
        "mlp1.0.bias": r(4 * d),
        "mlp1.1.weight": r(h, 4 * d),
        "mlp1.1.bias": r(h),
        "mlp1.3.weight": r(h, h),
        "mlp1.3.bias": r(h),
        "language_model.model.tok_embeddings.weight": r(V, h, scale=1.0),
        "language_model.model.norm.weight": 1 + r(h),
        "language_model.output.weight": r(V, h),
    }
    for i in range(VIS["num_hidden_layers"]):
        p = f"vision_model.encoder.layers.{i}."
        w |= {
            p + "attn.qkv.weight": r(3 * d, d),
            p + "attn.qkv.bias": r(3 * d),
            p + "attn.proj.weight": r(d, d),
            p + "attn.proj.bias": r(d),
            p + "ls1": r(d),
            p + "ls2": r(d),
            p + "norm1.weight": 1 + r(d),
            p + "norm1.bias": r(d),
            p + "norm2.weight": 1 + r(d),
            p + "norm2.bias": r(d),
            p + "mlp.fc1.weight": r(VIS["intermediate_size"], d),
            p + "mlp.fc1.bias": r(VIS["intermediate_size"]),
            p + "mlp.fc2.weight": r(d, VIS["intermediate_size"]),
            p + "mlp.fc2.bias": r(d),
        }
    heads, kv, hd = LLM["num_attention_heads"], LLM["num_key_value_heads"], h // LLM["num_attention_heads"]
    for i in range(LLM["num_hidden_layers"]):
        p = f"language_model.model.layers.{i}."
        w |= {
            p + "attention.wqkv.weight": r((heads + 2 * kv) * hd, h),
            p + "attention.wo.weight": r(h, heads * hd),
            p + "feed_forward.w1.weight": r(LLM["intermediate_size"], h),
            p + "feed_forward.w3.weight": r(LLM["intermediate_size"], h),
            p + "feed_forward.w2.weight": r(h, LLM["intermediate_size"]),
            p + "attention_norm.weight": 1 + r(h),
            p + "ffn_norm.weight": 1 + r(h),
        }
    return w


def _write_remote_tokenizer(directory) -> None:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "InternLM2Tokenizer",
                "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]},
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "pad_token": "</s>",
            }
        )
    )


@pytest.fixture(scope="module")
def remote_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("internvl2_remote")
    (d / "config.json").write_text(json.dumps(REMOTE))
    save_file(_remote_weights(), str(d / "model.safetensors"), metadata={"format": "pt"})
    _write_remote_tokenizer(d)
    return d


@pytest.fixture(scope="module")
def converted(remote_dir, tmp_path_factory):
    return convert(remote_dir, tmp_path_factory.mktemp("native") / "out")


@pytest.fixture(scope="module")
def native(converted):
    from transformers import InternVLForConditionalGeneration

    model, info = InternVLForConditionalGeneration.from_pretrained(
        str(converted), local_files_only=True, use_safetensors=True, output_loading_info=True
    )
    return model.eval(), info


def test_split_wqkv_by_hand():
    # H=4 query heads over H_kv=2 groups (g=2), head_dim 3, hidden 1: row r holds the value r.
    wqkv = torch.arange(24.0).reshape(24, 1)
    q, k, v = split_wqkv(wqkv, num_heads=4, num_kv_heads=2, head_dim=3)
    # group 0 = rows 0..11: q0 0-2, q1 3-5, k0 6-8, v0 9-11; group 1 = rows 12..23 likewise.
    assert q.flatten().tolist() == [0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 17]
    assert k.flatten().tolist() == [6, 7, 8, 18, 19, 20]
    assert v.flatten().tolist() == [9, 10, 11, 21, 22, 23]
    qb, kb, vb = split_wqkv(torch.arange(24.0), 4, 2, 3)  # biases split the same way
    assert torch.equal(qb, q.flatten()) and torch.equal(kb, k.flatten()) and torch.equal(vb, v.flatten())
    with pytest.raises(ValueError, match="rows"):
        split_wqkv(torch.zeros(20, 1), 4, 2, 3)


def test_loads_without_missing_or_unexpected_keys(native, converted):
    model, info = native
    assert not info["missing_keys"]
    assert not info["unexpected_keys"]
    assert not info.get("mismatched_keys")
    cfg = model.config
    assert cfg.text_config.model_type == "llama"
    assert cfg.text_config.rope_parameters["rope_type"] == "default"
    assert cfg.image_seq_length == 256
    sidecar = json.loads((converted / SIDECAR).read_text())
    assert sidecar["dropped_rope_scaling"] == {"type": "dynamic", "factor": 2.0}
    assert sidecar["template"] == "internlm2-chat"


def test_tokenizer_gains_image_tokens_and_rows(native, converted):
    model, _ = native
    tok = load_tokenizer(str(converted))
    assert tok.vocab_size == V + 3
    assert model.config.image_token_id == tok.img_context_id == V + 2
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == V + 3
    torch.testing.assert_close(emb[V:], emb[:V].mean(0).expand(3, -1))


def _rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def internlm2_reference(w: dict, ids: torch.Tensor) -> torch.Tensor:
    """InternLM2's forward on the ORIGINAL weights, written from the architecture (GQA over fused wqkv)."""
    h, heads, kv = LLM["hidden_size"], LLM["num_attention_heads"], LLM["num_key_value_heads"]
    hd, g, eps, n = h // heads, heads // kv, LLM["rms_norm_eps"], ids.shape[0]
    x = w["language_model.model.tok_embeddings.weight"][ids]
    inv = 1.0 / LLM["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.arange(n, dtype=torch.float64)[:, None] * inv
    cos, sin = torch.cat([ang, ang], -1).cos().float(), torch.cat([ang, ang], -1).sin().float()

    def rot(t):  # t [heads, n, hd]
        half = torch.cat([-t[..., hd // 2 :], t[..., : hd // 2]], -1)
        return t * cos + half * sin

    causal = torch.ones(n, n, dtype=torch.bool).tril()
    for i in range(LLM["num_hidden_layers"]):
        p = f"language_model.model.layers.{i}."
        a = _rms(x, w[p + "attention_norm.weight"], eps)
        qkv = (a @ w[p + "attention.wqkv.weight"].T).view(n, kv, g + 2, hd)
        q = qkv[:, :, :g].reshape(n, heads, hd).transpose(0, 1)
        k = qkv[:, :, g].transpose(0, 1)  # [kv, n, hd]
        v = qkv[:, :, g + 1].transpose(0, 1)
        q, k = rot(q), rot(k)
        k, v = k.repeat_interleave(g, 0), v.repeat_interleave(g, 0)  # query head j reads kv head j // g
        s = (q @ k.transpose(1, 2)) / math.sqrt(hd)
        o = torch.softmax(s.masked_fill(~causal, float("-inf")), -1) @ v
        x = x + o.transpose(0, 1).reshape(n, h) @ w[p + "attention.wo.weight"].T
        f = _rms(x, w[p + "ffn_norm.weight"], eps)
        gate = F.silu(f @ w[p + "feed_forward.w1.weight"].T) * (f @ w[p + "feed_forward.w3.weight"].T)
        x = x + gate @ w[p + "feed_forward.w2.weight"].T
    x = _rms(x, w["language_model.model.norm.weight"], eps)
    return x @ w["language_model.output.weight"].T


def internvit_reference(w: dict, pixels: torch.Tensor) -> torch.Tensor:
    """InternViT's last hidden state on the ORIGINAL weights (CLS first): pre-norm blocks with layer scale."""
    d, heads = VIS["hidden_size"], VIS["num_attention_heads"]
    emb = "vision_model.embeddings."
    x = F.conv2d(pixels, w[emb + "patch_embedding.weight"], w[emb + "patch_embedding.bias"], stride=14)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([w[emb + "class_embedding"].expand(x.shape[0], -1, -1), x], 1)
    x = x + w[emb + "position_embedding"]
    for i in range(VIS["num_hidden_layers"]):
        p = f"vision_model.encoder.layers.{i}."
        a = F.layer_norm(x, (d,), w[p + "norm1.weight"], w[p + "norm1.bias"], 1e-6)
        qkv = a @ w[p + "attn.qkv.weight"].T + w[p + "attn.qkv.bias"]
        q, k, v = qkv.unflatten(-1, (3, heads, d // heads)).unbind(2)  # plain [q; k; v], not grouped
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        o = o.transpose(1, 2).flatten(2) @ w[p + "attn.proj.weight"].T + w[p + "attn.proj.bias"]
        x = x + w[p + "ls1"] * o
        f = F.layer_norm(x, (d,), w[p + "norm2.weight"], w[p + "norm2.bias"], 1e-6)
        f = F.gelu(f @ w[p + "mlp.fc1.weight"].T + w[p + "mlp.fc1.bias"])
        f = f @ w[p + "mlp.fc2.weight"].T + w[p + "mlp.fc2.bias"]
        x = x + w[p + "ls2"] * f
    return x


def test_text_forward_matches_internlm2_reference(native):
    model, _ = native
    ids = torch.tensor([1, 7, 12, 5, 30, 9, 9, 4, 20, 11])
    with torch.no_grad():
        got = model(input_ids=ids[None], attention_mask=torch.ones(1, ids.numel(), dtype=torch.long)).logits[0]
    # The three added image-token rows have no InternLM2 counterpart; compare the original vocabulary.
    torch.testing.assert_close(got[:, :V], internlm2_reference(_remote_weights(), ids), rtol=1e-4, atol=1e-4)


def test_vision_tower_matches_internvit_reference(native):
    model, _ = native
    pixels = torch.randn(1, 3, 448, 448, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model.model.vision_tower(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(got, internvit_reference(_remote_weights(), pixels), rtol=1e-4, atol=1e-4)


def test_converted_checkpoint_trains_through_our_model_path(converted):
    tok = load_tokenizer(str(converted))
    model = build_model(converted, tok)
    ids = [tok.bos_id, tok.img_start_id, *[tok.img_context_id] * 256, tok.img_end_id, *tok.encode("w3 w4")]
    ids = torch.tensor(ids)[None]
    pos = torch.arange(ids.shape[1], dtype=torch.float64)[None]
    logits = forward(model, ids, pos, pixel_values=torch.randn(1, 3, 448, 448))
    assert logits.shape == (1, ids.shape[1], V + 3) and torch.isfinite(logits).all()
    logits.logsumexp(-1).mean().backward()


def test_rejects_wrong_sources(remote_dir, converted, tmp_path):
    with pytest.raises(ValueError, match="already a native"):
        convert(converted, tmp_path / "again")
    with pytest.raises(FileExistsError):
        convert(remote_dir, converted)
    bad = tmp_path / "qwen"
    bad.mkdir()
    qwen = {**LLM, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}
    (bad / "config.json").write_text(json.dumps({**REMOTE, "llm_config": qwen}))
    with pytest.raises(NotImplementedError, match="only InternLM2"):
        convert(bad, tmp_path / "out")


def test_the_cli_says_a_wrong_source_or_destination_in_one_line_with_exit_2(remote_dir, converted, tmp_path):
    """`v2pe-train --help`: exit 2 for usage errors, a missing source among them (issue 22)."""
    from cli_invoke import invoke

    from v2pe_train.cli import app

    bad = tmp_path / "qwen"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({**REMOTE, "llm_config": {**LLM, "architectures": ["Qwen2ForCausalLM"],
                                                                          "model_type": "qwen2"}}))
    for args, said in (((tmp_path / "missing", tmp_path / "o1"), "is not a directory"),
                       ((remote_dir, converted), "exists"),
                       ((bad, tmp_path / "o2"), "only InternLM2")):
        code, output = invoke(app, "convert", *args)
        lines = [line for line in output.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], (args, output)
