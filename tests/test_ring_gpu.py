"""Ring attention on CUDA (world size 1): the torch backend's CUDA kernel and, when installed, flash."""

from __future__ import annotations

import pytest
import torch

from v2pe_train.ring import ring_attention
from v2pe_train.ring.flash import flash_unavailable_reason
from v2pe_train.ring.kernels import MathKernel, get_kernel
from v2pe_train.ring.reference import varlen_causal_attention

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
CU = [0, 100, 613, 1024]


def _run(dtype, backend, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, dout = (torch.randn(1024, 8, 64, generator=g, dtype=torch.float64).cuda() for _ in range(2))
    k, v = (torch.randn(1024, 2, 64, generator=g, dtype=torch.float64).cuda() for _ in range(2))
    qr, kr, vr = (x.clone().requires_grad_() for x in (q, k, v))
    ref = varlen_causal_attention(qr, kr, vr, CU)
    ref.backward(dout)
    ql, kl, vl = (x.to(dtype).requires_grad_() for x in (q, k, v))
    out = ring_attention(ql, kl, vl, CU, backend=backend)
    out.backward(dout.to(dtype))
    return (out, ql.grad, kl.grad, vl.grad), (ref, qr.grad, kr.grad, vr.grad)


def test_torch_backend_cuda_fp32_matches_reference():
    got, ref = _run(torch.float32, "torch")
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.double(), b.detach(), atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("causal,sq,sk", [(True, 333, 333), (False, 200, 411)])
def test_cuda_block_kernel_matches_math_kernel(causal, sq, sk):
    g = torch.Generator().manual_seed(sq)
    q, do = (torch.randn(sq, 8, 64, generator=g, dtype=torch.float64).cuda() for _ in range(2))
    k, v = (torch.randn(sk, 2, 64, generator=g, dtype=torch.float64).cuda() for _ in range(2))
    o_ref, l_ref = MathKernel().forward(q, k, v, causal, 0.125)
    g_ref = MathKernel().backward(do, q, k, v, o_ref, l_ref, causal, 0.125)
    kern = get_kernel(q.device, torch.float32)
    o, l = kern.forward(q.float(), k.float(), v.float(), causal, 0.125)
    grads = kern.backward(do.float(), q.float(), k.float(), v.float(), o_ref.float(), l_ref.float(), causal, 0.125)
    for a, b in zip((o, l, *grads), (o_ref, l_ref, *g_ref)):
        torch.testing.assert_close(a.double(), b, atol=2e-4, rtol=2e-4)


@pytest.mark.skipif(flash_unavailable_reason(torch.device("cuda")) is not None, reason="flash-attn / ring-flash-attn missing")
def test_flash_backend_bf16_matches_reference():
    got, ref = _run(torch.bfloat16, "flash")
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.double(), b.detach(), atol=5e-2, rtol=5e-2)
