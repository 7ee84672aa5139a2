"""Long-MR build / floor for every length bin in one run, one table (issue 23: each bin <= 1.3).

For each bin, in a fresh child process (so no bin inherits another's heap or caches), after a warm-up build
and floor on a 32K sample of another seed:
  build: `v2pe_data.build.build()` of `n` samples into a temporary folder, default shard size, one worker
         (plan, exact count, schema checks, load every image, write the tars, hash them, markers, manifest,
         plus the per-build source checks and set-up, paid once for the n samples);
  floor: the same n samples planned (timed apart: planning is not image work), then `item.load()` for every
         image (render or decode, paste the needles, encode), nothing written or kept;
  split: one more build under cProfile, its time beyond the floor's work by phase (bench_long_mr.profile_phases;
         cProfile inflates Python-heavy phases, so the shares, not its seconds, are the guide).
Wall and CPU seconds (time.process_time) are both kept, best of `--rounds`; on a shared machine compare the CPU
ratio. Sample counts shrink as the bin grows (many small samples amortise the per-build costs as a real build
does); the default table takes about 3 minutes on 2 idle cores. `--scale 0.25` runs a quick smaller one.
    python bench/bench_bins.py [--bins 32k:32,64k:16,128k:8,256k:4,1m:2] [--rounds 1] [--scale 1] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from bench_long_mr import BUILD_PHASES, RATIO_TARGET, WARM_LEN, config, profile_phases  # the script's folder

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_BINS = "32k:32,64k:16,128k:8,256k:4,1m:2"
# the columns of the split, each a sum of profile_phases keys; what no column holds is "other"
SPLIT = {
    "plan": ["  plan"],
    "checks": ["  record checks (schema, counts)"],
    "write": ["  tar members", "  commit (sha256, fsync, rename)", "  task marker"],
    "per build": [k for k in BUILD_PHASES if k != "the sample: plan, load, check, write"],
}


def _timed(fn) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def child(kind: str, length: str, n: int, seed: int, profile: bool, tmp: Path) -> dict:
    """One bin's build (`kind` "build", then its cProfile split when `profile`) or floor, after a warm-up."""
    from v2pe_data.build import Builder, build

    args = SimpleNamespace(length=length, subset=None, seed=seed)

    def cfg(out: str, **over):
        return config(args, tmp / out, **{"num_samples": n, "shard_size": 8, **over})

    warm = cfg("warm", length=WARM_LEN, seed=seed + 1, num_samples=1)
    if kind == "build":
        build(warm, show_progress=False)
        holder = {}
        wall, cpu = _timed(lambda: holder.setdefault("m", build(cfg("build"), show_progress=False)))
        phases = profile_phases(lambda: build(cfg("profiled"), show_progress=False)) if profile else None
        return {"build_s": wall, "build_cpu_s": cpu, "tokens": holder["m"]["token_stats"]["total"], "phases_s": phases}
    for item in Builder(warm).plan(0).items:
        item.load()
    builder = Builder(cfg("floor"))
    plans = []
    plan_wall, plan_cpu = _timed(lambda: plans.extend(builder.plan(i) for i in range(n)))
    wall, cpu = _timed(lambda: [item.load() for p in plans for item in p.items])  # bytes dropped at once
    return {"floor_s": wall, "floor_cpu_s": cpu, "plan_s": plan_wall, "plan_cpu_s": plan_cpu,
            "tokens": sum(p.record["meta"]["num_tokens"] for p in plans)}


def run_bin(length: str, n: int, args) -> dict:
    """Build and floor of one bin, each in fresh child processes (the renderer's glyph caches would favour
    whichever ran second), `--rounds` times alternating, best of each kept."""
    builds, floors = [], []
    for r in range(args.rounds):
        for kind, got in (("build", builds), ("floor", floors)):
            tmp = Path(tempfile.mkdtemp(prefix="v2pe-bench-bins-"))
            try:
                cmd = [sys.executable, __file__, "--child", kind, length, str(n), "--seed", str(args.seed),
                       "--tmp", str(tmp)] + (["--profile"] if kind == "build" and r == 0 else [])
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False)
                if proc.returncode != 0:
                    raise SystemExit(f"bin {length} {kind} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
                got.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    if builds[0]["tokens"] != floors[0]["tokens"]:
        raise SystemExit(f"bin {length}: the floor planned other samples ({floors[0]['tokens']} tokens) than the "
                         f"build ({builds[0]['tokens']})")
    row = {"bin": length, "samples": n, "tokens": builds[0]["tokens"], "phases_s": builds[0]["phases_s"]}
    for key in ("build_s", "build_cpu_s"):
        row[key] = min(b[key] for b in builds)
    for key in ("floor_s", "floor_cpu_s", "plan_s", "plan_cpu_s"):
        row[key] = min(f[key] for f in floors)
    return row


def split_shares(phases: dict) -> dict:
    """Each SPLIT column's share of the profiled time beyond the floor's work."""
    beyond = phases["beyond_floor_s"] or 1.0
    cols = {name: sum(phases[k] for k in keys) for name, keys in SPLIT.items()}
    cols["other"] = beyond - sum(cols.values())
    return {k: v / beyond for k, v in cols.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bins", default=DEFAULT_BINS, help="BIN:SAMPLES,... (bin = upper edge, min-len 7/8 of it)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every sample count (at least 1)")
    ap.add_argument("--rounds", type=int, default=1, help="build and floor each this often per bin; best kept")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=1200,
                    help="seconds allowed to each child (one build or floor of a bin)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, length, n = args.child
        print(json.dumps(child(kind, length, int(n), args.seed, args.profile, args.tmp)))
        return

    bins = []
    for spec in args.bins.split(","):
        length, _, count = spec.partition(":")
        if not count.isdigit():
            raise SystemExit(f"error: --bins: {spec!r} is not BIN:SAMPLES (e.g. 128k:8)")
        bins.append((length, max(1, round(int(count) * args.scale))))
    rows, started = [], time.perf_counter()
    for length, n in bins:
        rows.append(run_bin(length, n, args))
        r = rows[-1]
        print(f"  {length}: {n} samples, build/floor {r['build_s'] / r['floor_s']:.3f} wall, "
              f"{r['build_cpu_s'] / r['floor_cpu_s']:.3f} CPU", file=sys.stderr, flush=True)
    print(f"Long-MR build / floor by bin, seed {args.seed}, best of {args.rounds}, "
          f"{time.perf_counter() - started:.0f} s in all (target <= {RATIO_TARGET})")
    cols = list(SPLIT) + ["other"]
    print("| bin | samples | tokens / sample | build s (CPU) | floor s (CPU) | build / floor | CPU ratio | plan s "
          "(CPU) | " + " | ".join(f"beyond: {c}" for c in cols) + " |")
    print("|" + " --- |" * (8 + len(cols)))
    for r in rows:
        shares = split_shares(r["phases_s"])
        ratio, cpu_ratio = r["build_s"] / r["floor_s"], r["build_cpu_s"] / r["floor_cpu_s"]
        mark = "" if ratio <= RATIO_TARGET else " (above)"
        print(f"| {r['bin']} | {r['samples']} | {r['tokens'] / r['samples']:,.0f} | {r['build_s']:.2f} "
              f"({r['build_cpu_s']:.2f}) | {r['floor_s']:.2f} ({r['floor_cpu_s']:.2f}) | {ratio:.3f}{mark} | "
              f"{cpu_ratio:.3f} | {r['plan_s']:.2f} ({r['plan_cpu_s']:.2f}) | "
              + " | ".join(f"{100 * shares[c]:.0f} %" for c in cols) + " |")
    print("beyond: each phase's share of the build's profiled time beyond the floor's work (load)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
