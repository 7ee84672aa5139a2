"""Per-rank peak memory of ring attention forward+backward on CPU: cp=2 vs cp=1.

    python bench/bench_ring_memory.py [--tokens 16384] [--heads 4] [--kv-heads 2] [--dim 32] [--json out.json]

What is measured (honestly, and what it leaves out)
---------------------------------------------------
Each configuration runs in fresh processes (cp=1: one process, world group of
one; cp=2: two gloo processes), one intra-op thread each.  Per process:

1. after imports and process-group setup, reset the kernel's RSS high-water
   mark (`echo 5 > /proc/self/clear_refs`, Linux >= 4.0) and read the RSS;
2. create this rank's q, k, v (its zigzag shard of one long sample) and the
   upstream gradient, run `ring_attention` forward + backward (torch backend);
3. peak = VmHWM - RSS at step 1.

So the number is the process's peak resident-memory growth for the attention
call INCLUDING its inputs, output, gradients and every transient (merge
buffers, K/V receive buffers, travelling dk/dv accumulators, gloo's own
buffers).  It excludes the ~200+ MB of torch libraries, identical for both
configurations, which would only dilute the ratio.  RSS is page-granular and
counts allocator caching, so small configurations are noisy; use >= 16K tokens.
The workers run with MALLOC_MMAP_THRESHOLD_=65536 (glibc maps every
tensor-sized block and unmaps it on free, so RSS follows live tensor bytes),
and warm up with the same call pattern first (the first `backward(gradient)`
of a process costs ~30 MiB of one-off resident memory).
If clear_refs is not writable, it falls back to ru_maxrss (which then also
includes the import-time peak) and says so.

Two workloads (`--layers`, default both):
* 1: one attention call with leaf q/k/v.  Per-rank tensors halve, but a ring
  rank also holds a received K/V block, a travelling fp32 dk/dv accumulator
  and its receive buffer, and the block kernel's gradient outputs, all of
  which scale with T_local too: about +50% of the call's own tensors, so the
  ratio of the attention op alone stays near 0.7.
* N > 1: a stack of N attention layers (layer i+1 attends over layer i's
  output), i.e. what a model keeps for backward.  Saved activations add up over
  layers and halve with cp=2, while the ring buffers are transient inside one
  layer at a time, so the ratio approaches 1/2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import sys
import time

import torch
import torch.multiprocessing as mp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _rss_kib() -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", open("/proc/self/status").read()).group(1))


def _hwm_kib() -> int:
    return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1))


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _worker(rank, world, port, args, results):
    try:
        import torch.distributed as dist

        from v2pe_train.ring import ring_attention, zigzag_shard

        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        cu = [0, args.tokens]
        t_local = args.tokens // world
        # warm-up with the same call pattern: the first `backward(gradient)` pays ~30 MiB of
        # one-off resident memory (lazy imports inside torch.autograd), not charged to the run
        for n in (8 * world, 256 * world, 1024 * world):
            w = [torch.randn(n, h, args.dim) for h in (args.heads, args.kv_heads, args.kv_heads)]
            wl = [zigzag_shard(x, [0, n], rank, world).requires_grad_() for x in w]
            out = ring_attention(*wl, [0, n], backend="torch")
            out.backward(torch.ones_like(out))
        del w, wl, out
        dist.barrier()

        exact = _reset_hwm()
        base = _rss_kib()
        g = torch.Generator().manual_seed(rank)
        t0 = time.perf_counter()
        if args.layers == 1:  # one attention call; its inputs are leaves
            q = torch.randn(t_local, args.heads, args.dim, generator=g, requires_grad=True)
            k = torch.randn(t_local, args.kv_heads, args.dim, generator=g, requires_grad=True)
            v = torch.randn(t_local, args.kv_heads, args.dim, generator=g, requires_grad=True)
            dout = torch.randn(t_local, args.heads, args.dim, generator=g)
            out = ring_attention(q, k, v, cu, backend="torch")
            out.backward(dout)
            io = (q, k, v, dout, out, q.grad, k.grad, v.grad)
        else:  # a stack: layer i+1 attends over layer i's output (q = h, k/v = scaled head slices)
            x = torch.randn(t_local, args.heads, args.dim, generator=g, requires_grad=True)
            h = x
            for _ in range(args.layers):
                k = h[:, : args.kv_heads] * 0.5
                v = h[:, args.kv_heads : 2 * args.kv_heads] * 0.5
                h = ring_attention(h, k, v, cu, backend="torch")
            dout = torch.randn(t_local, args.heads, args.dim, generator=g)
            h.backward(dout)
            io = (x, x.grad, dout, h)
        dt = time.perf_counter() - t0
        peak = (_hwm_kib() if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) - base
        tensor_bytes = sum(x.numel() * x.element_size() for x in io)
        dist.barrier()
        dist.destroy_process_group()
        results.put((rank, dict(peak_mib=peak / 1024, io_tensors_mib=tensor_bytes / 2**20, seconds=dt, exact=exact)))
    except BaseException:
        import traceback

        results.put((rank, dict(error=traceback.format_exc())))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(world: int, args) -> list[dict]:
    # a fixed mmap threshold makes glibc map every tensor-sized block and unmap it on free,
    # so RSS follows live tensor bytes (the default dynamic threshold keeps freed blocks resident)
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, args, results)) for r in range(world)]
    for p in procs:
        p.start()
    out = {}
    try:
        for _ in range(world):
            rank, res = results.get(timeout=args.timeout)
            if "error" in res:
                raise RuntimeError(f"cp={world} rank {rank} failed:\n{res['error']}")
            out[rank] = res
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    return [out[r] for r in range(world)]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=16384, help="length of the one sample (multiple of 4)")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--layers", default="1,4", help="comma list: 1 = one attention call; N > 1 = a stack of N")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args(argv)
    if args.tokens % 4:
        ap.error("--tokens must be a multiple of 4 (2 * cp for cp=2)")
    if 2 * args.kv_heads > args.heads:
        ap.error("--kv-heads must be at most heads / 2 (the stacked mode slices k and v from h)")
    print(f"ring attention fwd+bwd, one sample of {args.tokens} tokens, H={args.heads} H_kv={args.kv_heads} "
          f"D={args.dim}, fp32, CPU, torch backend, 1 thread per rank")
    res = dict(tokens=args.tokens, heads=args.heads, kv_heads=args.kv_heads, dim=args.dim, dtype="float32", runs=[])
    for layers in (int(x) for x in args.layers.split(",")):
        args.layers = layers
        cp1, cp2 = run(1, args), run(2, args)
        peak1, peak2 = cp1[0]["peak_mib"], max(r["peak_mib"] for r in cp2)
        method = "VmHWM after clear_refs minus RSS before inputs" if all(r["exact"] for r in cp1 + cp2) else "ru_maxrss (import peak included)"
        res["runs"].append(dict(layers=layers, method=method, cp1=cp1, cp2=cp2, ratio=peak2 / peak1))
        what = "one attention call" if layers == 1 else f"a stack of {layers} attention layers"
        print(f"{what}  [{method}]")
        print(f"  cp=1       : peak {peak1:7.1f} MiB (live io tensors at end {cp1[0]['io_tensors_mib']:.1f} MiB), {cp1[0]['seconds']:.1f} s")
        for r, x in enumerate(cp2):
            print(f"  cp=2 rank {r}: peak {x['peak_mib']:7.1f} MiB (live io tensors at end {x['io_tensors_mib']:.1f} MiB), {x['seconds']:.1f} s")
        print(f"  per-rank peak ratio cp=2 / cp=1: {peak2 / peak1:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
