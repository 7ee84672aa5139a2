"""The HF-native InternVL (`InternVLForConditionalGeneration`) as v2pe trains it.

`build_model("tiny", tok)` is a random model that still eats the real data contract (448-px tiles,
256 tokens a tile) so CPU tests run the true shapes; `build_model(DIR, tok)` loads a native checkpoint
(remote-code InternVL2 checkpoints go through `v2pe-train convert` first). Either way the text model
gets the float64 rotary (`rope.py`) and the tokenizer's `<IMG_CONTEXT>` id. The model is single-device:
nothing here knows about distribution.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from v2pe_common.tiling import TILE_SIZE, TOKENS_PER_TILE, TilingConfig
from v2pe_common.tokenizer import TOKENIZER_PATTERNS, TextTokenizer, is_hub_id, resolve_hub_id

from .model_files import save_processor, save_tokenizer
from .rope import Float64RotaryEmbedding, dense_attention_mask, install_float64_rope, packed_causal_mask

TINY = "tiny"
SHAPE_2B = "2b"  # random init in the shape of InternVL2-2B: for throughput and memory benchmarks only
SHAPE_8B = "8b"  # random init in the shape of InternVL2-8B: for FSDP memory and throughput benchmarks only


def tiny_config(vocab_size: int, image_token_id: int, *, eos_token_id: int | None = None):
    """A ~650K-parameter InternVL on the real contract: 448-px tiles, patch 14 → 32×32, shuffle 0.5 → 256."""
    from transformers import InternVLConfig

    return InternVLConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=TILE_SIZE,
            patch_size=14,
            attention_bias=True,  # InternViT-300M has qkv biases
        ),
        text_config=dict(
            model_type="qwen2",
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            rope_theta=1e6,
            tie_word_embeddings=False,
            eos_token_id=eos_token_id,
        ),
        image_token_id=image_token_id,
        image_seq_length=TOKENS_PER_TILE,
        downsample_ratio=0.5,
        tie_word_embeddings=False,  # InternLM2 keeps a separate output matrix; so does the tiny model
    )


def shape_2b_config(vocab_size: int, image_token_id: int, *, eos_token_id: int | None = None):
    """InternVL2-2B's shapes: InternViT-300M (24 x 1024) + MLP projector + an InternLM2-1.8B-shaped Llama.

    Random weights: only for measuring speed and memory without downloading the checkpoint.
    """
    from transformers import InternVLConfig

    return InternVLConfig(
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=TILE_SIZE, patch_size=14, attention_bias=True),
        text_config=dict(model_type="llama", vocab_size=vocab_size, hidden_size=2048, intermediate_size=8192,
                         num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=8,
                         max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=False,
                         eos_token_id=eos_token_id),
        image_token_id=image_token_id,
        image_seq_length=TOKENS_PER_TILE,
        downsample_ratio=0.5,
        tie_word_embeddings=False,
    )


def shape_8b_config(vocab_size: int, image_token_id: int, *, eos_token_id: int | None = None):
    """InternVL2-8B's shapes: InternViT-300M (24 x 1024) + MLP projector + an InternLM2-7B-shaped Llama
    (4096 hidden, 32 layers, 32 heads / 8 kv heads, 14336 MLP). Random weights, benchmarks only.
    """
    cfg = shape_2b_config(vocab_size, image_token_id, eos_token_id=eos_token_id)
    text = cfg.text_config
    text.hidden_size, text.intermediate_size, text.num_hidden_layers = 4096, 14336, 32
    text.num_attention_heads, text.num_key_value_heads, text.head_dim = 32, 8, 128
    return cfg


PRESETS = {TINY: tiny_config, SHAPE_2B: shape_2b_config, SHAPE_8B: shape_8b_config}


def preset_parameter_count(name: str, vocab_size: int, image_token_id: int = 0) -> int:
    """Parameters of a preset, counted on the meta device so an 8B shape costs no memory to size."""
    from transformers import InternVLForConditionalGeneration

    with torch.device("meta"):
        model = InternVLForConditionalGeneration(PRESETS[name](vocab_size, image_token_id))
    return sum(p.numel() for p in model.parameters())


# What training and inference read from a Hub model repo: configs, safetensors weights, the tokenizer files.
MODEL_PATTERNS = ("*.safetensors", *TOKENIZER_PATTERNS)


def check_native_checkpoint(path: str | Path) -> Path:
    """`path` as a Path if it holds a native InternVL checkpoint; otherwise an error that says what to do.

    A Hub id `org/name` that is not a local path is fetched into (or found in) the HF cache first.
    """
    directory = resolve_hub_id(str(path), MODEL_PATTERNS, "model") if is_hub_id(str(path)) else Path(path).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"model {str(directory)!r} is not a directory (nor the spec 'tiny')")
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} is missing: not a Hugging Face model directory")
    cfg = json.loads(cfg_path.read_text())
    archs = cfg.get("architectures") or []
    if "llm_config" in cfg or cfg.get("model_type") == "internvl_chat" or "InternVLChatModel" in archs:
        raise ValueError(
            f"{directory} is a remote-code InternVLChatModel checkpoint (llm_config, vision_model.*, mlp1.*); "
            f"convert it first: `v2pe-train convert {directory} <OUT_DIR>`, then train from <OUT_DIR>"
        )
    if cfg.get("model_type") != "internvl":
        raise ValueError(f"{cfg_path}: model_type {cfg.get('model_type')!r}, expected 'internvl' (InternVLConfig)")
    return directory


def build_model(
    spec: str | Path,
    tokenizer: TextTokenizer,
    *,
    dtype: torch.dtype = torch.float32,
    freeze_vision: bool = False,
    freeze_projector: bool = False,
    freeze_language: bool = False,
    attn_implementation: str | dict[str, str] = "sdpa",
    seed: int = 0,
    drop_path_rate: float = 0.0,
    device: str | torch.device | None = None,
) -> nn.Module:
    """A ready-to-train `InternVLForConditionalGeneration`: vocabulary fitted, float64 rope, freezes applied.

    `attn_implementation` is a name or a per-sub-config dict, e.g. {"text_config": "ring_zigzag",
    "vision_config": "sdpa"} once a custom attention is registered. `seed` only affects the presets.
    `drop_path_rate` > 0 gives the vision tower stochastic depth (`install_drop_path`).

    `device="meta"` builds a preset without allocating its weights, for a model about to be sharded: apply
    `fully_shard`, then `materialise` allocates and initialises each rank's shards only. A native checkpoint
    folder ignores it and loads as always (its weights come from the files, not from an init).
    """
    from transformers import InternVLForConditionalGeneration

    if str(spec) in PRESETS:
        cfg = PRESETS[str(spec)](tokenizer.vocab_size, tokenizer.img_context_id, eos_token_id=tokenizer.hf.eos_token_id)
        on_meta = device is not None and torch.device(device).type == "meta"
        # Seeded without touching the caller's global RNG stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            with torch.device("meta") if on_meta else contextlib.nullcontext():
                model = InternVLForConditionalGeneration(cfg)
        model.set_attn_implementation(attn_implementation)
        model = model.to(dtype)
    else:
        directory = check_native_checkpoint(spec)
        model = InternVLForConditionalGeneration.from_pretrained(
            str(directory),
            local_files_only=True,
            use_safetensors=True,
            dtype=dtype,
            attn_implementation=attn_implementation,
        )
    check_tile_contract(model)
    fit_vocabulary(model, tokenizer, allow_new_image_token=str(spec) in PRESETS)
    install_float64_rope(model)
    install_drop_path(model, drop_path_rate)
    set_trainable(model, vision=not freeze_vision, projector=not freeze_projector, language=not freeze_language)
    return model


# Presets at least this large are built on the meta device when the trainer shards them (FSDP). The tiny
# preset stays eager: it costs nothing, and its init then equals a one-process run's for the same seed.
META_INIT_MIN_PARAMS = 100_000_000


def builds_on_meta(spec: str | Path, tokenizer: TextTokenizer) -> bool:
    """Whether a sharded run builds `spec` on the meta device (a preset of >= META_INIT_MIN_PARAMS)."""
    return str(spec) in PRESETS and preset_parameter_count(
        str(spec), tokenizer.vocab_size, tokenizer.img_context_id) >= META_INIT_MIN_PARAMS


def materialise(model: nn.Module, device: torch.device | str, *, root: nn.Module | None = None, seed: int = 0,
                stream: int = 0) -> nn.Module:
    """Allocate and initialise a preset built with `build_model(..., device="meta")`, after `fully_shard`:
    each rank allocates only its shards. `root` is the outermost sharded module holding `model` (default
    `model`).

    The init is transformers' own (`init_weights`, the distributions an eager build draws), seeded by
    (`seed`, `stream`) without touching the caller's RNG: ranks holding different shards pass different
    streams (their shard coordinate), replicas the same one. It is deterministic for a seed and a mesh but
    NOT equal to an eager build's weights: an eager build also draws each layer's default init before
    transformers' init, and draws whole tensors, not shards. The float64 rope holds no weights and is
    rebuilt from the config, as on an eager build.
    """
    import numpy as np

    (root or model).to_empty(device=device)
    for obj in [*model.modules(), *model.parameters(), *model.buffers()]:
        obj.__dict__.pop("_is_hf_initialized", None)  # to_empty kept the flags; the memory is garbage
    device = torch.device(device)
    state = int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(state)
        model.init_weights()
    for owner in _rope_owners(model):
        owner.rotary_emb = Float64RotaryEmbedding(owner.rotary_emb.config)
    return model


def _rope_owners(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(getattr(m, "rotary_emb", None), Float64RotaryEmbedding)]


def check_tile_contract(model: nn.Module) -> None:
    """The data builder counts 256 tokens per 448-px tile; the vision side must produce exactly that."""
    vc = model.config.vision_config
    size = vc.image_size[0] if isinstance(vc.image_size, (list, tuple)) else vc.image_size
    patch = vc.patch_size[0] if isinstance(vc.patch_size, (list, tuple)) else vc.patch_size
    tokens = int((size // patch) ** 2 * model.config.downsample_ratio**2)
    if size != TILE_SIZE or tokens != TOKENS_PER_TILE:
        raise ValueError(
            f"model gives {tokens} tokens per {size}-px tile; the data contract is {TOKENS_PER_TILE} per {TILE_SIZE}"
        )


def fit_vocabulary(model: nn.Module, tokenizer: TextTokenizer, *, allow_new_image_token: bool = False) -> None:
    """Point `image_token_id` at the tokenizer's `<IMG_CONTEXT>` and grow the embeddings to its vocabulary.

    New rows start at the mean of the existing rows (input and output matrices), as the reference trainer
    initialises its added tokens.
    """
    ctx = tokenizer.img_context_id
    old_id = model.config.image_token_id
    if old_id != ctx and not allow_new_image_token:
        raise ValueError(
            f"checkpoint image_token_id {old_id} != tokenizer <IMG_CONTEXT> id {ctx}: this tokenizer does not belong "
            "to this checkpoint (pass the tokenizer saved next to it)"
        )
    n_old = model.get_input_embeddings().num_embeddings
    n_new = tokenizer.vocab_size
    if n_new > n_old:
        model.resize_token_embeddings(n_new, mean_resizing=False)
        with torch.no_grad():
            inp = model.get_input_embeddings().weight
            inp[n_old:] = inp[:n_old].mean(0)
            out = model.get_output_embeddings()
            if out is not None and out.weight is not inp:
                out.weight[n_old:] = out.weight[:n_old].mean(0)
    if ctx >= model.get_input_embeddings().num_embeddings:
        raise ValueError(f"<IMG_CONTEXT> id {ctx} is outside the model's vocabulary")
    model.config.image_token_id = ctx


class StochasticDepth(nn.Module):
    """Drop a residual branch for whole tiles with probability `rate`, scaling the kept ones by 1 / (1 - rate),
    in training mode only; the identity in eval mode (timm's DropPath, which InternViT uses)."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = float(rate)

    def forward(self, branch: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return branch
        keep = 1.0 - self.rate
        # One draw per tile (dim 0). Gradient checkpointing's recompute restores the RNG state, so the
        # recomputed forward drops the same tiles.
        mask = branch.new_empty((branch.shape[0],) + (1,) * (branch.dim() - 1)).bernoulli_(keep)
        return branch * mask / keep


def install_drop_path(model: nn.Module, rate: float) -> None:
    """Stochastic depth on the vision tower, as InternViT trains with `drop_path_rate` (V2PE: 0.1).

    transformers' InternVL vision layers have no drop path, so each layer's two residual branches (the
    attention and the MLP output) get a `StochasticDepth` through forward hooks. The rate rises linearly
    from 0 at the first layer to `rate` at the last, InternViT's schedule (so the 1-layer tiny tower never
    drops). The mask is one scalar per tile, so masking the branch before the layer scale (lambda_1,
    lambda_2) and dropout equals masking after them. The modules hold no weights: checkpoints keep their
    keys. Calling again sets new rates.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop_path_rate must lie in [0, 1), got {rate}")
    layers = model.model.vision_tower.encoder.layer
    rates = torch.linspace(0.0, rate, len(layers)).tolist()  # InternViT's rule: a 1-layer tower gets 0
    for layer, r in zip(layers, rates):
        existing = getattr(layer, "drop_path", None)
        if isinstance(existing, StochasticDepth):
            existing.rate = r
            continue
        if rate == 0.0:
            continue
        drop = layer.drop_path = StochasticDepth(r)
        layer.attention.register_forward_hook(lambda _m, _a, out, drop=drop: (drop(out[0]), *out[1:]))
        layer.mlp.register_forward_hook(lambda _m, _a, out, drop=drop: drop(out))


def parts(model: nn.Module) -> dict[str, list[nn.Module]]:
    inner = model.model
    return {
        "vision": [inner.vision_tower],
        "projector": [inner.multi_modal_projector],
        "language": [inner.language_model, model.lm_head],
    }


def set_trainable(model: nn.Module, *, vision: bool = True, projector: bool = True, language: bool = True) -> None:
    for name, flag in (("vision", vision), ("projector", projector), ("language", language)):
        for module in parts(model)[name]:
            module.requires_grad_(flag)


def forward(
    model: nn.Module,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    *,
    pixel_values: torch.Tensor | None = None,
    sample_lengths: Sequence[Sequence[int]] | None = None,
    attention_mask: torch.Tensor | None = None,
    return_hidden: bool = False,
) -> torch.Tensor:
    """Logits [B, L, V] (or the final hidden states [B, L, H]) for one of our batches.

    input_ids [B, L]; position_ids [B, L] float64 V2PE positions; pixel_values [T, 3, 448, 448] for the
    batch's tiles in sequence order; sample_lengths per row when rows are packed. Labels stay with the
    training loop, which owns the loss. An attention mask is always passed (see rope.py: the mask trap).
    """
    if input_ids.shape != position_ids.shape or input_ids.dim() != 2:
        shapes = f"input_ids {tuple(input_ids.shape)}, position_ids {tuple(position_ids.shape)}"
        raise ValueError(f"{shapes}: both must be [B, L]")
    batch, length = input_ids.shape
    device = input_ids.device
    if attention_mask is None:
        packed = sample_lengths is not None and any(list(r) != [length] for r in sample_lengths)
        if packed:
            attention_mask = packed_causal_mask(sample_lengths, length, dtype=model.dtype, device=device)
        else:
            attention_mask = dense_attention_mask(batch, length, device=device)
    if pixel_values is not None:
        pixel_values = pixel_values.to(device=device, dtype=model.dtype)
    out = model.model(
        input_ids=input_ids,
        pixel_values=pixel_values,
        attention_mask=attention_mask,
        position_ids=position_ids.to(torch.float64),
        use_cache=False,
    )
    hidden = out.last_hidden_state
    return hidden if return_hidden else model.lm_head(hidden)


def save_model(model: nn.Module, directory: str | Path, tokenizer: TextTokenizer | None = None, *,
               template: str | None = None, max_tiles: int | None = None) -> Path:
    """An inference folder: config.json, weights in the `save_pretrained` layout, the tokenizer and its chat
    template (`template`: the trainer's template name, default internlm2-chat), the image processor tiling
    up to `max_tiles` (default 12) and the processor config. Loadable by `build_model(directory, tokenizer)`,
    `V2PEGenerator.load(directory)`, `InternVLForConditionalGeneration.from_pretrained(directory)` and
    `AutoImageProcessor.from_pretrained(directory)`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    if tokenizer is not None:
        save_tokenizer(tokenizer, directory, template)
    save_processor(directory, max_tiles or TilingConfig().max_tiles)
    return directory


def resolve_tokenizer(cfg) -> str | None:
    """The tokenizer a run's config (a TrainConfig: `tokenizer`, `model`) trains with: the one it names, else the
    model folder's or Hub repo's own; None for a preset (the bundled tokenizer)."""
    if cfg.model.tokenizer:
        return cfg.model.tokenizer
    folder = Path(cfg.model.name)
    if cfg.model.name not in PRESETS and any((folder / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        return cfg.model.name
    if is_hub_id(cfg.model.name):  # a Hub model repo carries its tokenizer; load_tokenizer fetches just those files
        return cfg.model.name
    return None
