"""Loader throughput on ~32K-token samples against the floor of only decoding and tiling the same images.

Builds a small 32K set with v2pe-data into a temporary folder (not timed), then times, in one process:
  floor:  the pixel work no loader can skip, for every image of the build, bytes already in memory: PIL
          decode, the transformers image processor's tiling and resize to 8-bit tiles, and their normalisation
          into a fresh `--pixel-dtype` tensor per sample (its first-touch page faults included, as a loader's
          batches pay them) by the lookup table that gives the processor's own values
          (v2pe_train/data/pixel_lut.py, bit-identical to its float rescale + normalise + copy);
  float floor: the floor as issues 3-23 measured it: decode + the processor's float rescale and normalise
          (its float32 output, no copy into the batch dtype); printed for continuity;
  loader: PackedLoader over the build folder (shard verification against the manifest's sha256, tar
          streaming, schema checks, tokenising and labels, tiles to bf16, V2PE positions, packing,
          collation), one process, no workers;
  no verify: the same loader with `verify=False`;
  hash:   the sha256 of every shard file alone (what verification adds to a first epoch);
  tiling: SampleProcessor.tile over every image of the build with the `reference` backend (the transformers
          processor) and the `fast` one (torch resize), tiles into `--pixel-dtype` buffers, with ONE torch
          thread, as in a DataLoader worker (torch sets 1 thread there): tiles/s per worker, the fast/reference
          ratio, and the largest pixel difference between the two in 8-bit levels.
Each is timed `--rounds` times, alternating, and the best round is kept; the per-process digest cache is
emptied before every verified round, so each pays the full hash (a later epoch pays a stat per shard).
Prints samples/s, tokens/s, tiles/s, the loader/floor time ratio (target <= 1.05), the verify on/off
throughput ratio and peak RSS.
    python bench/bench_loader.py [--samples 6] [--len 32k] [--rounds 2] [--mode v2pe_rnd] [--tiling-backend fast]

`--cp` runs only the context-parallel section instead: one Long-MR sample of `--cp-len` tokens (built as
bench_long_mr.py builds it), then, for each cp degree W of `--cp-degrees`, ranks 0 and W-1 of a cp group
each read it with a PackedLoader(cp_rank, cp_size=W) in a fresh child process: tiles decoded and held,
loader seconds (wall and CPU) and the child's peak RSS (VmHWM; its RSS after imports, before the loader,
is given apart), with the ratio against cp = 1.
    python bench/bench_loader.py --cp [--cp-len 1m] [--cp-degrees 1,2,4,8] [--tiling-backend reference]
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _proc_status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


# The loader's phases, each the profiled functions whose cumulative time it is (a phase nested in another is
# taken out of it: decoding happens inside `tile`). What no phase holds is "other": tar streaming, the
# manifest check, schema and bookkeeping.
PHASES = {
    "decode": [("PIL/ImageFile.py", "load")],
    "processor": [("transformers/image_processing_utils.py", "__call__")],  # what the floor runs too
    "rgb": [("v2pe_common/images.py", "to_rgb")],
    "tiling": [("v2pe_train/data/samples.py", "tile")],  # less the three above: checks, the table lookup into the batch
    "encoding": [("v2pe_train/data/samples.py", "plan")],
    "positions": [("v2pe_train/positions.py", "position_ids")],
    "packing": [("v2pe_train/data/packing.py", "add"), ("v2pe_train/data/packing.py", "flush")],
    "collation": [("v2pe_train/data/collate.py", "collate")],
}
NESTED = {"tiling": ["decode", "processor", "rgb"]}


def phase_breakdown(run) -> dict:
    """Seconds (under cProfile, one pass of `run()`) spent in each of PHASES, and the total."""
    from profiling import profile_stats  # the script's folder

    stats, total = profile_stats(run)
    seconds = {}
    for phase, wanted in PHASES.items():
        seconds[phase] = sum(v[3] for (file, _, name), v in stats.items()
                             if any(file.endswith(f) and name == n for f, n in wanted))
    for outer, inner in NESTED.items():
        seconds[outer] -= sum(seconds[i] for i in inner)
    seconds["other"] = total - sum(seconds.values())
    return {"total_s": round(total, 3), **{k: round(v, 3) for k, v in seconds.items()}}


def cp_child(build_dir: str, rank: int, world: int, args) -> dict:
    """One cp rank's loader over the build, in a process of its own (its VmHWM is this rank's peak)."""
    from v2pe_common.tokenizer import load_tokenizer
    from v2pe_train.data import LoaderConfig, PackedLoader

    tok = load_tokenizer()
    cfg = LoaderConfig(paths=[build_dir], pixel_dtype=args.pixel_dtype, tiling_backend=args.tiling_backend,
                       position_mode=args.mode, cp_rank=rank, cp_size=world)
    loader = PackedLoader(cfg, tok)
    base = _proc_status_mib("VmRSS")
    held = total = tokens = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for batch in loader:
        held += batch.num_tiles
        total += batch.total_tiles
        tokens += batch.num_tokens
        del batch  # as a training step would drop it
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if loader.stats.num_errors:
        raise SystemExit(f"loader skipped samples: {loader.stats.summary()}")
    return {"rank": rank, "world": world, "tiles": held, "pack_tiles": total, "tokens": tokens, "loader_s": wall,
            "loader_cpu_s": cpu, "rss_after_imports_mib": base, "vm_hwm_mib": _proc_status_mib("VmHWM")}


def cp_section(args) -> None:
    import subprocess
    import sys
    from types import SimpleNamespace

    from bench_long_mr import config as long_mr_config
    from v2pe_data.build import build

    tmp = Path(tempfile.mkdtemp(prefix="bench_loader_cp_"))
    try:
        t = time.perf_counter()
        manifest = build(long_mr_config(SimpleNamespace(length=args.cp_len, subset=None, seed=0), tmp / "build"),
                         show_progress=False)
        print(f"build: one Long-MR {args.cp_len} sample, {manifest['token_stats']['total']:,} tokens, in "
              f"{time.perf_counter() - t:.1f}s (not timed below)")
        rows = []
        for world in [int(w) for w in args.cp_degrees.split(",")]:
            for rank in sorted({0, world - 1}):
                cmd = [sys.executable, __file__, "--cp-child", str(tmp / "build"), str(rank), str(world),
                       "--pixel-dtype", args.pixel_dtype, "--tiling-backend", args.tiling_backend, "--mode", args.mode]
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
                if proc.returncode != 0:
                    raise SystemExit(f"cp child {rank}/{world} failed:\n{proc.stderr[-3000:]}")
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(f"  cp {world} rank {rank}: {rows[-1]['tiles']} tiles, {rows[-1]['loader_s']:.1f}s", flush=True)
        one = next(r for r in rows if r["world"] == 1)
        print(f"pack: {one['pack_tiles']} tiles, {one['tokens']:,} tokens; tiling backend {args.tiling_backend}, "
              f"pixels {args.pixel_dtype}")
        print("| cp | rank | tiles decoded | vs cp 1 | loader s (CPU s) | vs cp 1 | peak RSS MiB (after imports) | "
              "vs cp 1 | peak - imports vs cp 1 |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        grow = one["vm_hwm_mib"] - one["rss_after_imports_mib"]
        for r in rows:
            print(f"| {r['world']} | {r['rank']} | {r['tiles']} | {r['tiles'] / one['tiles']:.3f} | "
                  f"{r['loader_s']:.2f} ({r['loader_cpu_s']:.2f}) | {r['loader_cpu_s'] / one['loader_cpu_s']:.3f} | "
                  f"{r['vm_hwm_mib']:.0f} ({r['rss_after_imports_mib']:.0f}) | {r['vm_hwm_mib'] / one['vm_hwm_mib']:.3f} | "
                  f"{(r['vm_hwm_mib'] - r['rss_after_imports_mib']) / grow:.3f} |")
        print(json.dumps({"cp_len": args.cp_len, "rows": rows}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--len", dest="length", default="32k")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--mode", default="v2pe_rnd", help="position mode for the loader")
    ap.add_argument("--pixel-dtype", default="bf16")
    ap.add_argument("--tiling-backend", default="reference", help="the loader's tiling backend (fast | reference)")
    ap.add_argument("--keep", default=None, help="build into this folder (reused when it already holds the build)")
    ap.add_argument("--cp", action="store_true", help="run only the context-parallel section (see the docstring)")
    ap.add_argument("--cp-len", default="1m")
    ap.add_argument("--cp-degrees", default="1,2,4,8")
    ap.add_argument("--cp-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cp_child:
        print(json.dumps(cp_child(args.cp_child[0], int(args.cp_child[1]), int(args.cp_child[2]), args)))
        return
    if args.cp:
        cp_section(args)
        return

    from PIL import Image

    from v2pe_common import paths
    from v2pe_common.lengths import parse_length
    from v2pe_common.tiling import TilingConfig, image_processor
    from v2pe_common.tokenizer import load_tokenizer
    from v2pe_data.build import build
    from v2pe_data.config import BuildConfig
    from v2pe_data.validate import iter_tar_samples
    import torch

    from v2pe_common.tiling import IMAGENET_STD as STD
    from v2pe_common.tiling import TILE_SIZE, num_tiles
    from v2pe_train.data import IMAGENET_MEAN, IMAGENET_STD, LoaderConfig, PackedLoader
    from v2pe_train.data import pixel_lut
    from v2pe_train.data.samples import PIXEL_DTYPES, SampleProcessor
    from v2pe_train.data.options import SampleConfig

    length = parse_length(args.length)
    tmp = None
    if args.keep:
        out = Path(args.keep)
    else:
        tmp = tempfile.mkdtemp(prefix="bench_loader_")
        out = Path(tmp) / "build"
    try:
        t = time.perf_counter()
        cfg = BuildConfig(length=length, num_samples=args.samples, shard_size=2, out=str(out), seed=0,
                          workers=min(2, os.cpu_count() or 1), formats=["wds"])
        manifest = build(cfg, show_progress=False)
        print(f"build: {args.samples} samples at {args.length} in {time.perf_counter() - t:.1f}s (not timed below)")

        # what the floor gets: the image bytes of the build, in memory
        images, per_sample = [], []
        for shard in manifest["shards"]:
            for _, record, members in iter_tar_samples(out / shard["path"]):
                tiling = TilingConfig(**record["meta"]["tiling"])
                images.extend((members[n], tiling) for n in record["images"])
                per_sample.append((len(record["images"]), sum(record["meta"]["tiles"])))
        kw = dict(return_tensors="pt", image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))

        def float_floor() -> tuple[float, int]:
            tiles = 0
            t0 = time.perf_counter()
            for data, tiling in images:
                with Image.open(io.BytesIO(data)) as im:
                    tiles += int(image_processor(tiling)(images=im, **kw)["pixel_values"].shape[0])
            return time.perf_counter() - t0, tiles

        pixel_dtype = PIXEL_DTYPES[args.pixel_dtype]

        def floor() -> tuple[float, int]:
            # each sample's tiles land in one fresh tensor of their own, as they must to leave a loader: its
            # first-touch page faults are part of the floor (a buffer reused image after image would not pay them)
            tiles, it = 0, iter(images)
            t0 = time.perf_counter()
            for count, sample_tiles in per_sample:
                dest = torch.empty((sample_tiles, 3, TILE_SIZE, TILE_SIZE), dtype=pixel_dtype)
                at = 0
                for data, tiling in itertools.islice(it, count):
                    with Image.open(io.BytesIO(data)) as im:
                        raw = image_processor(tiling)(images=im, return_tensors="pt", do_rescale=False,
                                                      do_normalize=False)["pixel_values"]
                    lut = pixel_lut.table("reference", tuple(IMAGENET_MEAN), tuple(IMAGENET_STD), pixel_dtype,
                                          tiling)
                    pixel_lut.normalise_into(dest[at:at + raw.shape[0]], raw, lut)
                    at += int(raw.shape[0])
                tiles += at
            return time.perf_counter() - t0, tiles

        tok = load_tokenizer()
        sizes = []
        for data, tiling in images:
            with Image.open(io.BytesIO(data)) as im:
                sizes.append(num_tiles(im.width, im.height, tiling))
        tilers = {b: SampleProcessor(tok, SampleConfig(tiling_backend=b), pixel_dtype=args.pixel_dtype)
                  for b in ("reference", "fast")}
        threads = torch.get_num_threads()

        def tiling_run(backend: str) -> tuple[float, int]:
            torch.set_num_threads(1)  # one DataLoader worker's share; restored below
            tiles = 0
            try:
                t0 = time.perf_counter()
                for (data, tiling), n in zip(images, sizes):
                    buf = torch.empty((n, 3, tiling.tile_size, tiling.tile_size), dtype=PIXEL_DTYPES[args.pixel_dtype])
                    tilers[backend].tile(data, "bench", n, tiling, buf)
                    tiles += n
                return time.perf_counter() - t0, tiles
            finally:
                torch.set_num_threads(threads)

        # the pixel agreement of the two backends on exactly the images timed (fp32 tiles, before any bf16 rounding)
        fp32 = {b: SampleProcessor(tok, SampleConfig(tiling_backend=b), pixel_dtype="fp32")
                for b in ("reference", "fast")}
        max_levels = mean_levels_sum = 0.0
        std = torch.tensor(STD).view(1, 3, 1, 1)
        for (data, tiling), n in zip(images, sizes):
            pair = []
            for b in ("reference", "fast"):
                buf = torch.empty((n, 3, tiling.tile_size, tiling.tile_size))
                fp32[b].tile(data, "bench", n, tiling, buf)
                pair.append(buf)
            levels = (pair[0] - pair[1]).abs() * std * 255
            max_levels = max(max_levels, float(levels.max()))
            mean_levels_sum += float(levels.mean()) * n
        mean_levels = mean_levels_sum / sum(sizes)

        lcfg = LoaderConfig(paths=[str(out)], max_seq_len=length, position_mode=args.mode, pixel_dtype=args.pixel_dtype,
                            tiling_backend=args.tiling_backend)
        shard_files = [out / s["path"] for s in manifest["shards"] if s["format"] == lcfg.format]
        shard_bytes = sum(f.stat().st_size for f in shard_files)

        def hashing() -> float:
            paths.forget_digests()
            t0 = time.perf_counter()
            for f in shard_files:
                paths.cached_digest(f)
            return time.perf_counter() - t0

        def loader(verify: bool = True) -> tuple[float, int, int, int, float]:
            paths.forget_digests()  # every round verifies from scratch, as a first epoch does
            ld = PackedLoader(lcfg.model_copy(update={"verify_shards": verify}), tok)
            n = tokens = tiles = 0
            t0, c0 = time.perf_counter(), time.process_time()
            for batch in ld:
                n += batch.num_samples
                tokens += batch.num_tokens
                tiles += batch.num_tiles
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            if ld.stats.num_errors:
                raise SystemExit(f"loader skipped samples: {ld.stats.summary()}")
            return dt, n, tokens, tiles, cpu

        # warm-up: processor construction, first-call costs
        with Image.open(io.BytesIO(images[0][0])) as im:
            image_processor(images[0][1])(images=im, **kw)

        floors, float_floors, loads, unverified, hashes, ref_tiling, fast_tiling = [], [], [], [], [], [], []
        for _ in range(args.rounds):
            ref_tiling.append(tiling_run("reference"))
            fast_tiling.append(tiling_run("fast"))
            floors.append(floor())
            float_floors.append(float_floor())
            loads.append(loader())
            unverified.append(loader(verify=False))
            hashes.append(hashing())
        f_dt, f_tiles = min(floors)
        ff_dt = min(float_floors)[0]
        l_dt, n, tokens, l_tiles, _ = min(loads)
        u_dt = min(unverified)[0]
        h_dt = min(hashes)
        assert f_tiles == l_tiles, (f_tiles, l_tiles)
        r_dt, r_tiles = min(ref_tiling)
        x_dt, x_tiles = min(fast_tiling)
        assert r_tiles == x_tiles == l_tiles, (r_tiles, x_tiles, l_tiles)
        tiling_ratio = r_dt / x_dt
        ratio = l_dt / f_dt
        float_ratio = l_dt / ff_dt
        verify_ratio = u_dt / l_dt  # throughput on / off
        # CPU seconds of this process: on a shared machine, other processes move wall time far more than a hash does
        l_cpu, u_cpu = min(x[4] for x in loads), min(x[4] for x in unverified)
        verify_ratio_cpu = u_cpu / l_cpu
        result = {
            "samples": n, "tokens": tokens, "images": len(images), "tiles": l_tiles,
            "floor_s": round(f_dt, 3), "loader_s": round(l_dt, 3),
            "floor_samples_per_s": round(n / f_dt, 3), "loader_samples_per_s": round(n / l_dt, 3),
            "loader_tokens_per_s": round(tokens / l_dt), "loader_tiles_per_s": round(l_tiles / l_dt, 1),
            "floor_tiles_per_s": round(f_tiles / f_dt, 1),
            "ratio_loader_over_floor": round(ratio, 3), "target_ratio": 1.05, "float_floor_s": round(ff_dt, 3),
            "ratio_loader_over_float_floor": round(float_ratio, 3), "peak_rss_mib": round(peak_rss_mib()),
            "loader_no_verify_s": round(u_dt, 3), "throughput_verify_on_over_off": round(verify_ratio, 3),
            "loader_cpu_s": round(l_cpu, 3), "loader_no_verify_cpu_s": round(u_cpu, 3),
            "throughput_verify_on_over_off_cpu": round(verify_ratio_cpu, 3),
            "shard_bytes": shard_bytes, "hash_s": round(h_dt, 3), "hash_mib_per_s": round(shard_bytes / 2**20 / h_dt, 1),
            "hash_share_of_loader": round(h_dt / l_dt, 4), "loader_tiling_backend": args.tiling_backend,
            "tiling_reference_tiles_per_s_1thread": round(r_tiles / r_dt, 1),
            "tiling_fast_tiles_per_s_1thread": round(x_tiles / x_dt, 1), "tiling_fast_over_reference": round(tiling_ratio, 2),
            "fast_vs_reference_max_levels": round(max_levels, 3), "fast_vs_reference_mean_levels": round(mean_levels, 4),
            "rounds": {"floor_s": [round(x[0], 3) for x in floors], "float_floor_s": [round(x[0], 3) for x in float_floors],
                       "loader_s": [round(x[0], 3) for x in loads],
                       "loader_no_verify_s": [round(x[0], 3) for x in unverified],
                       "hash_s": [round(x, 3) for x in hashes],
                       "tiling_reference_s": [round(x[0], 3) for x in ref_tiling],
                       "tiling_fast_s": [round(x[0], 3) for x in fast_tiling], "loader_cpu_s": [round(x[4], 3) for x in loads],
                       "loader_no_verify_cpu_s": [round(x[4], 3) for x in unverified]},
        }
        print(f"floor : {f_dt:7.2f}s  {n / f_dt:6.3f} samples/s  {f_tiles / f_dt:7.1f} tiles/s  "
              "(decode + 8-bit tiles + normalisation into the batch dtype)")
        print(f"float floor: {ff_dt:7.2f}s  (decode + the processor's float output, the floor of issues 3-23)")
        print(f"loader: {l_dt:7.2f}s  {n / l_dt:6.3f} samples/s  {l_tiles / l_dt:7.1f} tiles/s  {tokens / l_dt:9.0f} tokens/s")
        print(f"loader, verify=False: {u_dt:7.2f}s  {n / u_dt:6.3f} samples/s")
        print(f"hash  : {h_dt:7.3f}s  {shard_bytes / 2**20:.1f} MiB of shards at {shard_bytes / 2**20 / h_dt:.0f} MiB/s "
              f"({100 * h_dt / l_dt:.2f}% of the loader's time)")
        print(f"ratio loader/floor = {ratio:.3f} (target <= 1.05) {'OK' if ratio <= 1.05 else 'ABOVE TARGET'}; "
              f"loader/float floor = {float_ratio:.3f}")
        print(f"throughput verify on / off = {verify_ratio:.3f} wall, {verify_ratio_cpu:.3f} CPU time "
              f"({l_cpu:.2f}s vs {u_cpu:.2f}s)")
        print(f"tiling, 1 thread (one worker): reference {r_tiles / r_dt:7.1f} tiles/s, fast {x_tiles / x_dt:7.1f} tiles/s, "
              f"fast / reference = {tiling_ratio:.2f}x (target >= 3); pixels differ by <= {max_levels:.2f} levels "
              f"(mean {mean_levels:.4f})")
        # Where the loader's time goes, so the next regression names its phase (cProfile inflates the Python-heavy
        # phases a little; the shares, not the seconds, are the guard).
        phases = phase_breakdown(lambda: loader())
        result["phases_s"] = phases
        print("loader phases (one cProfile pass): " + ", ".join(
            f"{k} {v:.2f}s ({100 * v / phases['total_s']:.1f}%)" for k, v in phases.items() if k != "total_s"))
        # the floor decodes, runs the processor and writes the tiles through the lookup (the "tiling" phase)
        beyond = phases["total_s"] - phases["decode"] - phases["processor"] - phases["tiling"]
        print(f"beyond the floor's work (decode, processor, tiling): {beyond:.2f}s = "
              f"{100 * beyond / phases['total_s']:.1f}% of the loader's profiled time")
        print(json.dumps(result))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
