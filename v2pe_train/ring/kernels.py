"""Block attention kernels that return the log-sum-exp, plus their backward.

A ring step attends a block of local queries to a block of (received) keys.
The merge across steps needs each block's LSE, and the backward recomputes a
block's gradients from the GLOBAL (merged) out and lse.  Every kernel here has

    forward(q, k, v, causal, scale)                    -> out (S, H, D), lse (S, H)
    backward(dout, q, k, v, out, lse, causal, scale)   -> dq (S, H, D), dk, dv (Sk, H_kv, D)

in token-major layout: q/out/dout `(S, H, D)`, k/v `(Sk, H_kv, D)` (strided
views are fine as long as the last dim is contiguous), lse `(S, H)`.  H must be
a multiple of H_kv (grouped-query attention: query head h uses kv head
h // (H // H_kv)).  `causal=True` is only used on square blocks (top-left
aligned: query i sees keys 0..i).  `out`/`lse` may be returned as views.

* `CpuFlashKernel`: `aten._scaled_dot_product_flash_attention_for_cpu` and its
  backward (tiled, O(S) memory, GQA native, fp32 LSE even for bf16 inputs).
* `CudaEfficientKernel`: `aten._scaled_dot_product_efficient_attention` (the
  memory-efficient CUTLASS kernel: fp32/fp16/bf16, O(S) memory, returns an LSE
  padded to a multiple of 32 queries).  No GQA: k/v heads are expanded for the
  block computation only (never for communication) and dk/dv summed back.
* `TorchFlashKernel`: `aten._flash_attention_forward` / `_backward` (torch's
  own FlashAttention-2, CUDA fp16/bf16, sm80+, head dim <= 256): varlen ops
  called with one sequence per block, q and k given their own cu_seqlens, so
  rectangular off-diagonal blocks need no padding; GQA native; LSE fp32
  `(H, S)`.  Causal is bottom-right aligned there, which equals top-left on
  the square diagonal blocks, the only ones we run causal.
* `MathKernel`: explicit matmul/softmax, tiled over queries; any device and
  dtype (fp64 too).  The portable fallback and a readable reference.
"""

from __future__ import annotations

import math

import torch

__all__ = ["BlockKernel", "CpuFlashKernel", "CudaEfficientKernel", "MathKernel", "TorchFlashKernel", "accum_dtype", "get_kernel"]


def accum_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype for merges and gradient sums: fp64 stays fp64, else fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _bhsd(x: torch.Tensor) -> torch.Tensor:
    """(S, H, D) -> (1, H, S, D) view."""
    return x.permute(1, 0, 2).unsqueeze(0)


def _shd(x: torch.Tensor) -> torch.Tensor:
    """(1, H, S, D) -> (S, H, D) view."""
    return x[0].permute(1, 0, 2)


class BlockKernel:
    name = "abstract"

    def forward(self, q, k, v, causal: bool, scale: float):  # pragma: no cover - interface
        raise NotImplementedError

    def backward(self, dout, q, k, v, out, lse, causal: bool, scale: float):  # pragma: no cover
        raise NotImplementedError


class CpuFlashKernel(BlockKernel):
    name = "cpu_flash"

    def forward(self, q, k, v, causal, scale):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            _bhsd(q), _bhsd(k), _bhsd(v), 0.0, causal, scale=scale
        )
        return _shd(out), lse[0].t()

    def backward(self, dout, q, k, v, out, lse, causal, scale):
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            _bhsd(dout), _bhsd(q), _bhsd(k), _bhsd(v), _bhsd(out), lse.t().unsqueeze(0), 0.0, causal, scale=scale
        )
        return _shd(dq), _shd(dk), _shd(dv)


def _expand_kv(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(S, H_kv, D) -> (S, H, D), repeating each kv head H // H_kv times."""
    s, h_kv, d = x.shape
    if h_kv == heads:
        return x
    return x.unsqueeze(2).expand(s, h_kv, heads // h_kv, d).reshape(s, heads, d)


def _reduce_kv(x: torch.Tensor, h_kv: int) -> torch.Tensor:
    """(S, H, D) gradient of expanded kv -> (S, H_kv, D)."""
    s, h, d = x.shape
    if h == h_kv:
        return x
    return x.reshape(s, h_kv, h // h_kv, d).sum(2)


class CudaEfficientKernel(BlockKernel):
    name = "cuda_efficient"
    LSE_ALIGN = 32  # the kernel pads its LSE along queries to this multiple

    def forward(self, q, k, v, causal, scale):
        heads = q.shape[1]
        out, lse, _, _ = torch.ops.aten._scaled_dot_product_efficient_attention(
            _bhsd(q), _bhsd(_expand_kv(k, heads)), _bhsd(_expand_kv(v, heads)), None, True, 0.0, causal, scale=scale
        )
        return _shd(out), lse[0, :, : q.shape[0]].t()

    def backward(self, dout, q, k, v, out, lse, causal, scale):
        s, heads, _ = q.shape
        h_kv = k.shape[1]
        padded = -(-s // self.LSE_ALIGN) * self.LSE_ALIGN
        lse_pad = torch.zeros((1, heads, padded), dtype=torch.float32, device=q.device)
        lse_pad[0, :, :s] = lse.t()
        zero = torch.zeros((), dtype=torch.int64, device=q.device)
        dq, dk, dv, _ = torch.ops.aten._scaled_dot_product_efficient_attention_backward(
            _bhsd(dout),
            _bhsd(q),
            _bhsd(_expand_kv(k, heads)),
            _bhsd(_expand_kv(v, heads)),
            None,
            _bhsd(out),
            lse_pad,
            zero,
            zero,
            0.0,
            [True, True, True, False],
            causal,
            scale=scale,
        )
        return _shd(dq), _reduce_kv(_shd(dk), h_kv), _reduce_kv(_shd(dv), h_kv)


def _cu(n: int, device) -> torch.Tensor:
    return torch.tensor([0, n], dtype=torch.int32, device=device)


class TorchFlashKernel(BlockKernel):
    name = "torch_flash"

    def forward(self, q, k, v, causal, scale):
        sq, sk = q.shape[0], k.shape[0]
        out, lse, _, _, _ = torch.ops.aten._flash_attention_forward(
            q, k, v, _cu(sq, q.device), _cu(sk, q.device), sq, sk, 0.0, causal, False, scale=scale
        )
        return out, lse.t()

    def backward(self, dout, q, k, v, out, lse, causal, scale):
        sq, sk = q.shape[0], k.shape[0]
        # dropout is 0, so the philox state is never read; torch's varlen_attn passes zeros too
        rng_state = torch.zeros((2,), dtype=torch.uint64, device=q.device)
        unused = torch.empty(0, device=q.device)
        dq, dk, dv = torch.ops.aten._flash_attention_backward(
            dout.contiguous(), q.contiguous(), k.contiguous(), v.contiguous(), out.contiguous(),
            lse.t().contiguous(), _cu(sq, q.device), _cu(sk, q.device), sq, sk, 0.0, causal, rng_state, unused,
            scale=scale,
        )
        return dq, dk, dv


class MathKernel(BlockKernel):
    """Explicit softmax attention, computed in the accumulation dtype, tiled over queries."""

    name = "math"

    def __init__(self, max_tile_elems: int = 1 << 26):
        self.max_tile_elems = max_tile_elems

    def _tile(self, heads: int, sk: int) -> int:
        return max(16, self.max_tile_elems // max(1, heads * sk))

    @staticmethod
    def _scores(qt, kf, scale, causal, t0):
        # qt (n, H_kv, g, D), kf (Sk, H_kv, D) -> (H_kv, g, n, Sk)
        s = torch.einsum("nhgd,khd->hgnk", qt, kf) * scale
        if causal:
            n, sk = qt.shape[0], kf.shape[0]
            rows = torch.arange(t0, t0 + n, device=qt.device)[:, None]
            cols = torch.arange(sk, device=qt.device)[None, :]
            s.masked_fill_(cols > rows, -math.inf)
        return s

    def forward(self, q, k, v, causal, scale):
        s_q, heads, d = q.shape
        h_kv = k.shape[1]
        g = heads // h_kv
        acc = accum_dtype(q.dtype)
        kf, vf = k.to(acc), v.to(acc)
        out = torch.empty((s_q, heads, d), dtype=acc, device=q.device)
        lse = torch.empty((s_q, heads), dtype=acc, device=q.device)
        tile = self._tile(heads, k.shape[0])
        for t0 in range(0, s_q, tile):
            t1 = min(s_q, t0 + tile)
            qt = q[t0:t1].to(acc).reshape(t1 - t0, h_kv, g, d)
            s = self._scores(qt, kf, scale, causal, t0)
            l = torch.logsumexp(s, dim=-1)
            p = torch.exp(s - l.unsqueeze(-1))
            out[t0:t1] = torch.einsum("hgnk,khd->nhgd", p, vf).reshape(t1 - t0, heads, d)
            lse[t0:t1] = l.permute(2, 0, 1).reshape(t1 - t0, heads)
        return out, lse

    def backward(self, dout, q, k, v, out, lse, causal, scale):
        s_q, heads, d = q.shape
        h_kv = k.shape[1]
        g = heads // h_kv
        acc = accum_dtype(q.dtype)
        kf, vf = k.to(acc), v.to(acc)
        dq = torch.empty((s_q, heads, d), dtype=acc, device=q.device)
        dk = torch.zeros(kf.shape, dtype=acc, device=q.device)
        dv = torch.zeros(vf.shape, dtype=acc, device=q.device)
        tile = self._tile(heads, k.shape[0])
        for t0 in range(0, s_q, tile):
            t1 = min(s_q, t0 + tile)
            n = t1 - t0
            qt = q[t0:t1].to(acc).reshape(n, h_kv, g, d)
            dot = dout[t0:t1].to(acc).reshape(n, h_kv, g, d)
            ot = out[t0:t1].to(acc).reshape(n, h_kv, g, d)
            lt = lse[t0:t1].to(acc).reshape(n, h_kv, g).permute(1, 2, 0)
            p = torch.exp(self._scores(qt, kf, scale, causal, t0) - lt.unsqueeze(-1))
            dv += torch.einsum("hgnk,nhgd->khd", p, dot)
            dp = torch.einsum("nhgd,khd->hgnk", dot, vf)
            delta = (dot * ot).sum(-1).permute(1, 2, 0)  # (H_kv, g, n)
            ds = p * (dp - delta.unsqueeze(-1)) * scale
            dq[t0:t1] = torch.einsum("hgnk,khd->nhgd", ds, kf).reshape(n, heads, d)
            dk += torch.einsum("hgnk,nhgd->khd", ds, qt)
        return dq, dk, dv


_KERNELS = {"cpu_flash": CpuFlashKernel, "cuda_efficient": CudaEfficientKernel, "math": MathKernel,
            "torch_flash": TorchFlashKernel}


def get_kernel(device: torch.device, dtype: torch.dtype, name: str | None = None, *, head_dim: int | None = None,
               capability: tuple[int, int] | None = None) -> BlockKernel:
    """The block kernel called `name`, or the one `select.choose_backend` picks for this case.

    Without `capability` a CUDA device is not assumed to be sm80+ (no torch flash).
    """
    if name is None:
        from .select import choose_backend

        name = choose_backend(device, dtype, head_dim, capability, "torch").name
    if name not in _KERNELS:
        raise ValueError(f"unknown block kernel {name!r}; choose one of {sorted(_KERNELS)}")
    return _KERNELS[name]()
