"""bench/bench_bins.py's split of a build's time: the floor's own work (the images' loads) apart from what a
build adds, each phase counted once, so the shares of the time beyond the floor add up to the whole."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

bench_bins = pytest.importorskip("bench_bins")
bench_long_mr = pytest.importorskip("bench_long_mr")


def test_a_profiled_build_splits_into_the_floors_loads_and_phases_that_add_up(tmp_path):
    from v2pe_common.tiling import TilingConfig, image_processor
    from v2pe_common.tokenizer import load_tokenizer
    from v2pe_data.build import build

    image_processor(TilingConfig()), load_tokenizer()  # their imports, outside the profile
    args = SimpleNamespace(length="32k", subset=None, seed=3)
    cfg = bench_long_mr.config(args, tmp_path / "b", num_samples=1, shard_size=8)
    phases = bench_long_mr.profile_phases(lambda: build(cfg, show_progress=False))
    load = phases[bench_long_mr.LOAD]
    assert load > 0 and phases["  plan"] > 0 and phases["  tar members"] > 0
    assert phases["beyond_floor_s"] == pytest.approx(phases["total_s"] - load, abs=2e-3)
    # the manifest's write in `_finish` is not the task marker's: no phase is counted twice
    assert phases["  other in the sample"] >= -2e-3 and phases["other"] >= -2e-3
    shares = bench_bins.split_shares(phases)
    assert set(shares) == {*bench_bins.SPLIT, "other"}
    assert sum(shares.values()) == pytest.approx(1.0)
    assert all(v >= -0.01 for v in shares.values()), shares
