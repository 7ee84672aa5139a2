"""Training throughput and peak memory on one GPU: the tiny model and an InternVL2-2B-shaped model at 32K.

    python bench/gpu_train.py --data out/long_vqa_32k_bench [--presets tiny,2b] [--steps 6] [--json out.json]

Per preset: median seconds per optimizer step after one warm-up step, tokens/s, model TFLOP/s estimate
(6 x params x tokens for the dense part; attention excluded), peak CUDA memory, and time spent waiting on
the loader. The data is a v2pe-data build (e.g. `v2pe-data build long_vqa --len 32k -n 8`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from v2pe_train.config import TrainConfig
from v2pe_train.train import Trainer


def run(preset: str, data: str, steps: int, workers: int) -> dict:
    torch.cuda.reset_peak_memory_stats()
    cfg = TrainConfig(model=preset, data=[data], out=tempfile.mkdtemp(prefix=f"v2pe-{preset}-"), max_seq_len=34000,
                      position_mode="v2pe_rnd", lr=1e-5, warmup_ratio=0.0, max_steps=steps + 1, save_every=10**9,
                      precision="auto", gradient_checkpointing=preset != "tiny", num_workers=workers)
    trainer = Trainer(cfg)
    params = sum(p.numel() for p in trainer.model.parameters())
    it = iter(trainer.loader)
    times, waits, tokens, losses = [], [], [], []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        loss, _, n = trainer.train_step([batch])
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        times.append(t2 - t1)
        waits.append(t1 - t0)
        tokens.append(n)
        losses.append(loss)
    step_s = statistics.median(times[1:])
    tok = statistics.median(tokens[1:])
    return {
        "preset": preset, "params_M": round(params / 1e6, 1), "tokens_per_step": tok,
        "step_s": round(step_s, 3), "tokens_per_s": round(tok / step_s), "dense_tflops": round(6 * params * tok / step_s / 1e12, 1),
        "peak_mem_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "loader_wait_s_median": round(statistics.median(waits[1:]), 3), "losses": [round(x, 4) for x in losses],
        "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--presets", default="tiny,2b")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu_train.py needs a CUDA GPU")
    results = []
    for preset in args.presets.split(","):
        try:
            results.append(run(preset, args.data, args.steps, args.workers))
        except torch.OutOfMemoryError as exc:
            results.append({"preset": preset, "error": f"out of memory: {exc}"[:300]})
        print(json.dumps(results[-1]), flush=True)
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
