"""One 1M-token Long-MR sample through the real `build()`, against the floor of producing its images.

Two fresh child processes, so that neither inherits the other's heap or caches:
  build: `v2pe_data.build.build()` of one sample into a temporary folder (plan, exact count, schema checks,
         load every image, write the tar, hash it, manifest). Its peak RSS is the process's whole life,
         read by the parent from RUSAGE_CHILDREN once the child has been waited for (and by the child
         from its own VmHWM as a cross-check).
  floor: plan the same sample (timed apart: planning is not pixel work), then `item.load()` for every image
         of it: render or decode, paste the needles, encode. Nothing is written or kept.
Both first warm up on a 32K sample of another seed (imports, tokenizer, the renderer's glyph caches), so
the ratio compares steady-state work. Targets (issue 9): build/floor <= 1.3, build peak RSS < 1.5 GiB.
    python bench/bench_long_mr.py [--len 1m] [--subset image_counting] [--seed 0] [--rounds 1] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WARM_LEN = "32k"
RSS_TARGET_MIB = 1536
RATIO_TARGET = 1.3


def vm_hwm_mib() -> float:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024


def config(args, out: Path, **over):
    from v2pe_data.config import BuildConfig

    raw = dict(task="long_mr", length=args.length, num_samples=1, shard_size=1, seed=args.seed, out=str(out),
               formats=["wds"])  # the tar path, as bench/RESULTS.md records it
    if args.subset:
        raw["options"] = {"subset": args.subset}
    raw.update(over)
    return BuildConfig.from_dict(raw)


# The build's time beyond the floor, by phase: each the profiled functions whose cumulative time it is.
BUILD_PHASES = {
    "set-up (builder: tokenizer, sources)": [("v2pe_data/build.py", "__init__")],
    "source checks": [("v2pe_data/build.py", "check_sources_unchanged"), ("v2pe_data/build.py", "check_feasible"),
                      ("v2pe_data/build.py", "source_report")],
    "prepare (folder, lock)": [("v2pe_data/build.py", "prepare_out")],
    "the sample: plan, load, check, write": [("v2pe_data/build.py", "_run_task")],
    "finish (manifest, card, markers)": [("v2pe_data/build.py", "_finish")],
}
# Inside "the sample", by what `_run_task` calls directly. Its calls to functions none of these names are the
# images' `item.load()` (render or decode, paste, encode: LOAD, the floor's own work).
NESTED_PHASES = {"  plan": [("v2pe_data/build.py", "plan")],
                 "  record checks (schema, counts)": [("v2pe_common/schema.py", "validate"),
                                                      ("v2pe_common/schema.py", "check_counts")],
                 "  tar members": [("v2pe_data/writers/base.py", "__init__"), ("v2pe_data/writers/base.py", "begin"),
                                   ("v2pe_data/writers/base.py", "add_image"), ("v2pe_data/writers/base.py", "end")],
                 "  commit (sha256, fsync, rename)": [("v2pe_data/writers/base.py", "commit")],
                 "  task marker": [("v2pe_data/writers/atomic.py", "write_json_atomic")]}
LOAD = "  load (the floor's work)"


def _matches(key, wanted) -> bool:
    return any((f in key[0] or f == key[0]) and key[2] == name for f, name in wanted)


def profile_phases(run) -> dict:
    """Seconds of `run()` (a build) under cProfile by BUILD_PHASES and NESTED_PHASES, the floor's `LOAD`, the
    total, and `beyond_floor_s` (total less LOAD)."""
    from profiling import profile_stats  # the script's folder

    stats, total = profile_stats(run)
    out = {}
    for phase, wanted in BUILD_PHASES.items():
        # a function counts once even when it calls another of its phase (a load inside a load)
        found = {key: v for key, v in stats.items() if _matches(key, wanted)}
        out[phase] = sum(v[3] for key, v in found.items() if not any(caller in found for caller in v[4]))
    run_task = [key for key in stats if _matches(key, BUILD_PHASES["the sample: plan, load, check, write"])]
    # cumulative seconds of the calls _run_task makes to each function (its callers' entries name it)
    direct = {key: sum(v[4][rt][3] for rt in run_task if rt in v[4]) for key, v in stats.items()}
    for phase, wanted in NESTED_PHASES.items():
        out[phase] = sum(t for key, t in direct.items() if _matches(key, wanted))
    out[LOAD] = sum(t for key, t in direct.items() if not any(_matches(key, w) for w in NESTED_PHASES.values()))
    out["  other in the sample"] = out["the sample: plan, load, check, write"] - out[LOAD] - sum(
        out[k] for k in NESTED_PHASES)
    out["other"] = total - sum(out[k] for k in BUILD_PHASES)
    return {"total_s": round(total, 3), "beyond_floor_s": round(total - out[LOAD], 3),
            **{k: round(v, 3) for k, v in out.items()}}


def build_phases(args, tmp: Path) -> dict:
    """Seconds of one more build of the sample under cProfile, by phase (`profile_phases`)."""
    from v2pe_data.build import build

    return profile_phases(lambda: build(config(args, tmp / "profiled"), show_progress=False))


def child_build(args, tmp: Path) -> dict:
    from v2pe_data.build import build

    build(config(args, tmp / "warm", length=WARM_LEN, seed=args.seed + 1), show_progress=False)
    t = time.perf_counter()
    manifest = build(config(args, tmp / "build"), show_progress=False)
    seconds = time.perf_counter() - t
    return {"build_s": seconds, "vm_hwm_mib": vm_hwm_mib(), "tokens": manifest["token_stats"]["total"],
            "bytes": sum(s["bytes"] for s in manifest["shards"]), "phases_s": build_phases(args, tmp)}


def child_floor(args, tmp: Path) -> dict:
    from v2pe_data.build import Builder

    warm = Builder(config(args, tmp / "warm", length=WARM_LEN, seed=args.seed + 1)).plan(0)
    for item in warm.items:
        item.load()
    builder = Builder(config(args, tmp / "floor"))
    t = time.perf_counter()
    plan = builder.plan(0)
    plan_s = time.perf_counter() - t
    t = time.perf_counter()
    for item in plan.items:
        item.load()  # render/decode + paste + encode; the bytes are dropped at once, as the writer does
    floor_s = time.perf_counter() - t
    meta = plan.record["meta"]
    return {"floor_s": floor_s, "plan_s": plan_s, "vm_hwm_mib": vm_hwm_mib(), "subset": plan.record["subset"],
            "tokens": meta["num_tokens"], "images": len(plan.items), "tiles": sum(meta["tiles"])}


def run_child(kind: str, args, tmp: Path, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--tmp", str(tmp), "--len", args.length, "--seed", str(args.seed)]
    if args.subset:
        cmd += ["--subset", args.subset]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--len", dest="length", default="1m", help="upper edge of the bin (min-len: 7/8 of it)")
    ap.add_argument("--subset", default=None, help="a Long-MR subset or a comma list (default: all eight; "
                                                   "the sample's draw decides which one it is)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=1, help="build and floor each this often, alternating; best kept")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed to each child")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--child", choices=["build", "floor"], help=argparse.SUPPRESS)
    ap.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps((child_build if args.child == "build" else child_floor)(args, args.tmp)))
        return

    builds, floors, build_peak = [], [], None
    for r in range(args.rounds):
        tmp = Path(tempfile.mkdtemp(prefix="v2pe-bench-long-mr-"))
        try:
            builds.append(run_child("build", args, tmp, args.timeout))
            if build_peak is None:
                # RUSAGE_CHILDREN is the largest of the children waited for so far: only this build child.
                build_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            floors.append(run_child("floor", args, tmp, args.timeout))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    b, f = min(builds, key=lambda x: x["build_s"]), min(floors, key=lambda x: x["floor_s"])
    if b["tokens"] != f["tokens"]:
        raise SystemExit(f"the floor planned another sample ({f['tokens']} tokens) than the build ({b['tokens']})")
    figures = {
        "len": args.length, "seed": args.seed, "subset": f["subset"], "rounds": args.rounds, "tokens": b["tokens"],
        "images": f["images"], "tiles": f["tiles"], "shard_bytes": b["bytes"],
        "build_s": round(b["build_s"], 3), "floor_s": round(f["floor_s"], 3), "plan_s": round(f["plan_s"], 3),
        "build_over_floor": round(b["build_s"] / f["floor_s"], 3),
        "build_peak_rss_mib": round(build_peak, 1), "build_vm_hwm_mib": round(max(x["vm_hwm_mib"] for x in builds), 1),
        "floor_vm_hwm_mib": round(max(x["vm_hwm_mib"] for x in floors), 1),
    }
    print(f"Long-MR {args.length}, seed {args.seed}: one {figures['subset']} sample, {figures['tokens']:,} tokens, "
          f"{figures['images']} images, {figures['tiles']} tiles, {figures['shard_bytes'] / 1e6:.1f} MB of tar"
          f" (best of {args.rounds})")
    rows = [("floor: load() every image (render/decode, paste, encode)", figures["floor_s"], 1.0),
            ("plan alone (in the build, not in the floor)", figures["plan_s"], figures["plan_s"] / figures["floor_s"]),
            ("build(): plan, count, check, load, write, hash, manifest", figures["build_s"],
             figures["build_over_floor"])]
    print("| step | seconds | vs floor |\n| --- | --- | --- |")
    for name, seconds, ratio in rows:
        print(f"| {name} | {seconds:.2f} | {ratio:.2f} |")
    print(f"build/floor = {figures['build_over_floor']} (target <= {RATIO_TARGET}); build peak RSS = "
          f"{figures['build_peak_rss_mib']} MiB (target < {RSS_TARGET_MIB}; child's own VmHWM "
          f"{figures['build_vm_hwm_mib']}), floor process {figures['floor_vm_hwm_mib']} MiB")
    phases = b["phases_s"]
    figures["build_phases_s"] = phases
    print("build phases (one more build under cProfile): " + ", ".join(
        f"{k} {v:.2f}s ({100 * v / phases['total_s']:.0f}%)" for k, v in phases.items() if k != "total_s"))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
