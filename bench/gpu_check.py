"""One prepared GPU check, resumable across loans: kernels, 2B training throughput at 32K, the 128K one-GPU
step, ring throughput and the pytest `gpu` marker, in that order (by value: see STAGE_TIMEOUTS).

    GPU_BUDGET_S=480 make gpu-check                             # on an H100/H200: install + the stages in 480 s
    python bench/gpu_check.py [--out PATH] [--budget-s 420] [--resume PATH | --fresh]
    python bench/gpu_check.py --dry-run --out /tmp/check.json   # CPU: every stage's code path, tiny sizes

Stages, each in its own subprocess with its own timeout so a hang, a crash or an OOM in one loses none of the
others: `env` (device, torch, peak bf16 FLOP/s), `kernels` (bf16 ring kernels vs an fp64 reference, forward and
grads: bench/gpu_ring.py's correctness), `train_2b_32k` (tokens/s/GPU, MFU in torchtitan's units and as 6*N,
peak memory, loader wait of the 2B preset on recipes/train_32k.yaml with num_workers set), `train_128k_1gpu`
(one step of recipes/train_128k_1gpu.yaml; an OOM is reported as "does not fit"), `ring` (causal fwd+bwd
throughput at world size 1) and `test_gpu` (the pytest `gpu` marker).

The JSON, rewritten after every stage, goes to --out, else $OUT/gpu_check.json, else bench/gpu_check.json (a
dry run's to out/gpu_check_dry.json, so it never overwrites a GPU report). Resumable: the stages already `ok`
in the previous report (--resume PATH, else the --out file when it exists, else bench/gpu_check.json) are kept
and only the missing, failed, timed-out and skipped ones run; the report's `pending` lists what is still to run.
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

from gpu_flops import REFERENCE, non_embedding_params, peak_flops, torchtitan_flops_per_token  # noqa: E402

# The stages BY VALUE, so a loan that ends early has spent its minutes on what matters most:
#   env: seconds, and it names the device (and its peak) every figure below was taken on;
#   kernels: if the bf16 ring kernels disagree with the fp64 reference, no throughput figure means anything;
#   train_2b_32k: the figure users compare (tokens/s/GPU, MFU at 32K), the reason for the loan;
#   train_128k_1gpu: whether the one-GPU 128K recipe fits, a yes/no its recipe's comment waits on;
#   ring: attention throughput at world size 1, a per-rank kernel figure (cp > 1 is tested on CPU with gloo);
#   test_gpu last: the pytest gpu marker repeats much of `kernels` (CUDA vs math kernel in fp64) and pays
#   pytest's collection, so it gets the time that is left.
# Values: seconds per stage on a GPU; the whole run is further capped by --budget-s.
STAGE_TIMEOUTS = {"env": 60, "kernels": 45, "train_2b_32k": 150, "train_128k_1gpu": 120, "ring": 45, "test_gpu": 75}
STAGES = tuple(STAGE_TIMEOUTS)
# Seconds left below which a stage is not started ("out of time"): its model build and warm-up alone would eat
# them, while a cheaper stage after it may still fit.
STAGE_MIN_S = {"env": 5, "kernels": 15, "train_2b_32k": 60, "train_128k_1gpu": 45, "ring": 15, "test_gpu": 20}
DRY_RUN_OUT = ROOT / "out" / "gpu_check_dry.json"
COMMITTED = ROOT / "bench" / "gpu_check.json"
_clock = time.monotonic  # the budget's clock (a test steps it by hand)
LONG_SAMPLES = 4  # 128K samples built for the one-GPU step (warm-up + 2 measured)
RING_NOTE = ("world size 1: the per-rank kernels and varlen bookkeeping; cp > 1 communication needs several "
             "processes and is covered by the gloo tests (tests/test_ring_zigzag.py)")


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else (platform.processor() or "cpu")


def stage_env(args) -> dict:
    import torch

    name = _device_name()
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
    exe = str(exe) if exe.exists() else shutil.which("v2pe-data")
    # Without the console script (the project on sys.path but not pip-installed): the same CLI as a module.
    cmd = [*([exe] if exe else [sys.executable, "-m", "v2pe_data"]), "build", "long_vqa",
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
    text = trainer.model.config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    # T is the pack length (data.max_seq_len), torchtitan's training.seq_len: a pack holds several samples
    # under a block-diagonal mask, so like torchtitan with document masking it counts attention over all of T.
    n_params = non_embedding_params(trainer.model)
    flops_tt = torchtitan_flops_per_token(n_params, text.num_hidden_layers, text.num_attention_heads, head_dim,
                                          cfg.data.max_seq_len)
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
    gpus = 1  # one process, one device: per-GPU figures equal the totals (kept apart for multi-GPU runs)
    per_gpu = tok / step_s / gpus
    return {"model": cfg.model.name, "recipe": recipe, "params": params, "max_seq_len": cfg.data.max_seq_len,
            "num_workers": cfg.data.num_workers, "gradient_checkpointing": cfg.parallel.gradient_checkpointing,
            "tokens_per_step": tok, "step_s": round(step_s, 4), "tokens_per_s": round(tok / step_s, 1),
            "gpus": gpus, "tokens_per_s_per_gpu": round(per_gpu, 1), "peak_bf16_flops": peak,
            "params_non_embedding": n_params,
            "flop_shape": {"layers": text.num_hidden_layers, "heads": text.num_attention_heads,
                           "head_dim": head_dim, "seq_len": cfg.data.max_seq_len},
            "flops_per_token_torchtitan": flops_tt,
            # MFU as torchtitan reports it: comparable with its published figures.
            "mfu_torchtitan": round(per_gpu * flops_tt / peak, 4) if peak else None,
            # 6 x all parameters, attention excluded: this check's earlier figure, kept for continuity.
            "mfu_6n": round(6 * params * per_gpu / peak, 4) if peak else None,
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
        return {"fits": False, "verdict": "does not fit", "error": str(exc).splitlines()[0][:300],
                "reference": REFERENCE}
    # torchtitan's CP point beside ours; not the same model (8B text-only on several GPUs vs 2B VLM on one).
    return {"fits": True, "verdict": "fits", **res, "reference": REFERENCE}


def run_stage(name: str, args) -> None:
    """Child process: one stage, its result (or its error) written as JSON."""
    t0 = time.perf_counter()
    try:
        result = {"status": "ok", **globals()[f"stage_{name}"](args)}
        # Each result names its device: a resumed report can join stages from two loans (H100 and H200).
        result.setdefault("device", _device_name())
    except Exception as exc:  # noqa: BLE001 - recorded, the parent carries on with the next stage
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:1000]}
    result["seconds"] = round(time.perf_counter() - t0, 2)
    Path(args.stage_json).write_text(json.dumps(result, default=str))


def out_path(args) -> Path:
    if args.out:
        return Path(args.out)
    if os.environ.get("OUT"):  # the device tool brings back what is written under $OUT
        return Path(os.environ["OUT"]) / "gpu_check.json"
    return DRY_RUN_OUT if args.dry_run else COMMITTED


def load_previous(args, out: Path) -> tuple[dict, Path | None]:
    """The previous report's stages to keep, and where they came from. --resume PATH must be a usable report
    of the same kind (dry run or GPU); otherwise the --out file, then bench/gpu_check.json, are taken when
    usable and passed over with a note when not."""
    if args.fresh:
        return {}, None
    explicit = bool(args.resume)
    candidates = [Path(args.resume)] if explicit else list(dict.fromkeys([out, COMMITTED]))
    for path in candidates:
        problem = None
        if not path.is_file():
            if not explicit:
                continue
            problem = "no such file"
        else:
            try:
                prev = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                prev, problem = None, f"not JSON ({exc})"
            if problem is None and not (isinstance(prev, dict) and isinstance(prev.get("stages"), dict)):
                problem = "no 'stages' object: not a gpu_check report"
            elif problem is None and bool(prev.get("dry_run")) != bool(args.dry_run):
                # A dry run's CPU numbers must never stand in for a GPU stage, nor the other way round.
                problem = f"field 'dry_run' is {prev.get('dry_run')}, this run's is {args.dry_run}"
        if problem is None:
            return prev, path
        if explicit:
            raise SystemExit(f"gpu_check: --resume {path}: {problem}")
        print(f"[gpu-check] not resuming from {path}: {problem}", file=sys.stderr, flush=True)
    return {}, None


def pending_stages(stages: dict) -> list[str]:
    return [n for n in STAGES if not isinstance(stages.get(n), dict) or stages[n].get("status") != "ok"]


def orchestrate(args) -> dict:
    out = out_path(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    prev, source = load_previous(args, out)
    runs = list(prev.get("runs") or [])
    this_run = {"run": len(runs) + 1, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "budget_s": args.budget_s, "resumed_from": str(source) if source else None,
                "install": json.loads(args.install) if args.install else None, "ran": [], "out_of_time": []}
    report = {"dry_run": args.dry_run, "install": this_run["install"], "reference": REFERENCE,
              "runs": runs + [this_run], "pending": [], "stages": {}}
    kept = {n: prev["stages"][n] for n in STAGES if n not in pending_stages(prev.get("stages", {}))}
    deadline = _clock() + args.budget_s
    todo = [n for n in STAGES if n not in kept]
    preparer = None
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.dry_run and {"train_2b_32k", "train_128k_1gpu"} & set(todo):
        (args.work / "preparing").touch()  # before the child starts, so no stage races it to the same build
        # CPU work (JPEG synthesis, tokenising) overlaps the GPU-only stages instead of eating the train stages' time.
        preparer = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--prepare-data", "--work",
                                     str(args.work), "--steps", str(args.steps)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for name in STAGES:
        if name in kept:
            report["stages"][name] = kept[name]
            print(f"[gpu-check] {name}: kept (ok in run {kept[name].get('run', '?')} of {source})", flush=True)
            continue
        left = deadline - _clock()
        if left < STAGE_MIN_S[name]:
            result = {"status": "skipped", "error": f"out of time: {max(left, 0):.0f} s of the {args.budget_s:.0f} s "
                      f"budget left, {name} needs at least {STAGE_MIN_S[name]} s"}
            this_run["out_of_time"].append(name)
        else:
            result = _spawn(name, args, min(STAGE_TIMEOUTS[name], left))
            this_run["ran"].append(name)
        report["stages"][name] = {**result, "run": this_run["run"]}
        report["pending"] = pending_stages(report["stages"])
        _write(out, report)
        print(f"[gpu-check] {name}: {summary_line(name, report['stages'][name])}", flush=True)
    report["pending"] = pending_stages(report["stages"])
    _write(out, report)
    if preparer is not None and preparer.poll() is None:
        preparer.kill()
        preparer.wait()
    print(f"[gpu-check] wrote {out}")
    if report["pending"]:
        print(f"[gpu-check] still to run: {', '.join(report['pending'])}; copy the report to bench/gpu_check.json "
              "and run again on the next loan: the stages already ok are kept", flush=True)
    else:
        print("[gpu-check] every stage ok", flush=True)
    return report


def _write(out: Path, report: dict) -> None:
    """Whole or not at all: a loan that ends mid-write leaves the previous version, never half a report."""
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str))
    os.replace(tmp, out)


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


def _pct(x) -> str:
    return f"{100 * x:.1f} %" if x is not None else "n/a"


def summary_line(name: str, r: dict) -> str:
    """One line for the console; a result without the expected fields reads "ok" rather than stopping the run."""
    try:
        return _summary(name, r)
    except (KeyError, TypeError, ValueError) as exc:
        return f"{r.get('status')} (no summary: {type(exc).__name__} {exc})"


def _summary(name: str, r: dict) -> str:
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
    line = (f"{r['tokens_per_s_per_gpu']:.0f} tok/s/GPU, MFU {_pct(r.get('mfu_torchtitan'))} (torchtitan) "
            f"{_pct(r.get('mfu_6n'))} (6N), peak {r['peak_mem_gib']} GiB, loader wait {r['loader_wait_s_median']} s")
    if name == "train_128k_1gpu":
        ref = r.get("reference") or REFERENCE
        line += f"; torchtitan CP {ref['model']} 128K {ref['device']}: {ref['tokens_per_s_per_gpu']:,} tok/s/GPU"
    return line


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU smoke: the tiny model and tiny lengths")
    ap.add_argument("--out", default=None)
    ap.add_argument("--budget-s", type=float, default=float(os.environ.get("GPU_BUDGET_S") or 420),
                    help="all stages together, seconds (default $GPU_BUDGET_S, else 420)")
    ap.add_argument("--resume", default=None, help="a previous report: its stages already ok are kept")
    ap.add_argument("--fresh", action="store_true", help="ignore any previous report: run every stage")
    ap.add_argument("--pending", action="store_true",
                    help="print the stages the resumed report still needs (nothing when all are ok) and exit")
    ap.add_argument("--steps", type=int, default=4, help="measured training steps (after one warm-up)")
    ap.add_argument("--workers", type=int, default=6, help="loader num_workers on the GPU")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (data builds, run folders)")
    ap.add_argument("--install", default=None, help="JSON from gpu_check.sh's install step")
    ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    ap.add_argument("--stage-json", help=argparse.SUPPRESS)
    ap.add_argument("--prepare-data", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.resume and args.fresh:
        ap.error("--resume and --fresh exclude each other")
    if args.stage:
        return run_stage(args.stage, args)
    if args.prepare_data:
        return prepare_data(args)
    if args.pending:  # stdlib only: gpu_check.sh asks this before it spends the budget on an install
        prev, _ = load_previous(args, out_path(args))
        print(" ".join(pending_stages(prev.get("stages", {}))))
        return None
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        args.work = args.work or Path(tmp)
        return orchestrate(args)


if __name__ == "__main__":
    main()
