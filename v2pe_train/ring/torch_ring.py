"""Pure-PyTorch zigzag ring attention (causal, varlen, GQA) as an autograd.Function.

Layout: see `zigzag.py`.  Rank r holds, for every packed sample, the chunks r
and 2W-1-r; its local buffer for sample i is `[a_i, b_i)` with the two halves
`[a_i, m_i)` (chunk r) and `[m_i, b_i)` (chunk 2W-1-r).  Every rank has the
same local cu_seqlens, so a received K/V buffer has the same layout.

Forward, step s = 0..W-1, holding the K/V of rank src = (r - s) mod W:
  * s = 0: causal attention of the local pair with itself;
  * src < r: all local queries vs the FIRST half (chunk src) of the received K/V;
  * src > r: the SECOND half of the local queries (chunk 2W-1-r) vs all of it.
The rules apply per sample (block-diagonal); we loop over the samples of the
local buffer.  Each block returns (out, lse); blocks are merged in fp32 (fp64
for fp64 inputs) with `update_out_and_lse`.  The next K/V is received while
the current block is computed.

Backward: a second ring pass rotates K/V again and recomputes each block's
gradients from the saved GLOBAL out and lse (exact: the softmax of a block
computed with the global lse is the block's slice of the global softmax).  dq
accumulates locally; the dk/dv accumulator of a K/V buffer travels with it and
is sent one last hop back to its owner (accumulated and sent in fp32/fp64).

Communication: W-1 K/V hops (input dtype) in forward; W-1 K/V hops plus W
dk/dv hops (accumulation dtype) in backward.  K/V are never head-repeated.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from .comm import RingComm, group_rank_world
from .kernels import BlockKernel, accum_dtype, get_kernel
from .merge import update_out_and_lse

__all__ = ["zigzag_ring_attention_torch", "local_segments"]

Segments = tuple[tuple[int, int, int], ...]


def local_segments(cu_seqlens: Sequence[int], world: int) -> Segments:
    """(start, mid, end) of every sample in the local buffer, from GLOBAL cu_seqlens."""
    segs = []
    for i in range(len(cu_seqlens) - 1):
        a, b = int(cu_seqlens[i]) // world, int(cu_seqlens[i + 1]) // world
        segs.append((a, (a + b) // 2, b))
    return tuple(segs)


def _step_blocks(step: int, src: int, rank: int, segs: Segments):
    """Yield (q rows slice, kv rows slice, causal) for this step, per sample."""
    for a, m, b in segs:
        if step == 0:
            yield slice(a, b), slice(a, b), True
        elif src < rank:
            yield slice(a, b), slice(a, m), False
        else:
            yield slice(m, b), slice(a, b), False


def _ring_forward(q, k, v, segs: Segments, scale: float, group, kernel: BlockKernel):
    comm = RingComm(group, tag_base=0)
    rank, world = comm.rank, comm.world
    acc = accum_dtype(q.dtype)
    # step 0 covers every local row exactly once: with one sample its block IS the initial out/lse
    out = lse = None
    if len(segs) > 1:
        out = torch.empty(q.shape, dtype=acc, device=q.device)
        lse = torch.empty(q.shape[:2], dtype=acc, device=q.device)
    cur_k, cur_v = k, v
    for step in range(world):
        if step + 1 < world:
            next_k = comm.send_recv(cur_k)
            next_v = comm.send_recv(cur_v)
            comm.commit()
        src = (rank - step) % world
        for rows, keys, causal in _step_blocks(step, src, rank, segs):
            block_out, block_lse = kernel.forward(q[rows], cur_k[keys], cur_v[keys], causal, scale)
            if step == 0 and out is None:
                out, lse = block_out.to(acc).contiguous(), block_lse.to(acc).contiguous()
            elif step == 0:
                out[rows] = block_out
                lse[rows] = block_lse
            else:
                update_out_and_lse(out[rows], lse[rows], block_out, block_lse)
            del block_out, block_lse
        if step + 1 < world:
            comm.wait()
            cur_k, cur_v = next_k, next_v
            del next_k, next_v
    return out, lse


def _ring_backward(dout, q, k, v, out, lse, segs: Segments, scale: float, group, kernel: BlockKernel):
    kv_comm = RingComm(group, tag_base=0)
    dkv_comm = RingComm(group, tag_base=16)
    rank, world = kv_comm.rank, kv_comm.world
    if world == 1 and len(segs) == 1:
        return kernel.backward(dout, q, k, v, out, lse, True, scale)
    acc = accum_dtype(q.dtype)
    # step 0 covers every local row and key exactly once: it initialises dq and dk/dv
    if len(segs) == 1:
        dq = dk_acc = dv_acc = None
    else:
        dq = torch.empty(q.shape, dtype=acc, device=q.device)
        dk_acc = torch.empty(k.shape, dtype=acc, device=k.device)
        dv_acc = torch.empty(v.shape, dtype=acc, device=v.device)
    cur_k, cur_v = k, v
    recv_dk = recv_dv = None
    for step in range(world):
        if step + 1 < world:
            next_k = kv_comm.send_recv(cur_k)
            next_v = kv_comm.send_recv(cur_v)
            kv_comm.commit()
        if step > 0:
            # the accumulator of the K/V we now hold, with the upstream ranks' shares
            dkv_comm.wait()
            dk_acc, dv_acc = recv_dk, recv_dv
        src = (rank - step) % world
        for rows, keys, causal in _step_blocks(step, src, rank, segs):
            bdq, bdk, bdv = kernel.backward(
                dout[rows], q[rows], cur_k[keys], cur_v[keys], out[rows], lse[rows], causal, scale
            )
            if step == 0 and dq is None:
                dq, dk_acc, dv_acc = (x.to(acc).contiguous() for x in (bdq, bdk, bdv))
            elif step == 0:
                dq[rows], dk_acc[keys], dv_acc[keys] = bdq, bdk, bdv
            else:
                dq[rows] += bdq
                dk_acc[keys] += bdk
                dv_acc[keys] += bdv
            del bdq, bdk, bdv
        if step + 1 == world:
            cur_k = cur_v = None  # free the received K/V before the last dk/dv buffers arrive
        if world > 1:
            recv_dk = dkv_comm.send_recv(dk_acc)
            recv_dv = dkv_comm.send_recv(dv_acc)
            dkv_comm.commit()
            dk_acc = dv_acc = None  # in flight; released by wait()
        if step + 1 < world:
            kv_comm.wait()
            cur_k, cur_v = next_k, next_v
            del next_k, next_v
    if world > 1:
        dkv_comm.wait()  # our own K/V's gradient, back from its last hop
        dk_acc, dv_acc = recv_dk, recv_dv
    return dq, dk_acc, dv_acc


class _ZigzagRingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, segs, scale, group, kernel_name):
        kernel = get_kernel(q.device, q.dtype, kernel_name)
        k = k.contiguous()
        v = v.contiguous()
        out_acc, lse = _ring_forward(q, k, v, segs, scale, group, kernel)
        out = out_acc.to(q.dtype)
        del out_acc
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.segs, ctx.scale, ctx.group, ctx.kernel = segs, scale, group, kernel
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _ring_backward(
            dout.contiguous(), q, k, v, out, lse, ctx.segs, ctx.scale, ctx.group, ctx.kernel
        )
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None


def zigzag_ring_attention_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: Sequence[int],
    *,
    group: dist.ProcessGroup | None = None,
    scale: float | None = None,
    kernel: str | None = None,
) -> torch.Tensor:
    """Torch-backend zigzag ring attention; prefer `ring_attention` (validates inputs).

    q `(T_local, H, D)`, k/v `(T_local, H_kv, D)`, `cu_seqlens` GLOBAL (python
    ints or a tensor).  `kernel` forces a block kernel ("torch_flash",
    "cpu_flash", "cuda_efficient", "math"); default: `select.choose_backend`
    without a known GPU capability (`ring_attention` passes the chosen one).
    """
    _, world = group_rank_world(group)
    if isinstance(cu_seqlens, torch.Tensor):
        cu_seqlens = cu_seqlens.tolist()
    if scale is None:
        scale = q.shape[-1] ** -0.5
    segs = local_segments(cu_seqlens, world)
    return _ZigzagRingAttention.apply(q, k, v, segs, float(scale), group, kernel)
