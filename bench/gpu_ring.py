"""Ring-attention checks and throughput on ONE GPU (world size 1); self-contained.

    python bench/gpu_ring.py --out gpu_ring.json                # on an H200 (or any sm80+ GPU)
    torchrun --nproc_per_node 1 bench/gpu_ring.py --out gpu_ring.json
    python bench/gpu_ring.py --smoke --out smoke.json           # tiny sizes; runs on CPU too

What it does
1. correctness (a): on the same bf16 varlen inputs, the flash backend
   (ring-flash-attn / flash-attn) vs the torch backend, and fp32 torch vs bf16
   flash: max |diff| of out, dq, dk, dv; both backends vs an fp64 reference;
   the torch backend's CUDA block kernel (memory-efficient SDPA) vs the explicit
   math kernel in fp64, causal / non-causal, GQA, ragged blocks.
2. throughput (b): causal attention forward+backward, one sample of 32K and
   128K tokens, H=16, H_kv=8, D=128, bf16, each backend: ms, tokens/s,
   TFLOP/s (7 * S^2 * H * D flops: fwd 2 S^2 H D for causal, bwd 2.5x) and the
   peak CUDA memory.
3. prints a compact table and writes JSON to --out (rewritten after every item,
   so a partial run leaves partial results).

Degrades gracefully: anything that cannot run (no CUDA, no flash-attn, OOM, an
exception) is recorded as skipped with the reason; the rest still runs.  A
watchdog (`--max-seconds`) dumps stacks and exits instead of hanging.
With W = 1 there is no communication: this measures the per-rank kernels and
the ring code's varlen bookkeeping; the multi-rank logic is tested on CPU/gloo.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import platform
import socket
import sys
import time
import traceback
from datetime import timedelta

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from v2pe_train.ring import ring_attention  # noqa: E402
from v2pe_train.ring.flash import flash_unavailable_reason  # noqa: E402
from v2pe_train.ring.kernels import MathKernel, get_kernel  # noqa: E402
from v2pe_train.ring.reference import varlen_causal_attention  # noqa: E402


class Report:
    def __init__(self, path):
        self.path = path
        self.data = {"env": {}, "correctness": [], "throughput": [], "skipped": []}

    def add(self, section, item):
        self.data[section].append(item)
        self.flush()

    def skip(self, what, reason):
        print(f"  SKIP {what}: {reason}")
        self.add("skipped", {"what": what, "reason": reason})

    def flush(self):
        if self.path:
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.data, f, indent=2)
            os.replace(tmp, self.path)


def _init_group(device):
    """A world-size-1 process group (torchrun's env if present, else a private tcp store)."""
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        if int(os.environ["WORLD_SIZE"]) != 1:
            raise SystemExit("gpu_ring.py is a single-GPU script: run it with --nproc_per_node 1")
        dist.init_process_group(backend, timeout=timedelta(seconds=120))
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                                timeout=timedelta(seconds=120))
    return dist.group.WORLD


def _inputs(total, heads, kv_heads, dim, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    mk = lambda h: torch.randn(total, h, dim, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    return mk(heads), mk(kv_heads), mk(kv_heads), mk(heads)


def _fwd_bwd(q, k, v, dout, cu, group, backend):
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    out = ring_attention(q, k, v, cu, group=group, backend=backend)
    out.backward(dout)
    return [x.detach().float() for x in (out, q.grad, k.grad, v.grad)]


def _maxdiff(a, b):
    return {n: float((x - y).abs().max()) for n, x, y in zip(("out", "dq", "dk", "dv"), a, b)}


def correctness(rep, device, group, smoke, flash_reason):
    heads, kv_heads, dim = (4, 2, 32) if smoke else (16, 8, 128)
    cu = [0, 100, 512, 1024] if smoke else [0, 1000, 4096, 8192]
    total = cu[-1]
    q, k, v, dout = _inputs(total, heads, kv_heads, dim, torch.float64, device)

    # fp64 reference (SDPA math per sample)
    qr, kr, vr = (x.clone().requires_grad_() for x in (q, k, v))
    ref = varlen_causal_attention(qr, kr, vr, cu)
    ref.backward(dout)
    ref = [x.detach().float() for x in (ref, qr.grad, kr.grad, vr.grad)]

    results = {}
    for name, backend, dtype in (("torch_fp32", "torch", torch.float32), ("torch_bf16", "torch", torch.bfloat16),
                                 ("flash_bf16", "flash", torch.bfloat16)):
        if backend == "flash" and flash_reason:
            rep.skip(f"correctness {name}", flash_reason)
            continue
        try:
            results[name] = _fwd_bwd(*(x.to(dtype) for x in (q, k, v, dout)), cu, group, backend)
            item = {"check": f"{name} vs fp64 reference", "max_abs_diff": _maxdiff(results[name], ref)}
            rep.add("correctness", item)
            print(f"  {item['check']:<34} {item['max_abs_diff']}")
        except Exception as e:  # noqa: BLE001
            rep.skip(f"correctness {name}", f"{type(e).__name__}: {e}")
    for a, b in (("flash_bf16", "torch_bf16"), ("flash_bf16", "torch_fp32"), ("torch_bf16", "torch_fp32")):
        if a in results and b in results:
            item = {"check": f"{a} vs {b}", "max_abs_diff": _maxdiff(results[a], results[b])}
            rep.add("correctness", item)
            print(f"  {item['check']:<34} {item['max_abs_diff']}")

    # the torch backend's block kernel vs the explicit math kernel (fp64), incl. ragged non-causal blocks
    if device.type != "cuda":
        rep.skip("block kernel check", "no CUDA (the CPU kernel is covered by the CPU test suite)")
        return
    kern, math_k = get_kernel(device, torch.float32), MathKernel()
    for causal, sq, sk in ((True, 333, 333), (False, 200, 411), (False, 512, 96)):
        try:
            g = torch.Generator(device="cpu").manual_seed(sq + sk)
            qq = torch.randn(sq, heads, dim, generator=g, dtype=torch.float64).to(device)
            kk, vv = (torch.randn(sk, kv_heads, dim, generator=g, dtype=torch.float64).to(device) for _ in range(2))
            do = torch.randn(sq, heads, dim, generator=g, dtype=torch.float64).to(device)
            o_ref, l_ref = math_k.forward(qq, kk, vv, causal, dim**-0.5)
            g_ref = math_k.backward(do, qq, kk, vv, o_ref, l_ref, causal, dim**-0.5)
            f32 = lambda x: x.float()  # noqa: E731
            o, l = kern.forward(f32(qq), f32(kk), f32(vv), causal, dim**-0.5)
            grads = kern.backward(f32(do), f32(qq), f32(kk), f32(vv), f32(o_ref), f32(l_ref), causal, dim**-0.5)
            diff = {"out": float((o - o_ref).abs().max()), "lse": float((l - l_ref).abs().max())}
            diff.update({n: float((a - b).abs().max()) for n, a, b in zip(("dq", "dk", "dv"), grads, g_ref)})
            item = {"check": f"{kern.name} fp32 vs math fp64 (causal={causal}, Sq={sq}, Sk={sk})", "max_abs_diff": diff,
                    "ok": all(x < 2e-3 for x in diff.values())}
            rep.add("correctness", item)
            print(f"  {item['check']:<34} {diff} {'OK' if item['ok'] else 'MISMATCH'}")
        except Exception as e:  # noqa: BLE001
            rep.skip(f"block kernel causal={causal} Sq={sq} Sk={sk}", f"{type(e).__name__}: {e}")


def throughput(rep, device, group, smoke, flash_reason, iters):
    heads, kv_heads, dim = (4, 2, 32) if smoke else (16, 8, 128)
    lengths = (1024, 2048) if smoke else (32768, 131072)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for s in lengths:
        for backend in ("torch", "flash"):
            what = f"{backend} S={s}"
            if backend == "flash" and flash_reason:
                rep.skip(f"throughput {what}", flash_reason)
                continue
            try:
                q, k, v, dout = _inputs(s, heads, kv_heads, dim, dtype, device, seed=s)
                q.requires_grad_(), k.requires_grad_(), v.requires_grad_()
                times = []
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                for i in range(iters + 1):  # first = warm-up
                    sync()
                    t0 = time.perf_counter()
                    out = ring_attention(q, k, v, [0, s], group=group, backend=backend)
                    out.backward(dout)
                    sync()
                    if i:
                        times.append(time.perf_counter() - t0)
                    q.grad = k.grad = v.grad = None
                    del out
                sec = min(times)
                flops = 7.0 * s * s * heads * dim
                item = {"backend": backend, "tokens": s, "heads": heads, "kv_heads": kv_heads, "dim": dim,
                        "dtype": str(dtype).replace("torch.", ""), "ms": sec * 1e3, "tokens_per_s": s / sec,
                        "tflops": flops / sec / 1e12, "iters": iters,
                        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}
                rep.add("throughput", item)
                print(f"  {what:<16} {item['ms']:9.1f} ms  {item['tokens_per_s']:12.0f} tok/s  {item['tflops']:7.1f} TFLOP/s")
            except torch.cuda.OutOfMemoryError as e:
                rep.skip(f"throughput {what}", f"CUDA OOM: {str(e).splitlines()[0]}")
            except Exception as e:  # noqa: BLE001
                rep.skip(f"throughput {what}", f"{type(e).__name__}: {e}")
            finally:
                q = k = v = dout = None
                if device.type == "cuda":
                    torch.cuda.empty_cache()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="JSON results path")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CPU ok)")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=540, help="watchdog: dump stacks and exit after this long")
    args = ap.parse_args(argv)
    faulthandler.dump_traceback_later(args.max_seconds, exit=True)

    rep = Report(args.out)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.smoke:
        print("no CUDA device: running the --smoke sizes on CPU")
        args.smoke = True
    flash_reason = flash_unavailable_reason(device)
    rep.data["env"] = {
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "flash_backend": flash_reason or "available", "smoke": args.smoke,
    }
    rep.flush()
    print(f"env: {rep.data['env']}")
    try:
        group = _init_group(device)
    except Exception as e:  # noqa: BLE001
        rep.skip("process group", f"{type(e).__name__}: {e}; running with group=None (world 1)")
        group = None

    print("correctness (max |diff|)")
    try:
        correctness(rep, device, group, args.smoke, flash_reason)
    except Exception as e:  # noqa: BLE001
        rep.skip("correctness", f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
    print("throughput (causal fwd+bwd, one sample)")
    throughput(rep, device, group, args.smoke, flash_reason, args.iters)

    print("\n| backend | tokens | ms | tokens/s | TFLOP/s | peak GiB |\n|---|---|---|---|---|---|")
    for t in rep.data["throughput"]:
        mem = f"{t['peak_mem_gib']:.1f}" if t["peak_mem_gib"] is not None else "-"
        print(f"| {t['backend']} | {t['tokens']} | {t['ms']:.1f} | {t['tokens_per_s']:.0f} | {t['tflops']:.1f} | {mem} |")
    if rep.data["skipped"]:
        print("skipped: " + "; ".join(f"{s['what']} ({s['reason'].splitlines()[0]})" for s in rep.data["skipped"]))
    if group is not None:
        import torch.distributed as dist

        dist.destroy_process_group()
    faulthandler.cancel_dump_traceback_later()
    return rep.data


if __name__ == "__main__":
    main()
