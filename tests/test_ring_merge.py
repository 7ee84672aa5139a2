"""update_out_and_lse and the block kernels, on one CPU process."""

from __future__ import annotations

import math

import pytest
import torch

from v2pe_train.ring import update_out_and_lse
from v2pe_train.ring.kernels import CpuFlashKernel, MathKernel, get_kernel


def _attn(q, k, v, scale):
    """Non-causal attention with its lse: q (S,H,D), k/v (Sk,H,D)."""
    s = torch.einsum("qhd,khd->hqk", q, k) * scale
    lse = torch.logsumexp(s, -1)
    out = torch.einsum("hqk,khd->qhd", torch.softmax(s, -1), v)
    return out, lse.t()


@pytest.mark.parametrize("split", [1, 5, 11])
def test_merge_of_two_key_sets_equals_full(split):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(7, 3, 4, generator=g, dtype=torch.float64)
    k, v = torch.randn(12, 3, 4, generator=g, dtype=torch.float64), torch.randn(12, 3, 4, generator=g, dtype=torch.float64)
    full_out, full_lse = _attn(q, k, v, 0.5)
    out, lse = _attn(q, k[:split], v[:split], 0.5)
    b_out, b_lse = _attn(q, k[split:], v[split:], 0.5)
    out, lse = out.clone(), lse.clone()
    update_out_and_lse(out, lse, b_out, b_lse)
    torch.testing.assert_close(out, full_out)
    torch.testing.assert_close(lse, full_lse)


def test_merge_is_in_place_on_views_and_handles_empty_accumulator():
    out = torch.zeros(6, 2, 3)
    lse = torch.full((6, 2), -math.inf)
    b_out, b_lse = torch.randn(3, 2, 3), torch.randn(3, 2)
    update_out_and_lse(out[2:5], lse[2:5], b_out, b_lse)
    torch.testing.assert_close(out[2:5], b_out)
    torch.testing.assert_close(lse[2:5], b_lse)
    assert (out[:2] == 0).all() and torch.isinf(lse[5]).all()


def test_merge_is_stable_for_large_lse_gaps():
    out, lse = torch.ones(1, 1, 2), torch.tensor([[1000.0]])
    update_out_and_lse(out, lse, torch.zeros(1, 1, 2), torch.tensor([[-1000.0]]))
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    torch.testing.assert_close(out, torch.ones(1, 1, 2))


def test_merge_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape mismatch"):
        update_out_and_lse(torch.zeros(2, 1, 3), torch.zeros(2, 1), torch.zeros(3, 1, 3), torch.zeros(3, 1))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_math_kernel_matches_cpu_flash_kernel(causal, kv_heads):
    g = torch.Generator().manual_seed(1)
    s = 13
    q = torch.randn(s, 4, 8, generator=g, dtype=torch.float64)
    k = torch.randn(s, kv_heads, 8, generator=g, dtype=torch.float64)
    v = torch.randn(s, kv_heads, 8, generator=g, dtype=torch.float64)
    dout = torch.randn(s, 4, 8, generator=g, dtype=torch.float64)
    math_k, cpu_k = MathKernel(max_tile_elems=64), CpuFlashKernel()  # tiny tiles: several query tiles
    o1, l1 = math_k.forward(q, k, v, causal, 0.4)
    o2, l2 = cpu_k.forward(q, k, v, causal, 0.4)
    torch.testing.assert_close(o1, o2)
    torch.testing.assert_close(l1, l2)
    g1 = math_k.backward(dout, q, k, v, o2, l2, causal, 0.4)
    g2 = cpu_k.backward(dout, q, k, v, o2, l2, causal, 0.4)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_kernel_selection():
    assert get_kernel(torch.device("cpu"), torch.float32).name == "cpu_flash"
    assert get_kernel(torch.device("cuda"), torch.bfloat16).name == "cuda_efficient"
    assert get_kernel(torch.device("cuda"), torch.float64).name == "math"
    with pytest.raises(ValueError, match="unknown block kernel"):
        get_kernel(torch.device("cpu"), torch.float32, "nope")
