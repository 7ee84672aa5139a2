"""Training throughput and peak memory on one GPU, per preset, on a build of your own (`make gpu-check` runs
the same measurement on data it builds):

    python bench/gpu_train.py --data out/long_vqa_32k_bench [--presets tiny,2b] [--steps 6] [--json out.json]

Per preset: median seconds per optimizer step after one warm-up step, tokens/s/GPU, MFU in torchtitan's units
(6 N + 12 L H Q T FLOPs a token) and as 6 x params (attention excluded), peak CUDA memory, and the loader's
wait, from `gpu_check.measure_training` on
`recipes/train_32k.yaml` (34K tokens a pack, v2pe_rnd, gradient checkpointing except for `tiny`).
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch
from gpu_check import measure_training


def run(preset: str, data: str, steps: int, workers: int) -> dict:
    return measure_training("recipes/train_32k.yaml", {
        "model": preset, "data": [data], "out": tempfile.mkdtemp(prefix=f"v2pe-{preset}-"), "num_workers": workers,
        "gradient_checkpointing": preset != "tiny"}, steps)


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
            results.append({"model": preset, "error": f"out of memory: {exc}"[:300]})
        print(json.dumps(results[-1]), flush=True)
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
