"""Which attention kernels run for which device / dtype / head dim / GPU generation (pure rules, CPU-testable).

The real CUDA kernels run in `make test-gpu` (tests/test_torch_flash_gpu.py); here the selection function gets
fake device types and capabilities, and torch's flash ops are replaced by fakes that check the documented
varlen layout, so the wiring is covered without a GPU.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.attention.varlen as torch_varlen

from v2pe_train.config import TrainConfig
from v2pe_train.ring import RingConfigError, api, ring_attention, select
from v2pe_train.ring.kernels import MathKernel, TorchFlashKernel, get_kernel
from v2pe_train.ring.reference import varlen_causal_attention
from v2pe_train.ring.select import choose_backend, log_choice_once
from v2pe_train.parallel.apply import attention_summary

BF16, FP16, FP32, FP64 = torch.bfloat16, torch.float16, torch.float32, torch.float64
FLASH_OK = dict(flash_check=lambda device: None)  # as if CUDA, flash-attn and ring-flash-attn were all there


@pytest.mark.parametrize("requested", ["auto", "torch"])
@pytest.mark.parametrize("dtype,head_dim,cap", [(BF16, 128, (9, 0)), (FP16, 64, (8, 0)), (BF16, 256, (8, 6)),
                                                (BF16, None, (9, 0))])
def test_cuda_half_precision_on_sm80_plus_picks_torch_flash(requested, dtype, head_dim, cap):
    choice = choose_backend("cuda", dtype, head_dim, cap, requested)
    assert choice.name == "torch_flash" and not choice.fallback
    assert f"sm{cap[0]}{cap[1]}" in choice.reason


@pytest.mark.parametrize("dtype,head_dim,cap,why", [
    (FP32, 128, (9, 0), "dtype torch.float32 (torch flash needs fp16/bf16)"),
    (BF16, 320, (9, 0), "head dim 320 (torch flash needs <= 256 and a multiple of 8)"),
    (BF16, 100, (9, 0), "head dim 100 (torch flash needs <= 256 and a multiple of 8)"),
    (FP16, 64, (7, 5), "GPU sm75 (torch flash needs sm80+)"),
    (BF16, 64, None, "GPU capability unknown (torch flash needs sm80+)"),
])
def test_cases_torch_flash_cannot_serve_fall_back_to_mem_efficient_and_say_why(dtype, head_dim, cap, why):
    choice = choose_backend("cuda", dtype, head_dim, cap, "auto")
    assert choice == ("cuda_efficient", f"torch flash cannot serve {why}; using mem-efficient SDPA", True)


def test_fp64_on_cuda_falls_back_to_the_math_kernel():
    choice = choose_backend("cuda", FP64, 64, (9, 0), "torch")
    assert choice.name == "math" and choice.fallback
    assert "dtype torch.float64" in choice.reason and "mem-efficient SDPA has no torch.float64" in choice.reason


@pytest.mark.parametrize("dtype", [FP32, BF16, FP64])
def test_cpu_always_runs_the_cpu_flash_op(dtype):
    for requested in ("auto", "torch"):
        assert choose_backend(torch.device("cpu"), dtype, 64, None, requested) == (
            "cpu_flash", "CPU: torch's CPU flash-attention op", False)


def test_other_devices_get_the_math_kernel():
    assert choose_backend("mps", FP32, 64, None, "auto").name == "math"


def test_auto_prefers_torch_flash_even_when_ring_flash_attn_is_installed():
    assert choose_backend("cuda", BF16, 128, (9, 0), "auto", **FLASH_OK).name == "torch_flash"
    assert choose_backend("cuda", BF16, 128, (9, 0), "flash", **FLASH_OK).name == "flash"


def test_forced_flash_that_cannot_run_fails_with_one_line_naming_why():
    with pytest.raises(RingConfigError, match=r"^backend='flash' needs CUDA tensors, got device 'cpu'; use backend='torch' or 'auto'$"):
        choose_backend("cpu", BF16, 64, None, "flash")
    missing = dict(flash_check=lambda device: "backend='flash' needs flash_attn (pip install 'v2pe[gpu]')")
    with pytest.raises(RingConfigError, match=r"needs flash_attn \(pip install 'v2pe\[gpu\]'\); use backend="):
        choose_backend("cuda", BF16, 64, (9, 0), "flash", **missing)
    with pytest.raises(RingConfigError, match=r"supports \(torch.bfloat16,\) only \(got torch.float16\); fp16 breaks"):
        choose_backend("cuda", FP16, 64, (9, 0), "flash", **FLASH_OK)


def test_an_unknown_backend_is_rejected():
    with pytest.raises(RingConfigError, match=r"backend must be one of \('auto', 'torch', 'flash'\), got 'cuda'"):
        choose_backend("cuda", BF16, 64, (9, 0), "cuda")


def test_each_choice_is_logged_once_and_fallbacks_as_warnings(monkeypatch, caplog):
    monkeypatch.setattr(select, "_LOGGED", set())
    fast = choose_backend("cuda", BF16, 128, (9, 0), "auto")
    slow = choose_backend("cuda", BF16, 128, (7, 5), "auto")
    with caplog.at_level(logging.INFO, logger=select.__name__):
        for choice in (fast, fast, slow, slow, fast):
            log_choice_once(choice)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "attention kernels: torch flash (CUDA torch.bfloat16, sm90: torch's flash kernels)"),
        (logging.WARNING, "attention kernels: torch mem-efficient (torch flash cannot serve GPU sm75 "
                          "(torch flash needs sm80+); using mem-efficient SDPA)"),
    ]


def test_get_kernel_follows_the_selection():
    assert isinstance(get_kernel(torch.device("cuda"), BF16, head_dim=128, capability=(9, 0)), TorchFlashKernel)
    assert get_kernel(torch.device("cuda"), BF16, head_dim=512, capability=(9, 0)).name == "cuda_efficient"
    assert get_kernel(torch.device("cpu"), BF16).name == "cpu_flash"


def test_the_attention_summary_names_the_selected_kernels(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    cfg = TrainConfig(ring_backend="auto")
    assert attention_summary(cfg, 2, True, cpu) == "ring torch kernels (cp=2, zigzag)"
    monkeypatch.setattr(select, "device_capability", lambda device: (9, 0))
    assert attention_summary(cfg, 2, True, cuda) == "ring torch flash kernels (cp=2, zigzag)"
    assert attention_summary(cfg, 1, True, cuda) == "ring torch varlen_attn kernels (cp=1, varlen, one rank)"
    assert attention_summary(TrainConfig(ring_backend="auto", precision="fp32"), 2, True, cuda) == (
        "ring torch mem-efficient kernels (cp=2, zigzag; torch flash cannot serve dtype torch.float32 "
        "(torch flash needs fp16/bf16); using mem-efficient SDPA)")
    monkeypatch.setattr(select, "device_capability", lambda device: (7, 0))
    assert "torch flash cannot serve GPU sm70" in attention_summary(cfg, 2, True, cuda)


# -- torch flash wiring, with aten's flash ops replaced by fakes that check the documented varlen contract --------


def _segments(cu):
    cu = cu.tolist()
    return list(zip(cu[:-1], cu[1:]))


def _fake_flash_forward(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p, is_causal, return_debug_mask, *, scale=None):
    assert cu_q.dtype == cu_k.dtype == torch.int32 and dropout_p == 0.0 and not return_debug_mask
    assert q.stride(-1) == k.stride(-1) == v.stride(-1) == 1
    out, lse = torch.empty_like(q), torch.empty(q.shape[1], q.shape[0])  # lse (H, total_q), fp32
    for (qa, qb), (ka, kb) in zip(_segments(cu_q), _segments(cu_k)):
        assert qb - qa <= max_q and kb - ka <= max_k
        assert not is_causal or qb - qa == kb - ka  # bottom-right == top-left only on square blocks
        o, l = MathKernel().forward(q[qa:qb], k[ka:kb], v[ka:kb], is_causal, scale)
        out[qa:qb], lse[:, qa:qb] = o, l.t()
    return out, lse, torch.zeros(2, dtype=torch.uint64), torch.empty(0), torch.empty(0)


def _fake_flash_backward(dout, q, k, v, out, lse, cu_q, cu_k, max_q, max_k, dropout_p, is_causal, rng_state,
                         unused, *, scale=None):
    assert lse.shape == (q.shape[1], q.shape[0]) and lse.dtype == torch.float32 and lse.is_contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    for (qa, qb), (ka, kb) in zip(_segments(cu_q), _segments(cu_k)):
        g = MathKernel().backward(dout[qa:qb], q[qa:qb], k[ka:kb], v[ka:kb], out[qa:qb], lse[:, qa:qb].t(),
                                  is_causal, scale)
        dq[qa:qb], dk[ka:kb], dv[ka:kb] = g
    return dq, dk, dv


@pytest.fixture
def fake_flash_ops(monkeypatch):
    monkeypatch.setattr(torch.ops.aten, "_flash_attention_forward", _fake_flash_forward)
    monkeypatch.setattr(torch.ops.aten, "_flash_attention_backward", _fake_flash_backward)


@pytest.mark.parametrize("causal,sq,sk", [(True, 24, 24), (False, 10, 31)])
def test_torch_flash_block_kernel_keeps_the_block_kernel_layout(fake_flash_ops, causal, sq, sk):
    """out (S, H, D), lse (S, H) in, (H, S) to aten; rectangular non-causal blocks; GQA kv not expanded."""
    g = torch.Generator().manual_seed(0)
    q, dout = torch.randn(sq, 4, 8, generator=g), torch.randn(sq, 4, 8, generator=g)
    k, v = torch.randn(sk, 2, 8, generator=g), torch.randn(sk, 2, 8, generator=g)
    out, lse = TorchFlashKernel().forward(q, k, v, causal, 0.35)
    ref_out, ref_lse = MathKernel().forward(q, k, v, causal, 0.35)
    assert out.shape == (sq, 4, 8) and lse.shape == (sq, 4)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(lse, ref_lse)
    for got, ref in zip(TorchFlashKernel().backward(dout, q, k, v, out, lse, causal, 0.35),
                        MathKernel().backward(dout, q, k, v, ref_out, ref_lse, causal, 0.35)):
        torch.testing.assert_close(got, ref)


def test_one_rank_on_torch_flash_calls_varlen_attn_causal_with_the_packed_cu_seqlens(monkeypatch):
    calls = []

    def fake_varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, *, scale, window_size, enable_gqa):
        calls.append((cu_q.tolist(), cu_k.dtype, max_q, max_k, window_size, enable_gqa, scale))
        return varlen_causal_attention(q, k, v, cu_q.tolist(), scale)

    monkeypatch.setattr(torch_varlen, "varlen_attn", fake_varlen_attn)
    monkeypatch.setattr(api, "select_kernels", lambda backend, q: select.BackendChoice("torch_flash", "test"))
    g = torch.Generator().manual_seed(1)
    cu = [0, 5, 17, 20]
    q, k, v = torch.randn(20, 4, 8, generator=g), torch.randn(20, 2, 8, generator=g), torch.randn(20, 2, 8, generator=g)
    out = ring_attention(q, k, v, cu)
    assert calls == [([0, 5, 17, 20], torch.int32, 12, 12, (-1, 0), True, 8 ** -0.5)]
    torch.testing.assert_close(out, varlen_causal_attention(q, k, v, cu))


def test_the_ring_runs_the_selected_block_kernel(fake_flash_ops):
    """With one rank but several samples forced through the ring, torch flash blocks give the reference result."""
    from v2pe_train.ring.torch_ring import zigzag_ring_attention_torch

    g = torch.Generator().manual_seed(2)
    cu = [0, 6, 20, 26]
    q, dout = torch.randn(26, 4, 8, generator=g), torch.randn(26, 4, 8, generator=g)
    k, v = torch.randn(26, 2, 8, generator=g), torch.randn(26, 2, 8, generator=g)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out = zigzag_ring_attention_torch(*leaves, cu, kernel="torch_flash")
    out.backward(dout)
    refs = [x.clone().requires_grad_() for x in (q, k, v)]
    ref = varlen_causal_attention(*refs, cu)
    ref.backward(dout)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(leaves, refs):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)
