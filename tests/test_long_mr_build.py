"""Long-MR end to end: `v2pe-data build long_mr` through the CLI, validated, summarised, read by the trainer's
loader unchanged and trained on by the tiny model; bad usage is one line and exit status 2.

The planner's own guarantees (needles where meta says, oracles, exact counts) are unit-tested in
test_long_mr.py; here the whole path is checked on what lands on disk. Records are read from the tars as
any webdataset consumer reads them (stdlib `tarfile`), independently of the project's own readers.

Smallest bins that hold every subset: `--len 8k` at the default 12 tiles per image, `--len 4k` with
`--max-tiles 2` (used here: the fewest tiles to decode); at `--len 2k` the prompt and needles alone pass the
bin. The 1M-token sample is built in `make test-slow` (and timed in bench/bench_long_mr.py).
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from v2pe_data.tasks.long_mr import SUBSETS
from v2pe_train import checkpoint as ckpt
from v2pe_train.config import TrainConfig
from v2pe_train.data import LoaderConfig, PackedLoader
from v2pe_train.train import train
from tests.deadline import run_with_deadline

DEADLINE = 120  # seconds for one CLI call here: a hang fails its test instead of stalling the suite
LEN, MIN_LEN, MAX_TILES = 4096, 3584, 2  # --len 4k, min-len 7/8 of it
GRID = (0.0, 0.25, 0.5, 0.75, 1.0)  # --depth 0:1:0.25
# Subsets are drawn per sample by share; with seed 5 the first 12 samples already draw all eight.
SEED, SAMPLES = 5, 16


def cli(*args: str, timeout: float = DEADLINE, peak_rss: bool = False) -> subprocess.CompletedProcess:
    """`python -m v2pe_data ARGS` in a session of its own, killed whole when it outlives `timeout`.

    With `peak_rss`, a wrapper process runs the command and prints, as the last stdout line, the peak RSS
    (KiB) of the command's process: RUSAGE_CHILDREN of a parent that has no other child.
    """
    cmd = [sys.executable, "-m", "v2pe_data", *args]
    if peak_rss:
        wrapper = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
                   "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")
        cmd = [sys.executable, "-c", wrapper, *cmd]
    return run_with_deadline(cmd, timeout, what=" ".join(args))


def records(out: Path) -> list[dict]:
    """Every sample record of a build's tars, in shard order."""
    manifest = json.loads((out / "manifest.json").read_text())
    found = []
    for shard in (s for s in manifest["shards"] if s["format"] == "wds"):
        with tarfile.open(out / shard["path"]) as tar:
            found += [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")]
    return found


@pytest.fixture(scope="module")
def mix(tmp_path_factory) -> Path:
    """A small build of all eight subsets (the default mix) over a depth grid, made through the CLI."""
    out = tmp_path_factory.mktemp("long_mr") / "mix"
    done = cli("build", "long_mr", "--len", "4k", "--max-tiles", str(MAX_TILES), "-n", str(SAMPLES),
               "--shard-size", "8", "--depth", "0:1:0.25", "--seed", str(SEED), "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{SAMPLES} samples in 2 shards (wds, parquet) -> {out}"), done.stdout
    return out


def test_the_cli_build_of_a_mix_validates_and_stats_lists_every_subset(mix):
    checked = cli("validate", str(mix))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == (f"ok: {SAMPLES} samples in 2 shards, {SAMPLES} token counts re-checked; "
                                      "parquet copies match")
    summary = cli("stats", str(mix))
    assert summary.returncode == 0, summary.stderr
    stats = json.loads(summary.stdout)
    subsets = Counter(r["subset"] for r in records(mix))
    assert set(subsets) == set(SUBSETS)
    assert stats["samples"] == SAMPLES and stats["subsets"] == dict(subsets)
    assert MIN_LEN <= stats["tokens"]["min"] <= stats["tokens"]["max"] <= LEN


def test_every_sample_is_in_its_bin_and_its_target_depth_cycles_through_the_grid(mix):
    recs = sorted(records(mix), key=lambda r: r["meta"]["sample_index"])
    assert [r["meta"]["sample_index"] for r in recs] == list(range(SAMPLES))
    for r in recs:
        meta = r["meta"]
        assert MIN_LEN <= meta["num_tokens"] <= LEN and meta["len_bin"] == "3_4", r["id"]
        assert meta["target_depth"] == GRID[meta["sample_index"] % len(GRID)], r["id"]
        assert max(meta["tiles"]) <= MAX_TILES + 1  # the thumbnail comes on top of the tiles
    assert Counter(r["meta"]["target_depth"] for r in recs) == Counter(GRID[i % len(GRID)] for i in range(SAMPLES))


def test_the_trainers_loader_reads_the_build_unchanged_with_lengths_equal_to_meta(mix):
    loader = PackedLoader(LoaderConfig(paths=[str(mix)], shuffle=False, strict=True))
    seen = {}
    for batch in loader:  # no max_seq_len: one sample per batch
        (sample_id,) = batch.ids
        seen[sample_id] = (batch.num_tokens, batch.image_tiles.tolist(), int((batch.labels != -100).sum()))
    expected = {r["id"]: r for r in records(mix)}
    assert set(seen) == set(expected) and loader.stats.counts == {}
    for sample_id, (length, tiles, supervised) in seen.items():
        meta = expected[sample_id]["meta"]
        assert length == meta["num_tokens"] and tiles == meta["tiles"], sample_id
        assert supervised > 0, sample_id  # the answer turn is what the model learns


def test_the_tiny_model_trains_three_steps_on_a_long_mr_build(mix, tmp_path):
    run = tmp_path / "run"
    result = train(TrainConfig(model="tiny", data=[str(mix)], out=str(run), max_seq_len=LEN, lr=1e-3,
                               warmup_ratio=0.0, weight_decay=0.0, max_steps=3, save_every=100, precision="fp32",
                               strict=True, seed=0), progress=False)
    assert len(result.losses) == 3 and all(math.isfinite(x) for x in result.losses), result.losses
    assert ckpt.latest_checkpoint(run).name == "step_00000003"
    assert not (run / "data_errors.json").exists()


@pytest.mark.parametrize("args, says", [
    (["--option", "subset=nope"], "subset: unknown subset 'nope'"),
    (["--depth", "0:2:0.5"], "depth: grid '0:2:0.5' needs 0 <= START <= STOP <= 1"),
    (["--source", "docvqa=/x"], "long_mr draws from its haystack"),
    (["--len", "2k"], "--len 2048 is smaller than the prompt, needles and choices"),
])
def test_bad_usage_is_one_line_exit_2_and_touches_nothing(tmp_path, args, says):
    out = tmp_path / "out"
    done = cli("build", "long_mr", *(["--len", "8k"] if "--len" not in args else []), *args, "-n", "1",
               "--out", str(out), "-q")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: ") and says in done.stderr, done.stderr
    assert not out.exists()


@pytest.mark.slow
def test_a_1m_token_sample_builds_under_the_memory_target_validates_and_every_image_decodes(tmp_path):
    """One 1M-token sample (image_counting: the most pixel work, pictures pasted into several images) built by
    the CLI with its peak RSS under 1.5 GiB, validated, then every image decoded one at a time from the tar."""
    out = tmp_path / "1m"
    done = cli("build", "long_mr", "--len", "1m", "-n", "1", "-O", "subset=image_counting", "--format", "wds",
               "--out", str(out), "-q", timeout=900, peak_rss=True)  # the tar path's memory, as measured
    assert done.returncode == 0, done.stderr
    peak_mib = int(done.stdout.strip().splitlines()[-1]) / 1024
    assert peak_mib < 1536, f"peak RSS {peak_mib:.0f} MiB"
    checked = cli("validate", str(out), timeout=900)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "ok: 1 samples in 1 shards, 1 token counts re-checked"
    manifest = json.loads((out / "manifest.json").read_text())
    (record,) = records(out)
    meta = record["meta"]
    assert 7 * 2**20 // 8 <= meta["num_tokens"] <= 2**20 and meta["len_bin"] == "896_1024"
    sizes = []
    with tarfile.open(out / manifest["shards"][0]["path"], mode="r|") as tar:  # streaming: one member at a time
        for member in tar:
            if not member.name.endswith(".json"):
                with Image.open(io.BytesIO(tar.extractfile(member).read())) as im:
                    im.load()
                    sizes.append(list(im.size))
    assert sizes == meta["image_sizes"] and len(sizes) == len(record["images"])
