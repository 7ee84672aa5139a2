"""Remote-code InternVL2 (InternViT + MLP projector + InternLM2) → native `InternVLForConditionalGeneration`.

The V2PE base, InternVL2-2B, is published only as remote code (`InternVLChatModel`), and transformers'
own converter covers InternVL2.5/3 only. This converter writes the native layout with a **Llama** text
model (InternLM2 is Llama with a fused, grouped `wqkv`), so training never needs `trust_remote_code`.

What changes on the way (also recorded in `v2pe_convert.json` next to the weights):
- InternLM2's `rope_scaling` (dynamic NTK ×2 on InternLM2-1.8B) is dropped: V2PE replaces it with a
  plain rotary at factor 1.0 (as rope.py explains), and our float64 rope accepts only the default type.
- The tokenizer is rewritten as a plain fast tokenizer, image tokens added when missing; the embedding
  rows gained that way start at the mean row (as the reference trainer does).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from v2pe_common.tokenizer import IMAGE_TOKENS
from v2pe_common.tiling import IMG_CONTEXT

log = logging.getLogger(__name__)

SHARD_BYTES = 4 * 1024**3
SIDECAR = "v2pe_convert.json"

# Renames that need no tensor surgery; `{n}` is a layer index. Fused q/k/v keys are handled separately.
_V = "model.vision_tower"
_T = "model.language_model"
RENAMES: list[tuple[str, str]] = [
    (r"vision_model\.embeddings\.class_embedding$", f"{_V}.embeddings.cls_token"),
    (r"vision_model\.embeddings\.position_embedding$", f"{_V}.embeddings.position_embeddings"),
    (r"vision_model\.embeddings\.patch_embedding\.(weight|bias)", _V + r".embeddings.patch_embeddings.projection.\1"),
    (r"vision_model\.encoder\.layers\.(\d+)\.attn\.proj\.", _V + r".encoder.layer.\1.attention.projection_layer."),
    (r"vision_model\.encoder\.layers\.(\d+)\.attn\.(q_norm|k_norm)\.", _V + r".encoder.layer.\1.attention.\2."),
    (r"vision_model\.encoder\.layers\.(\d+)\.ls([12])$", _V + r".encoder.layer.\1.lambda_\2"),
    (r"vision_model\.encoder\.layers\.(\d+)\.norm1\.", _V + r".encoder.layer.\1.layernorm_before."),
    (r"vision_model\.encoder\.layers\.(\d+)\.norm2\.", _V + r".encoder.layer.\1.layernorm_after."),
    (r"vision_model\.encoder\.layers\.(\d+)\.mlp\.(fc[12])\.", _V + r".encoder.layer.\1.mlp.\2."),
    (r"mlp1\.0\.", "model.multi_modal_projector.layer_norm."),
    (r"mlp1\.1\.", "model.multi_modal_projector.linear_1."),
    (r"mlp1\.3\.", "model.multi_modal_projector.linear_2."),
    (r"language_model\.model\.tok_embeddings\.", f"{_T}.embed_tokens."),
    (r"language_model\.model\.layers\.(\d+)\.attention\.wo\.", _T + r".layers.\1.self_attn.o_proj."),
    (r"language_model\.model\.layers\.(\d+)\.feed_forward\.w1\.", _T + r".layers.\1.mlp.gate_proj."),
    (r"language_model\.model\.layers\.(\d+)\.feed_forward\.w3\.", _T + r".layers.\1.mlp.up_proj."),
    (r"language_model\.model\.layers\.(\d+)\.feed_forward\.w2\.", _T + r".layers.\1.mlp.down_proj."),
    (r"language_model\.model\.layers\.(\d+)\.attention_norm\.", _T + r".layers.\1.input_layernorm."),
    (r"language_model\.model\.layers\.(\d+)\.ffn_norm\.", _T + r".layers.\1.post_attention_layernorm."),
    (r"language_model\.model\.norm\.", f"{_T}.norm."),
    (r"language_model\.output\.", "lm_head."),
]
_VISION_QKV = re.compile(r"vision_model\.encoder\.layers\.(\d+)\.attn\.qkv\.(weight|bias)$")
_TEXT_WQKV = re.compile(r"language_model\.model\.layers\.(\d+)\.attention\.wqkv\.(weight|bias)$")
_IGNORED = re.compile(r"rotary_emb\.inv_freq$")  # non-persistent in recent code, present in old checkpoints


def split_wqkv(
    wqkv: torch.Tensor, num_heads: int, num_kv_heads: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """InternLM2's fused projection → (q, k, v), weights [out, in] or biases [out].

    Rows are grouped per KV head: for each of the H_kv groups, its g = H/H_kv query heads, then its key
    head, then its value head, each head_dim rows. q comes out head-major (head h = group h // g), which
    is the order Llama's grouped-query attention pairs queries with keys.
    """
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}")
    g = num_heads // num_kv_heads
    rows = num_kv_heads * (g + 2) * head_dim
    if wqkv.shape[0] != rows:
        raise ValueError(f"wqkv has {wqkv.shape[0]} rows; {num_kv_heads} groups of ({g}+2)·{head_dim} need {rows}")
    grouped = wqkv.reshape(num_kv_heads, g + 2, head_dim, *wqkv.shape[1:])
    q = grouped[:, :g].reshape(num_heads * head_dim, *wqkv.shape[1:])
    k = grouped[:, g].reshape(num_kv_heads * head_dim, *wqkv.shape[1:])
    v = grouped[:, g + 1].reshape(num_kv_heads * head_dim, *wqkv.shape[1:])
    return q.clone(), k.clone(), v.clone()


def split_vision_qkv(qkv: torch.Tensor, hidden: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """InternViT's fused qkv is plain [q; k; v], `hidden` rows each."""
    if qkv.shape[0] != 3 * hidden:
        raise ValueError(f"vision qkv has {qkv.shape[0]} rows, expected 3·{hidden}")
    return tuple(t.clone() for t in qkv.split(hidden))  # type: ignore[return-value]


def convert_state_dict(state: dict[str, torch.Tensor], text_cfg: dict, vision_hidden: int) -> dict[str, torch.Tensor]:
    """Original key names → native ones; every key must be accounted for."""
    heads, kv_heads = text_cfg["num_attention_heads"], text_cfg["num_key_value_heads"]
    head_dim = text_cfg["hidden_size"] // heads
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        if _IGNORED.search(key):
            continue
        if m := _VISION_QKV.fullmatch(key):
            layer, kind = m.groups()
            for name, part in zip("qkv", split_vision_qkv(tensor, vision_hidden)):
                out[f"{_V}.encoder.layer.{layer}.attention.{name}_proj.{kind}"] = part
            continue
        if m := _TEXT_WQKV.fullmatch(key):
            layer, kind = m.groups()
            for name, part in zip("qkv", split_wqkv(tensor, heads, kv_heads, head_dim)):
                out[f"{_T}.layers.{layer}.self_attn.{name}_proj.{kind}"] = part
            continue
        for pattern, repl in RENAMES:
            new, n = re.subn("^" + pattern, repl, key)
            if n:
                out[new] = tensor
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{len(unknown)} checkpoint keys have no native counterpart, e.g. {unknown[:5]}")
    return out


# --- config ---------------------------------------------------------------------------------------


def _remote_config(src: Path) -> dict:
    path = src / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {src} is not a model directory")
    cfg = json.loads(path.read_text())
    if "llm_config" not in cfg or "vision_config" not in cfg:
        if cfg.get("model_type") == "internvl":
            raise ValueError(f"{src} is already a native InternVL checkpoint; train from it directly")
        raise ValueError(f"{path}: no llm_config/vision_config; not a remote-code InternVLChatModel checkpoint")
    llm = cfg["llm_config"]
    arch = (llm.get("architectures") or [llm.get("model_type", "?")])[0]
    if arch != "InternLM2ForCausalLM" and llm.get("model_type") != "internlm2":
        raise NotImplementedError(f"{path}: LLM {arch!r}; only InternLM2 (InternVL2-2B, the V2PE base) is converted")
    if cfg.get("ps_version", "v2") != "v2":
        raise ValueError(f"{path}: ps_version {cfg['ps_version']!r}; native InternVL implements pixel shuffle v2 only")
    if cfg.get("select_layer", -1) != -1:
        raise ValueError(f"{path}: select_layer {cfg['select_layer']}; only the last ViT layer (-1) is supported")
    return cfg


def native_config(cfg: dict, image_token_id: int, vocab_size: int):
    """The InternVLConfig (Llama text, InternViT vision) equivalent of a remote-code config.json."""
    from transformers import InternVLConfig, InternVLVisionConfig, LlamaConfig

    llm, vis = cfg["llm_config"], cfg["vision_config"]
    image_size = cfg.get("force_image_size") or vis.get("image_size", 448)
    heads = llm["num_attention_heads"]
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=llm["hidden_size"],
        intermediate_size=llm["intermediate_size"],
        num_hidden_layers=llm["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=llm.get("num_key_value_heads", heads),
        head_dim=llm["hidden_size"] // heads,
        hidden_act=llm.get("hidden_act", "silu"),
        max_position_embeddings=llm.get("max_position_embeddings", 32768),
        rms_norm_eps=llm.get("rms_norm_eps", 1e-6),
        rope_parameters={"rope_type": "default", "rope_theta": float(llm.get("rope_theta", 10000.0))},
        attention_bias=bool(llm.get("bias", False)),
        mlp_bias=False,
        tie_word_embeddings=bool(llm.get("tie_word_embeddings", False)),
        bos_token_id=llm.get("bos_token_id", 1),
        eos_token_id=llm.get("eos_token_id", 2),
        pad_token_id=llm.get("pad_token_id"),
        initializer_range=llm.get("initializer_range", 0.02),
    )
    vision = InternVLVisionConfig(
        hidden_size=vis["hidden_size"],
        intermediate_size=vis["intermediate_size"],
        num_hidden_layers=vis["num_hidden_layers"],
        num_attention_heads=vis["num_attention_heads"],
        image_size=image_size,
        patch_size=vis.get("patch_size", 14),
        num_channels=vis.get("num_channels", 3),
        attention_bias=bool(vis.get("qkv_bias", True)),
        use_qk_norm=bool(vis.get("qk_normalization", False)),
        norm_type=vis.get("norm_type", "layer_norm"),
        layer_norm_eps=vis.get("layer_norm_eps", 1e-6),
        hidden_act=vis.get("hidden_act", "gelu"),
        use_absolute_position_embeddings=True,
        use_mean_pooling=True,  # no final norm: InternViT's last layer output is used as is
    )
    patches = (image_size // vision.patch_size[0]) ** 2
    ratio = float(cfg.get("downsample_ratio", 0.5))
    config = InternVLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=image_token_id,
        image_seq_length=int(patches * ratio**2),
        downsample_ratio=ratio,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",  # drop the CLS token, as InternVLChatModel does
        tie_word_embeddings=text.tie_word_embeddings,
    )
    config.architectures = ["InternVLForConditionalGeneration"]
    return config


# --- tokenizer ------------------------------------------------------------------------------------


def _special_tokens(src: Path) -> dict:
    tok_cfg = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (src / name).is_file():
            data = json.loads((src / name).read_text())
            tok_cfg.update({k: data[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if k in data})
    return {k: (v["content"] if isinstance(v, dict) else v) for k, v in tok_cfg.items() if v}


def load_source_tokenizer(src: Path):
    """A fast tokenizer for `src` without running its remote code."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok_cfg_path = src / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text()) if tok_cfg_path.is_file() else {}
    remote = "auto_map" in tok_cfg or str(tok_cfg.get("tokenizer_class", "")).startswith("InternLM2")
    if not remote:
        return AutoTokenizer.from_pretrained(str(src), local_files_only=True, trust_remote_code=False)
    if (src / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast(tokenizer_file=str(src / "tokenizer.json"), **_special_tokens(src))
    if (src / "tokenizer.model").is_file():
        return _from_sentencepiece(src, tok_cfg)
    raise FileNotFoundError(f"{src}: no tokenizer.json or tokenizer.model to convert the tokenizer from")


# Plain-text probes a converted tokenizer must encode exactly as sentencepiece does.
SPM_PROBES = (
    "Hello world",
    " leading space and  two spaces",
    "line one\nline two\n\n\tindented",
    "数字 12345 和中文，标点。",
    "émoji 🙂 and bytes \u00a0 nbsp",
)


def _from_sentencepiece(src: Path, tok_cfg: dict):
    """InternLM2's sentencepiece model as a Llama fast tokenizer, checked token for token against sentencepiece.

    The dummy-prefix behaviour is read from the model file itself rather than assumed. Needs `sentencepiece`.
    """
    try:
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as exc:
        raise ImportError(
            f"{src} ships a sentencepiece tokenizer (tokenizer.model) with remote code; converting it needs "
            "`pip install sentencepiece`, or pass `tokenizer=` a directory holding a fast tokenizer for this model"
        ) from exc
    from transformers import LlamaTokenizer

    model_file = str(src / "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=model_file)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(model_file).read_bytes())
    tok = LlamaTokenizer.from_pretrained(
        str(src),
        local_files_only=True,
        legacy=False,
        add_prefix_space=bool(proto.normalizer_spec.add_dummy_prefix),
        **_special_tokens(src),
    )
    for idx, entry in (tok_cfg.get("added_tokens_decoder") or {}).items():
        content = entry["content"] if isinstance(entry, dict) else entry
        if tok.convert_tokens_to_ids(content) != int(idx):
            raise ValueError(f"converted tokenizer maps {content!r} to {tok.convert_tokens_to_ids(content)}, not {idx}")
    for text in SPM_PROBES:
        got, want = tok.encode(text, add_special_tokens=False), sp.encode(text)
        if got != want:
            raise ValueError(f"converted tokenizer disagrees with sentencepiece on {text!r}: {got} vs {want}")
    return tok


def with_image_tokens(tok) -> tuple[object, int]:
    """Add `<img>`, `</img>`, `<IMG_CONTEXT>` when missing; returns (tokenizer, <IMG_CONTEXT> id)."""
    missing = [t for t in IMAGE_TOKENS if tok.convert_tokens_to_ids(t) in (None, tok.unk_token_id)]
    if missing:
        tok.add_tokens(missing, special_tokens=True)
    return tok, tok.convert_tokens_to_ids(IMG_CONTEXT)


# --- weights i/o ----------------------------------------------------------------------------------


def read_state_dict(src: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = src / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for name in files:
            state.update(load_file(str(src / name)))
        return state
    if (src / "model.safetensors").is_file():
        return load_file(str(src / "model.safetensors"))
    bins = sorted(src.glob("pytorch_model*.bin"))
    if bins:
        state = {}
        for path in bins:
            state.update(torch.load(path, map_location="cpu", weights_only=True))
        return state
    raise FileNotFoundError(f"{src}: no model.safetensors(.index.json) or pytorch_model*.bin")


def write_state_dict(state: dict[str, torch.Tensor], dst: Path, shard_bytes: int = SHARD_BYTES) -> None:
    """safetensors, sharded with an index past `shard_bytes` (the layout `from_pretrained` reads)."""
    from safetensors.torch import save_file

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key in sorted(state):
        nbytes = state[key].numel() * state[key].element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = state[key].contiguous()
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(dst / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    total = sum(t.numel() * t.element_size() for t in state.values())
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(dst / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def _grow_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    if t.shape[0] >= rows:
        return t
    extra = t.float().mean(0, keepdim=True).to(t.dtype).expand(rows - t.shape[0], *t.shape[1:])
    return torch.cat([t, extra])


# --- entry point ----------------------------------------------------------------------------------


def convert(
    src_dir: str | Path,
    dst_dir: str | Path,
    *,
    tokenizer: str | Path | None = None,
    dtype: torch.dtype | None = None,
    progress: Callable[[str], None] = log.info,
) -> Path:
    """Convert a remote-code InternVL2 (InternLM2) checkpoint at `src_dir` into `dst_dir`; returns `dst_dir`.

    `tokenizer` overrides where the tokenizer is read from (default: `src_dir`). `dtype` casts floating
    weights (default: keep the checkpoint's).
    """
    src, dst = Path(src_dir).expanduser(), Path(dst_dir).expanduser()
    if not src.is_dir():
        raise FileNotFoundError(f"source checkpoint {str(src)!r} is not a directory")
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"destination {str(dst)!r} exists and is not empty")
    cfg = _remote_config(src)

    progress(f"tokenizer from {tokenizer or src}")
    tok, image_token_id = with_image_tokens(load_source_tokenizer(Path(tokenizer) if tokenizer else src))

    progress(f"reading weights from {src}")
    state = convert_state_dict(read_state_dict(src), cfg["llm_config"], cfg["vision_config"]["hidden_size"])
    vocab = max(len(tok), cfg["llm_config"]["vocab_size"])
    for key in (f"{_T}.embed_tokens.weight", "lm_head.weight"):
        if key in state:
            state[key] = _grow_rows(state[key], vocab)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}

    dst.mkdir(parents=True, exist_ok=True)
    config = native_config(cfg, image_token_id, vocab)
    config.dtype = dtype or state[f"{_T}.embed_tokens.weight"].dtype
    config.save_pretrained(str(dst))
    progress(f"writing {len(state)} tensors to {dst}")
    write_state_dict(state, dst)
    tok.save_pretrained(str(dst))
    sidecar = {
        "source": str(src),
        "template": cfg.get("template"),
        "ps_version": cfg.get("ps_version", "v2"),
        "dropped_rope_scaling": cfg["llm_config"].get("rope_scaling"),
        "max_dynamic_patch": cfg.get("max_dynamic_patch"),
        "use_thumbnail": cfg.get("use_thumbnail"),
        "image_token_id": image_token_id,
        "added_rows": vocab - cfg["llm_config"]["vocab_size"],
    }
    (dst / SIDECAR).write_text(json.dumps(sidecar, indent=2, ensure_ascii=False))
    if (src / "generation_config.json").is_file():
        shutil.copy(src / "generation_config.json", dst / "generation_config.json")
    if sidecar["dropped_rope_scaling"]:
        log.warning("dropped rope_scaling %s: V2PE trains with a plain rotary", sidecar["dropped_rope_scaling"])
    return dst
