"""One prepared GPU check: kernels, ring, 2B training throughput at 32K and the 128K one-GPU step.

    python bench/gpu_check.py [--out PATH] [--budget-s 420]     # on an H100/H200 (after bench/gpu_check.sh installs)
    python bench/gpu_check.py --dry-run --out /tmp/check.json   # CPU: every stage's code path, tiny sizes

Stages, each in its own subprocess with its own timeout so a hang, a crash or an OOM in one loses none of the
others: `test_gpu` (the pytest `gpu` marker), `kernels` (bf16 ring kernels vs an fp64 reference, forward and
grads: bench/gpu_ring.py's correctness), `ring` (causal fwd+bwd throughput at world size 1), `train_2b_32k`
(tokens/s, MFU, peak memory, loader wait of the 2B preset on recipes/train_32k.yaml with num_workers set) and
`train_128k_1gpu` (one step of recipes/train_128k_1gpu.yaml; an OOM is reported as "does not fit").
The JSON (rewritten after every stage) goes to --out, else $OUT/gpu_check.json, else bench/gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# Seconds per stage on a GPU; the whole run is further capped by --budget-s (the 8-minute promise).
STAGE_TIMEOUTS = {"env": 60, "test_gpu": 75, "kernels": 45, "ring": 45, "train_2b_32k": 150, "train_128k_1gpu": 120}
STAGES = tuple(STAGE_TIMEOUTS)
# Dense bf16 peak (no sparsity), FLOP/s: MFU is 6 * params * tokens/s over this.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12}
LONG_SAMPLES = 4  # 128K samples built for the one-GPU step (warm-up + 2 measured)
RING_NOTE = ("world size 1: the per-rank kernels and varlen bookkeeping; cp > 1 communication needs several "
             "processes and is covered by the gloo tests (tests/test_ring_zigzag.py)")


def peak_flops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k in device_name), None)


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def stage_env(args) -> dict:
    import torch

    dev = _device()
    name = torch.cuda.get_device_name() if dev.type == "cuda" else (platform.processor() or "cpu")
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "device": name, "peak_bf16_flops": peak_flops(name), "dry_run": args.dry_run}


def stage_test_gpu(args) -> dict:
    # The dry run takes the GPU test file only: collecting the whole suite costs more than the 30 s CPU budget.
    if args.dry_run:
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
               str(ROOT / "tests" / "test_ring_gpu.py")]
    else:
        cmd = ["make", "test-gpu", f"PY={sys.executable}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    tail = (proc.stdout + proc.stderr).strip().splitlines()
    # pytest exits 5 when every test was deselected or skipped: nothing failed.
    return {"rc": proc.returncode, "passed": proc.returncode in (0, 5), "summary": tail[-1] if tail else ""}


class _Collect:
    """The Report interface of bench/gpu_ring.py, kept in memory."""

    def __init__(self):
        self.data = {"correctness": [], "throughput": [], "skipped": []}

    def add(self, section, item):
        self.data[section].append(item)

    def skip(self, what, reason):
        self.add("skipped", {"what": what, "reason": reason})


def stage_kernels(args) -> dict:
    import gpu_ring

    from v2pe_train.ring.flash import flash_unavailable_reason

    dev = _device()
    rep = _Collect()
    gpu_ring.correctness(rep, dev, None, args.dry_run, flash_unavailable_reason(dev))
    return {"checks": rep.data["correctness"], "skipped": rep.data["skipped"]}


def stage_ring(args) -> dict:
    import gpu_ring

    from v2pe_train.ring.flash import flash_unavailable_reason

    dev = _device()
    rep = _Collect()
    gpu_ring.throughput(rep, dev, None, args.dry_run, flash_unavailable_reason(dev), 1 if args.dry_run else 2)
    return {"throughput": rep.data["throughput"], "skipped": rep.data["skipped"], "note": RING_NOTE}


def build_data(length: str, samples: int, out: Path, min_len: str | None = None, *, wait: bool = True) -> Path:
    """A long_vqa build at `out`, made once: built beside it and renamed, so a half-built folder is never read."""
    if wait:
        _wait_for_preparer(out)
    if (out / "manifest.json").is_file():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    exe = Path(sys.executable).parent / "v2pe-data"
    cmd = [str(exe) if exe.exists() else shutil.which("v2pe-data") or "v2pe-data", "build", "long_vqa",
           "--len", length, "--num-samples", str(samples), "--shard-size", str(samples), "--out", str(tmp), "--quiet"]
    if min_len:
        cmd += ["--min-len", min_len]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"v2pe-data build --len {length} failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
    try:
        os.replace(tmp, out)
    except OSError:  # built meanwhile by the preparer: keep that one
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# The training stages' data, by stage; on a GPU it is built in the background while the GPU-only stages run.
def _gpu_data(args) -> dict:
    # At least one sample per loader worker: with fewer samples than workers, an idle worker's epoch is empty.
    return {"train_2b_32k": ("32k", max(args.steps + 4, args.workers), args.work / "data_32k", "30k"),
            "train_128k_1gpu": ("128k", LONG_SAMPLES, args.work / "data_128k", "120k")}


def _wait_for_preparer(out: Path, limit_s: float = 600) -> None:
    marker = out.parent / "preparing"
    t0 = time.monotonic()
    while marker.exists() and not (out / "manifest.json").is_file() and time.monotonic() - t0 < limit_s:
        time.sleep(0.5)


def prepare_data(args) -> None:
    marker = args.work / "preparing"
    marker.touch()
    try:
        for spec in _gpu_data(args).values():
            build_data(*spec, wait=False)
    finally:
        marker.unlink(missing_ok=True)


def measure_training(recipe: str, overrides: dict, steps: int) -> dict:
    """Median step time after one warm-up step, with the loader's wait timed apart from the step."""
    import torch

    from v2pe_train.config import TrainConfig
    from v2pe_train.train import Trainer

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    cfg = TrainConfig.from_yaml(ROOT / recipe, {**overrides, "optim.max_steps": steps + 1,
                                                "checkpoint.save_every": 10**9, "optim.warmup_ratio": 0.0})
    trainer = Trainer(cfg)
    params = sum(p.numel() for p in trainer.model.parameters())
    it = iter(trainer.loader)
    times, waits, tokens, losses = [], [], [], []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        loss, _, n = trainer.train_step([batch])
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t1)
        waits.append(t1 - t0)
        tokens.append(n)
        losses.append(round(loss, 4))
    step_s = statistics.median(times[1:])
    tok = statistics.median(tokens[1:])
    peak = peak_flops(torch.cuda.get_device_name() if cuda else "")
    return {"model": cfg.model.name, "recipe": recipe, "params": params, "max_seq_len": cfg.data.max_seq_len,
            "num_workers": cfg.data.num_workers, "gradient_checkpointing": cfg.parallel.gradient_checkpointing,
            "tokens_per_step": tok, "step_s": round(step_s, 4), "tokens_per_s": round(tok / step_s, 1),
            "mfu": round(6 * params * tok / step_s / peak, 4) if peak else None,
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            "loader_wait_s_median": round(statistics.median(waits[1:]), 4), "losses": losses}


def _train_overrides(args, data: Path, preset: str, out: str, workers: int) -> dict:
    over = {"model.name": "tiny" if args.dry_run else preset, "data.paths": [str(data)], "out": out,
            "data.num_workers": 0 if args.dry_run else workers}
    if args.dry_run:
        # Small enough that both training stages fit the CPU test's time budget on a shared machine.
        over.update({"data.max_seq_len": 2048, "optim.precision": "fp32", "sample.data_augment": False})
    return over


def stage_train_2b_32k(args) -> dict:
    data = build_data("2k", 3, args.work / "data_2k", "1k") if args.dry_run else \
        build_data(*_gpu_data(args)["train_2b_32k"])
    over = _train_overrides(args, data, "2b", str(args.work / "run_32k"), args.workers)
    return measure_training("recipes/train_32k.yaml", over, 1 if args.dry_run else args.steps)


def stage_train_128k_1gpu(args) -> dict:
    import torch

    data = build_data("2k", 3, args.work / "data_2k", "1k") if args.dry_run else \
        build_data(*_gpu_data(args)["train_128k_1gpu"])
    try:
        res = measure_training("recipes/train_128k_1gpu.yaml",
                               _train_overrides(args, data, "2b", str(args.work / "run_128k"),
                                                min(args.workers, LONG_SAMPLES)), 1 if args.dry_run else 2)
    except torch.OutOfMemoryError as exc:
        return {"fits": False, "verdict": "does not fit", "error": str(exc).splitlines()[0][:300]}
    return {"fits": True, "verdict": "fits", **res}


def run_stage(name: str, args) -> None:
    """Child process: one stage, its result (or its error) written as JSON."""
    t0 = time.perf_counter()
    try:
        result = {"status": "ok", **globals()[f"stage_{name}"](args)}
    except Exception as exc:  # noqa: BLE001 - recorded, the parent carries on with the next stage
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:1000]}
    result["seconds"] = round(time.perf_counter() - t0, 2)
    Path(args.stage_json).write_text(json.dumps(result, default=str))


def orchestrate(args) -> dict:
    out = Path(args.out) if args.out else (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT")
                                           else ROOT / "bench" / "gpu_check.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"dry_run": args.dry_run, "install": json.loads(args.install) if args.install else None,
              "stages": {}}
    deadline = time.monotonic() + args.budget_s
    preparer = None
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.dry_run:
        (args.work / "preparing").touch()  # before the child starts, so no stage races it to the same build
        # CPU work (JPEG synthesis, tokenising) overlaps the GPU-only stages instead of eating the train stages' time.
        preparer = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--prepare-data", "--work",
                                     str(args.work), "--steps", str(args.steps)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for name in STAGES:
        left = deadline - time.monotonic()
        timeout = min(STAGE_TIMEOUTS[name], left)
        if timeout < 5:
            report["stages"][name] = {"status": "skipped", "error": f"out of time ({args.budget_s:.0f} s budget)"}
        else:
            report["stages"][name] = _spawn(name, args, timeout)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=1, default=str))
        os.replace(tmp, out)
        print(f"[gpu-check] {name}: {summary_line(name, report['stages'][name])}", flush=True)
    if preparer is not None and preparer.poll() is None:
        preparer.kill()
        preparer.wait()
    print(f"[gpu-check] wrote {out}")
    return report


def _spawn(name: str, args, timeout: float) -> dict:
    fd, path = tempfile.mkstemp(prefix=f"gpu_check_{name}_", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", name, "--stage-json", path,
           "--work", str(args.work), "--steps", str(args.steps), "--workers", str(args.workers)]
    cmd += ["--dry-run"] if args.dry_run else []
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        text = Path(path).read_text()
        if text:
            return json.loads(text)
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return {"status": "error", "error": f"stage exited {proc.returncode} without a result: {' | '.join(tail)}",
                "seconds": round(time.perf_counter() - t0, 2)}
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "error": f"stage {name} passed its {timeout:.0f} s timeout",
                "seconds": round(time.perf_counter() - t0, 2)}
    finally:
        os.unlink(path)


def summary_line(name: str, r: dict) -> str:
    if r.get("status") != "ok":
        return f"{r.get('status')}: {r.get('error', '')}"
    if name == "env":
        return f"{r['device']} torch {r['torch']} cuda {r['cuda']}"
    if name == "test_gpu":
        return f"rc {r['rc']} {r['summary']}"
    if name == "kernels":
        worst = {c["check"]: max(c["max_abs_diff"].values()) for c in r["checks"]}
        return "; ".join(f"{k}: {v:.2e}" for k, v in worst.items()) or "no checks ran"
    if name == "ring":
        return "; ".join(f"{t['backend']} S={t['tokens']}: {t['tokens_per_s']:.0f} tok/s" for t in r["throughput"])
    if name == "train_128k_1gpu" and not r.get("fits"):
        return r["verdict"]
    mfu = f"{100 * r['mfu']:.1f} %" if r.get("mfu") is not None else "n/a"
    return (f"{r['tokens_per_s']:.0f} tok/s, MFU {mfu}, peak {r['peak_mem_gib']} GiB, "
            f"loader wait {r['loader_wait_s_median']} s")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU smoke: the tiny model and tiny lengths")
    ap.add_argument("--out", default=None)
    ap.add_argument("--budget-s", type=float, default=420, help="all stages together, seconds")
    ap.add_argument("--steps", type=int, default=4, help="measured training steps (after one warm-up)")
    ap.add_argument("--workers", type=int, default=6, help="loader num_workers on the GPU")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (data builds, run folders)")
    ap.add_argument("--install", default=None, help="JSON from gpu_check.sh's install step")
    ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    ap.add_argument("--stage-json", help=argparse.SUPPRESS)
    ap.add_argument("--prepare-data", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stage:
        return run_stage(args.stage, args)
    if args.prepare_data:
        return prepare_data(args)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        args.work = args.work or Path(tmp)
        return orchestrate(args)


if __name__ == "__main__":
    main()
