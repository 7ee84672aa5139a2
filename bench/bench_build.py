"""Build throughput at 64K against the floor of only rendering and encoding the same images.

Concat mode by default; `--mode paste` builds labelled canvases (floor: decode, paste, encode them).
Prints samples/s and tokens/s for the full build (plan, count, validate, write tar, hash) with 1 and 2
workers, the floor (item.load() for exactly the images the build used), the ratios, and peak RSS.
Targets (issue 2): build/floor time <= 1.3, and 2 workers >= 1.7x one worker.
    python bench/bench_build.py [--samples 16] [--len 64k]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

from v2pe_data.build import Builder, build
from v2pe_data.config import BuildConfig


def peak_rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def timed_build(cfg: BuildConfig) -> tuple[float, dict]:
    t = time.perf_counter()
    manifest = build(cfg, show_progress=False)
    return time.perf_counter() - t, manifest


def floor_seconds(cfg: BuildConfig) -> float:
    """Render+encode exactly the images the build used, in one process, nothing else."""
    builder = Builder(cfg)
    plans = [builder.plan(i) for i in range(cfg.num_samples)]  # planning is not timed
    t = time.perf_counter()
    for plan in plans:
        for item in plan.items:
            item.load()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--len", dest="length", default="64k")
    ap.add_argument("--mode", choices=["concat", "paste"], default="concat",
                    help="paste: small synthetic charts/tables on labelled canvases; the floor is then decoding, "
                         "pasting and encoding the same canvases")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="v2pe-bench-"))
    try:
        base = dict(task="long_vqa", length=args.length, num_samples=args.samples, shard_size=2, seed=0,
                    formats=["wds"])  # the tar path, as bench/RESULTS.md records it
        if args.mode == "paste":
            base["sources"] = [{"kind": "synthetic", "mode": "paste",
                                "kinds": ["bar_chart", "line_chart", "pie_chart", "table"]}]
        # Start-up (imports, tokenizer, processor) and the renderer's glyph caches are not throughput:
        # warm them on other samples (another seed), then time best-of-2 for every configuration.
        timed_build(BuildConfig.from_dict({**base, "seed": 1, "num_samples": min(4, args.samples), "out": str(tmp / "warm")}))
        floor_s = min(floor_seconds(BuildConfig.from_dict({**base, "out": str(tmp / "floor")})) for _ in range(2))
        one = [timed_build(BuildConfig.from_dict({**base, "out": str(tmp / f"w1_{r}")})) for r in range(2)]
        two = [timed_build(BuildConfig.from_dict({**base, "out": str(tmp / f"w2_{r}"), "workers": 2})) for r in range(2)]
        one_s, manifest = min(one, key=lambda x: x[0])
        two_s, manifest2 = min(two, key=lambda x: x[0])
        assert [s["sha256"] for s in manifest["shards"]] == [s["sha256"] for s in manifest2["shards"]]
        tokens = manifest["token_stats"]["total"]
        images = manifest["token_stats"]["images_total"]
        n_bytes = sum(s["bytes"] for s in manifest["shards"])
        figures = {
            "mode": args.mode, "samples": args.samples, "len": args.length, "images": images, "tokens": tokens, "bytes": n_bytes,
            "build_1w_s": round(one_s, 3), "build_2w_s": round(two_s, 3), "floor_s": round(floor_s, 3),
            "samples_per_s_1w": round(args.samples / one_s, 3), "tokens_per_s_1w": round(tokens / one_s),
            "samples_per_s_2w": round(args.samples / two_s, 3), "tokens_per_s_2w": round(tokens / two_s),
            "build_over_floor": round(one_s / floor_s, 3), "speedup_2w": round(one_s / two_s, 3),
            "peak_rss_mib": round(peak_rss_mib(), 1),
        }
        print(json.dumps(figures, indent=1))
        print(f"build/floor = {figures['build_over_floor']} (target <= 1.3); "
              f"2 workers = {figures['speedup_2w']}x (target >= 1.7)")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
