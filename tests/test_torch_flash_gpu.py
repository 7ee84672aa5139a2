"""torch's own flash kernels (no flash-attn wheel) vs an fp64 reference, in bf16: forward and gradients.

Runs in `make test-gpu` on an sm80+ GPU; selection rules are covered on CPU in test_kernel_selection.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from v2pe_train.ring import ring_attention
from v2pe_train.ring.api import select_kernels, varlen_attention_torch
from v2pe_train.ring.kernels import MathKernel, TorchFlashKernel
from v2pe_train.ring.reference import varlen_causal_attention
from v2pe_train.ring.torch_ring import zigzag_ring_attention_torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0),
                       reason="needs an sm80+ CUDA GPU"),
]
CU = [0, 100, 613, 1024]
BF16_TOL = dict(atol=2e-2, rtol=2e-2)


def _tensors(seed, sq, sk, heads=8, kv_heads=2, dim=128):
    g = torch.Generator().manual_seed(seed)
    q, dout = (torch.randn(sq, heads, dim, generator=g, dtype=torch.float64).cuda() for _ in range(2))
    k, v = (torch.randn(sk, kv_heads, dim, generator=g, dtype=torch.float64).cuda() for _ in range(2))
    return q, k, v, dout


def _close(got, ref):
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.double(), b.detach().double(), **BF16_TOL)


@pytest.mark.parametrize("causal,sq,sk", [(True, 512, 512), (False, 256, 777)])
def test_torch_flash_block_matches_fp64_math_in_bf16(causal, sq, sk):
    q, k, v, dout = _tensors(0, sq, sk)
    scale = q.shape[-1] ** -0.5
    ref_out, ref_lse = MathKernel().forward(q, k, v, causal, scale)
    ref_grads = MathKernel().backward(dout, q, k, v, ref_out, ref_lse, causal, scale)
    qb, kb, vb, db = (x.bfloat16() for x in (q, k, v, dout))
    out, lse = TorchFlashKernel().forward(qb, kb, vb, causal, scale)
    _close((out, lse), (ref_out, ref_lse))
    _close(TorchFlashKernel().backward(db, qb, kb, vb, out, lse.float(), causal, scale), ref_grads)


def _run(fn, seed=1):
    q, k, v, dout = _tensors(seed, CU[-1], CU[-1])
    refs = [x.clone().requires_grad_() for x in (q, k, v)]
    ref = varlen_causal_attention(*refs, CU)
    ref.backward(dout)
    leaves = [x.bfloat16().requires_grad_() for x in (q, k, v)]
    out = fn(*leaves)
    out.backward(dout.bfloat16())
    _close((out, *(x.grad for x in leaves)), (ref, *(x.grad for x in refs)))


def test_one_rank_auto_uses_varlen_attn_and_matches_fp64():
    assert select_kernels("auto", torch.empty(1, 8, 128, dtype=torch.bfloat16, device="cuda")).name == "torch_flash"
    _run(lambda q, k, v: ring_attention(q, k, v, CU, backend="auto"))


def test_torch_ring_with_torch_flash_blocks_matches_fp64():
    _run(lambda q, k, v: zigzag_ring_attention_torch(q, k, v, CU, kernel="torch_flash"))


def test_varlen_attn_matches_the_dense_mask_path():
    q, k, v, _ = (x.bfloat16() for x in _tensors(2, CU[-1], CU[-1]))
    t = CU[-1]
    sample = torch.repeat_interleave(torch.arange(len(CU) - 1), torch.tensor(CU).diff()).cuda()
    pos = torch.arange(t, device="cuda")
    mask = (sample[:, None] == sample[None, :]) & (pos[None, :] <= pos[:, None])
    dense = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                           attn_mask=mask, enable_gqa=True).transpose(0, 1)
    torch.testing.assert_close(varlen_attention_torch(q, k, v, CU, q.shape[-1] ** -0.5).float(), dense.float(),
                               **BF16_TOL)
