"""Rotary embedding with float64 angles, and attention masks that fractional positions cannot corrupt.

Why float64: transformers' rotary modules compute `position_ids.float() * inv_freq` in float32, whose
spacing is 1/16 at 1e6, so V2PE steps of 1/256 vanish (1e6 + 1/256 == 1e6) and long-context visual
tokens collapse onto the same angle. Here the product pos ⊗ inv_freq and cos/sin run in float64 and only
the result is cast to the activation dtype, as the reference V2PE rotary does.

The frequencies themselves are the stock float32 values (upcast): they are what the base model was
trained with, so integer positions give the stock angles up to float32 rounding of the product.

Only the default rope type is supported: V2PE forces a plain rotary with factor 1.0, which removes the
base model's dynamic-NTK scaling; silently keeping or dropping another type would
change the model, so it is an error.

Why explicit masks: with `attention_mask=None` and no cache, transformers' `create_causal_mask` treats
every position step != 1 as a packed-sequence boundary (`find_packed_sequence_indices`), so image tokens
(steps S/256) and `</img>` (step > 1) would each start a new "sequence" and stop attending to the text
before them. The model path therefore never passes `attention_mask=None`: a single sample per row gets
a 2D all-ones mask (`dense_attention_mask`), a packed row gets a 4D block-diagonal causal mask
(`packed_causal_mask`), which transformers uses as-is. A custom attention implementation (the ring path)
registered outside `AttentionMaskInterface` also escapes the check: transformers then builds no mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def rope_type(config) -> str:
    params = getattr(config, "rope_parameters", None) or {}
    legacy = getattr(config, "rope_scaling", None) or {}
    return params.get("rope_type") or legacy.get("rope_type") or legacy.get("type") or "default"


class Float64RotaryEmbedding(nn.Module):
    """Drop-in for the Qwen2/Llama text model's `rotary_emb`: forward(x, position_ids) -> (cos, sin)."""

    def __init__(self, config) -> None:
        super().__init__()
        kind = rope_type(config)
        if kind != "default":
            raise ValueError(
                f"float64 V2PE rope supports only rope_type 'default', the config has {kind!r}. V2PE drops "
                "RoPE scaling (e.g. dynamic NTK); remove `rope_scaling` / set rope_parameters.rope_type to 'default'"
            )
        params = getattr(config, "rope_parameters", None) or {}
        theta = float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        if params.get("partial_rotary_factor", 1.0) != 1.0:
            raise ValueError("float64 V2PE rope does not support partial_rotary_factor != 1")
        self.config = config
        self.rope_type = "default"
        self.attention_scaling = 1.0  # default rope: cos/sin are not rescaled
        self.rope_theta = theta
        # Same float32 frequencies as the stock module, upcast. A plain attribute, not a buffer: `model.to(bf16)`
        # and mixed-precision wrappers cast floating buffers, which would throw the float64 away.
        self._inv_freq = (1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))).double()
        self._on_device: dict[torch.device, torch.Tensor] = {}

    def inv_freq_on(self, device: torch.device) -> torch.Tensor:
        if device not in self._on_device:
            self._on_device[device] = self._inv_freq.to(device)
        return self._on_device[device]

    @torch.no_grad()
    def angles(self, position_ids: torch.Tensor) -> torch.Tensor:
        """float64 [..., dim/2] angles pos * inv_freq."""
        inv = self.inv_freq_on(position_ids.device)
        return position_ids.to(torch.float64)[..., None] * inv

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = self.angles(position_ids.to(x.device))
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    def extra_repr(self) -> str:
        return f"theta={self.rope_theta}, dim={2 * self._inv_freq.numel()}, float64 angles"


def _text_models(model: nn.Module) -> list[nn.Module]:
    """Modules owning a `rotary_emb` (the Qwen2/Llama text model inside InternVL, or a bare LM)."""
    return [m for m in model.modules() if isinstance(getattr(m, "rotary_emb", None), nn.Module)]


def install_float64_rope(model: nn.Module) -> nn.Module:
    """Swap every text model's `rotary_emb` for `Float64RotaryEmbedding`; idempotent, returns `model`."""
    owners = _text_models(model)
    if not owners:
        raise ValueError(f"{type(model).__name__} has no submodule with a `rotary_emb`; nothing to patch")
    for owner in owners:
        current = owner.rotary_emb
        if isinstance(current, Float64RotaryEmbedding):
            continue
        config = getattr(current, "config", None) or getattr(owner, "config", None)
        if config is None:
            raise ValueError(f"cannot find the config of {type(owner).__name__}.rotary_emb")
        new = Float64RotaryEmbedding(config)
        device = next((b.device for b in current.buffers()), torch.device("cpu"))
        new.inv_freq_on(device)
        owner.rotary_emb = new
    return model


def has_float64_rope(model: nn.Module) -> bool:
    owners = _text_models(model)
    return bool(owners) and all(isinstance(o.rotary_emb, Float64RotaryEmbedding) for o in owners)


# --- masks that fractional positions cannot corrupt -------------------------------------------------


def dense_attention_mask(batch_size: int, seq_len: int, device: torch.device | str | None = None) -> torch.Tensor:
    """[B, L] all-ones mask: plain causal attention, and it switches transformers' packing detection off."""
    return torch.ones(batch_size, seq_len, dtype=torch.long, device=device)


def segment_ids(sample_lengths: Sequence[Sequence[int]], seq_len: int) -> torch.Tensor:
    """[B, L] int64 sample index of each token; tokens past a row's samples (padding) each get their own id."""
    rows = []
    for b, lengths in enumerate(sample_lengths):
        lengths = [int(n) for n in lengths]
        if any(n <= 0 for n in lengths) or sum(lengths) > seq_len:
            raise ValueError(f"row {b}: sample lengths {lengths} must be positive and sum to at most {seq_len}")
        ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths, dtype=torch.long))
        pad = seq_len - ids.numel()
        # Padding as singleton segments: no row is fully masked (no NaN softmax) and nothing attends to it.
        rows.append(torch.cat([ids, len(lengths) + torch.arange(pad)]))
    return torch.stack(rows)


def packed_causal_mask(
    sample_lengths: Sequence[Sequence[int]],
    seq_len: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """[B, 1, L, L] additive mask (0 = attend, dtype min = blocked): causal within each packed sample only.

    Costs B·L² elements: right for CPU and short GPU batches with eager/SDPA attention. Long contexts go
    through the ring-attention path, which takes the sample lengths itself (cu_seqlens) instead.
    """
    seg = segment_ids(sample_lengths, seq_len).to(device)
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
    allowed = (seg[:, :, None] == seg[:, None, :]) & causal
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]
