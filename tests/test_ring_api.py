"""ring_attention's interface: backend choice and configuration errors (no processes)."""

from __future__ import annotations

import pytest
import torch

from v2pe_train.ring import RingConfigError, RingContext, ring_attention
from v2pe_train.ring.api import resolve_backend, validate_ring_inputs
from v2pe_train.ring.flash import flash_unavailable_reason
from v2pe_train.ring.hf_attention import v2pe_ring_attention


def _qkv(t=16, h=4, hk=2, d=8):
    return torch.randn(t, h, d), torch.randn(t, hk, d), torch.randn(t, hk, d)


def test_flash_forced_on_cpu_fails_fast_with_one_message():
    q, k, v = _qkv()
    with pytest.raises(RingConfigError, match=r"backend='flash' needs CUDA tensors, got device 'cpu'; use backend='torch'"):
        ring_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), [0, 16], backend="flash")


def test_flash_without_flash_attn_names_the_missing_packages(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    assert flash_unavailable_reason() == "backend='flash' needs flash_attn and ring_flash_attn (pip install 'v2pe[gpu]')"


def test_auto_picks_torch_on_cpu_and_unknown_backend_fails():
    q, _, _ = _qkv()
    assert resolve_backend("auto", q) == "torch"
    with pytest.raises(RingConfigError, match="backend must be one of"):
        resolve_backend("cuda", q)


def test_world_size_not_dividing_a_sequence():
    q, k, v = _qkv(t=6)  # local buffer of 6 tokens, W=2 -> global 12 = 6 + 6
    with pytest.raises(RingConfigError, match=r"sequence 0 has 6 tokens, not a multiple of 2\*world = 4"):
        validate_ring_inputs(q, k, v, [0, 6, 12], world=2)


def test_sequence_too_short():
    q, k, v = _qkv(t=6)
    with pytest.raises(RingConfigError, match=r"sequence 1 has 2 tokens, too short to cut into 2\*world = 4"):
        validate_ring_inputs(q, k, v, [0, 8, 10, 12], world=2)


def test_local_cu_seqlens_passed_instead_of_global():
    q, k, v = _qkv(t=8)
    with pytest.raises(RingConfigError, match=r"cu_seqlens\[-1\] = 8 but world \* T_local = 2 \* 8 = 16: pass the GLOBAL"):
        validate_ring_inputs(q, k, v, [0, 8], world=2)


def test_shape_errors():
    q, k, v = _qkv()
    with pytest.raises(RingConfigError, match="multiple of kv heads"):
        validate_ring_inputs(q, torch.randn(16, 3, 8), torch.randn(16, 3, 8), [0, 16], world=1)
    with pytest.raises(RingConfigError, match=r"expected q \(T_local, H, D\)"):
        validate_ring_inputs(q[None], k, v, [0, 16], world=1)
    with pytest.raises(RingConfigError, match="do not match"):
        validate_ring_inputs(q, k, v[:8], [0, 16], world=1)


def test_hf_attention_without_context_raises():
    q = torch.randn(1, 4, 8, 8)
    kv = torch.randn(1, 2, 8, 8)
    with pytest.raises(RingConfigError, match="needs a RingContext"):
        v2pe_ring_attention(None, q, kv, kv, None)
    ctx = RingContext(group=None, cu_seqlens=(0, 8))
    with pytest.raises(RingConfigError, match="batch 1"):
        v2pe_ring_attention(None, q.expand(2, -1, -1, -1), kv, kv, None, ring_context=ctx)
    with pytest.raises(RingConfigError, match="dropout"):
        v2pe_ring_attention(None, q, kv, kv, None, dropout=0.1, ring_context=ctx)

    class VisionAttention(torch.nn.Module):
        is_causal = False

    with pytest.raises(RingConfigError, match="causal-only but VisionAttention is bidirectional"):
        v2pe_ring_attention(VisionAttention(), q, kv, kv, None, ring_context=ctx)
