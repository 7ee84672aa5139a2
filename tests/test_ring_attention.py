"""Ring attention (torch backend, gloo) vs single-process causal varlen attention."""

from __future__ import annotations

import pytest
import torch
from distributed import run_distributed

from v2pe_train.ring import pad_to_multiple, ring_attention, zigzag_shard, zigzag_unshard
from v2pe_train.ring.reference import varlen_causal_attention
from v2pe_train.ring.torch_ring import zigzag_ring_attention_torch

TOL = dict(atol=1e-5, rtol=1e-5)

# lens: the unpadded packed samples; every case is padded to a multiple of 2W
CASES = {
    "gqa_one_sample": dict(lens=[64], heads=4, kv_heads=2, dim=16),
    "gqa_varlen_unequal": dict(lens=[12, 40, 4, 24], heads=4, kv_heads=2, dim=8),
    "gqa_needs_padding": dict(lens=[5, 13, 30, 1, 7], heads=4, kv_heads=2, dim=8),
    "mqa_needs_padding": dict(lens=[9, 22], heads=4, kv_heads=1, dim=8),
    "mha_math_kernel": dict(lens=[16, 9], heads=2, kv_heads=2, dim=8, kernel="math"),
    "custom_scale": dict(lens=[20, 12], heads=4, kv_heads=2, dim=8, scale=0.3),
    "fp64": dict(lens=[11, 21], heads=4, kv_heads=2, dim=8, dtype=torch.float64),
    "bf16": dict(lens=[11, 21], heads=4, kv_heads=2, dim=16, dtype=torch.bfloat16),
}
# fp32 and fp64 must be exact up to rounding; bf16 is compared with bf16-level tolerances
TOLS = {torch.float32: TOL, torch.float64: dict(atol=1e-10, rtol=1e-10), torch.bfloat16: dict(atol=6e-2, rtol=5e-2)}


def _inputs(case, world, seed):
    """Padded global q, k, v, dout (fp32) + layout; identical on every rank."""
    layout = pad_to_multiple([0, *torch.tensor(case["lens"]).cumsum(0).tolist()], 2 * world)
    g = torch.Generator().manual_seed(seed)
    t, h, hk, d = layout.orig_total, case["heads"], case["kv_heads"], case["dim"]
    q, dout = torch.randn(t, h, d, generator=g), torch.randn(t, h, d, generator=g)
    k, v = torch.randn(t, hk, d, generator=g), torch.randn(t, hk, d, generator=g)
    # pad tokens: random too (pads are ordinary trailing tokens of their sample)
    q, k, v, dout = (layout.pad(x, 0.0) for x in (q, k, v, dout))
    for x in (q, k, v, dout):
        x[torch.from_numpy(layout.is_pad)] = torch.randn(x[torch.from_numpy(layout.is_pad)].shape, generator=g)
    dtype = case.get("dtype", torch.float32)
    return layout, *(x.to(dtype) for x in (q, k, v, dout))


def _ring_worker(rank, world, group, cases):
    results = {}
    for i, (name, case) in enumerate(cases.items()):
        layout, q, k, v, dout = _inputs(case, world, seed=i)
        cu = layout.cu_seqlens
        ql, kl, vl = (zigzag_shard(x, cu, rank, world).requires_grad_() for x in (q, k, v))
        if case.get("kernel"):
            out = zigzag_ring_attention_torch(ql, kl, vl, cu, group=group, scale=case.get("scale"), kernel=case["kernel"])
        else:
            out = ring_attention(ql, kl, vl, cu, group=group, scale=case.get("scale"), backend="torch")
        out.backward(zigzag_shard(dout, cu, rank, world))
        results[name] = [x.detach() for x in (out, ql.grad, kl.grad, vl.grad)]
    return results


def _check(results, world, cases):
    for i, (name, case) in enumerate(cases.items()):
        layout, q, k, v, dout = _inputs(case, world, seed=i)
        dtype = q.dtype
        tol = TOLS[dtype]
        if dtype != torch.float32:  # reference in fp64 from the same (rounded) inputs
            q, k, v, dout = (x.double() for x in (q, k, v, dout))
        cu = layout.cu_seqlens
        q, k, v = (x.clone().requires_grad_() for x in (q, k, v))
        ref = varlen_causal_attention(q, k, v, cu, scale=case.get("scale"))
        ref.backward(dout)
        got = [zigzag_unshard([r[name][j] for r in results], cu, world) for j in range(4)]
        for what, a, b in zip(("out", "dq", "dk", "dv"), got, (ref, q.grad, k.grad, v.grad)):
            assert a.dtype == dtype, f"{name} {what}: dtype {a.dtype} != {dtype}"
            torch.testing.assert_close(a.to(b.dtype), b.detach(), **tol, msg=lambda m: f"{name} {what} W={world}: {m}")
        # padding semantics: real tokens see only real tokens of their own sample
        real = torch.from_numpy(~layout.is_pad)
        qu, ku, vu = (x.detach()[real] for x in (q, k, v))
        unpadded = varlen_causal_attention(qu, ku, vu, layout.orig_cu_seqlens, scale=case.get("scale"))
        torch.testing.assert_close(layout.unpad(got[0]).to(unpadded.dtype), unpadded, **tol)


def test_ring_matches_reference_2_processes():
    results = run_distributed(_ring_worker, world=2, args=(CASES,))
    _check(results, 2, CASES)


@pytest.mark.slow
@pytest.mark.parametrize("world", [3, 4])
def test_ring_matches_reference_3_and_4_processes(world):
    results = run_distributed(_ring_worker, world=world, args=(CASES,), timeout=180)
    _check(results, world, CASES)


@pytest.mark.parametrize("name", ["gqa_varlen_unequal", "gqa_needs_padding", "mha_math_kernel"])
def test_world_one_without_process_group(name):
    """group=None with torch.distributed uninitialised: plain causal varlen attention."""
    case = CASES[name]
    layout, q, k, v, dout = _inputs(case, 1, seed=0)
    ql, kl, vl = (x.clone().requires_grad_() for x in (q, k, v))
    out = zigzag_ring_attention_torch(ql, kl, vl, layout.cu_seqlens, scale=case.get("scale"), kernel=case.get("kernel"))
    out.backward(dout)
    q2, k2, v2 = (x.clone().requires_grad_() for x in (q, k, v))
    ref = varlen_causal_attention(q2, k2, v2, layout.cu_seqlens, scale=case.get("scale"))
    ref.backward(dout)
    for a, b in zip((out, ql.grad, kl.grad, vl.grad), (ref, q2.grad, k2.grad, v2.grad)):
        torch.testing.assert_close(a.detach(), b.detach(), **TOL)


def test_world_one_odd_lengths_need_no_padding():
    q, k, v = torch.randn(11, 4, 8), torch.randn(11, 2, 8), torch.randn(11, 2, 8)
    out = ring_attention(q, k, v, [0, 4, 11], backend="torch")
    torch.testing.assert_close(out, varlen_causal_attention(q, k, v, [0, 4, 11]), **TOL)


def test_bf16_runs_and_is_close():
    q, k, v = torch.randn(32, 4, 16), torch.randn(32, 2, 16), torch.randn(32, 2, 16)
    out = ring_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), [0, 10, 32], backend="torch")
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), varlen_causal_attention(q, k, v, [0, 10, 32]), atol=3e-2, rtol=3e-2)
