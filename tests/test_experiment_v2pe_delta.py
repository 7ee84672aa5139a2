"""The V2PE δ experiment (experiments/v2pe_delta): the GPU scale's every stage as a CPU dry run, through the
script a device loan runs (device.sh), resumed on a "second machine" from its packed state; the report.

The dry run trains 2 steps, so the models learn nothing: the report must say CONTROL FAILED rather than
read a length effect into chance-level numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.v2pe_delta.config import ConfigError, dry_run, load_config
from experiments.v2pe_delta.report import best_strides, control, summarise
from tests.deadline import run_with_deadline

ROOT = Path(__file__).resolve().parents[1]


def _device(work: Path, dest: Path, **env: str) -> subprocess.CompletedProcess:
    """experiments/v2pe_delta/device.sh as a loan runs it, DRY_RUN on this CPU."""
    return run_with_deadline(["bash", str(ROOT / "experiments" / "v2pe_delta" / "device.sh")], 900,
                             what="device.sh dry run", cwd=ROOT,
                             env={"DRY_RUN": "1", "WORK": str(work), "OUT": str(dest), "BUDGET_S": "900", **env})


def _run(out: Path, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_with_deadline([sys.executable, "-m", "experiments.v2pe_delta", "run", "--scale", "gpu", "--dry-run",
                              "--out", str(out), *extra], timeout, what=f"experiment {' '.join(extra)}", cwd=ROOT)


@pytest.fixture(scope="module")
def loan(tmp_path_factory):
    """The first loan: every stage of the GPU scale at toy size; its results packed into $OUT."""
    root = tmp_path_factory.mktemp("v2pe_delta")
    proc = _device(root / "work", root / "out")
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    return root, proc


def test_the_gpu_scale_runs_every_stage_and_reports_a_failed_control(loan):
    root, _ = loan
    work, dest = root / "work", root / "out"
    results = json.loads((dest / "results.json").read_text())
    cfg = dry_run(load_config("gpu"))
    assert results["scale"] == "gpu-dry-run" and results["incomplete_runs"] == []
    # every model @ stride the scale names has a cell at every length, from cfg.eval_samples samples a seed
    assert sorted(results["summary"]) == sorted(f"{m}@{s}" for m in cfg.modes for s in cfg.strides[m])
    for entry in results["summary"].values():
        assert sorted(entry["lengths"]) == ["1", "2"]
        assert all(cell["n"] == cfg.eval_samples for cell in entry["lengths"].values())
    assert results["control_passed"] is False
    report = (dest / "REPORT.md").read_text()
    assert "CONTROL FAILED" in report and "| v2pe_rnd@16 |" in report and "best inference stride" in report
    # text and image needles are reported apart too
    assert set(results["by_subset"]["default@default"]) == {"text_retrieval", "image_retrieval"}
    assert "| default@default | image_retrieval |" in report
    assert (dest / "heatmaps.png").stat().st_size > 1000
    assert sorted(results["lm_loss"]) == sorted(results["summary"])
    # both modes of a seed start from the same pretrain rung b model (text only), trained on image needles too
    assert [p["rung"] for p in results["pretrain"]] == ["a", "b"]
    recipes = {m: (work / "recipes" / f"{m}_s0.yaml").read_text() for m in cfg.modes}
    assert all("pretrain/b/final/s0" in r and "data/train" in r and "seed: 0" in r for r in recipes.values())
    assert "position_mode: default" in recipes["default"] and "position_mode: v2pe_rnd" in recipes["v2pe_rnd"]
    meta = json.loads((work / "data" / "train" / "manifest.json").read_text())
    assert meta["args"]["options"]["subset"] == "text_retrieval,image_retrieval"
    # the GPU scale's model shape, on the CPU
    config = json.loads((work / "pretrain" / "b" / "final" / "s0" / "config.json").read_text())
    assert config["text_config"]["hidden_size"] == 64 and config["vision_config"]["num_hidden_layers"] == 2
    assert config["vision_config"]["hidden_size"] == 64


def test_a_second_loan_resumes_from_the_packed_state_without_training_again(loan):
    root, _ = loan
    state = root / "out" / "v2pe_delta_gpu_state.tar"
    assert 0 < state.stat().st_size < 4 * 2**20  # carried back by the device tool (64 MiB, 16 MiB a file)
    proc = _device(root / "work2", root / "out2", STATE=str(state))
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    log = (root / "out2" / "run.log").read_text()
    assert "no pretraining needed" in log and "results complete, no training needed" in log
    assert "0 evaluation(s) to run" in log
    assert not (root / "work2" / "runs").exists() and not (root / "work2" / "pretrain").exists()
    first = json.loads((root / "out" / "results.json").read_text())["summary"]
    assert json.loads((root / "out2" / "results.json").read_text())["summary"] == first


def test_other_settings_in_the_same_folder_are_refused(loan):
    root, _ = loan
    proc = _run(root / "work", "--set", "lr=0.01", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "(lr)" in proc.stderr


def test_scale_keys_are_checked_by_name():
    with pytest.raises(ConfigError, match="eval_multiples"):
        load_config("cpu", {"eval_multiples": [2, 4]})
    with pytest.raises(ConfigError, match="strides.v2pe_rnd"):
        load_config("cpu", {"strides": {"default": ["default"], "v2pe_rnd": [3]}})
    with pytest.raises(ConfigError, match="unknown key 'stepz'"):
        load_config("cpu", {"stepz": 3})
    with pytest.raises(ConfigError, match="pretrain: rung 'c' must be text-only"):
        load_config("cpu", {"pretrain": "c"})  # position modes would differ on its images
    for scale in ("cpu", "gpu"):
        assert [r.name for r in load_config(scale).pretrain_chain()] == ["a", "b"]
    # the experiment's seeds and model shape apply to its pretrain rungs
    chain = load_config("gpu").pretrain_chain()
    assert all(r.seeds == [0, 1] and r.vision_hidden_size == 64 and r.device == "cuda" for r in chain)


def _rows(mode: str, stride: str, multiple: int, seed: int, score: float) -> list[dict]:
    return [{"mode": mode, "stride": stride, "multiple": multiple, "seed": seed, "depth": d, "score": score}
            for d in (0.0, 0.5, 1.0)]


def test_summary_averages_seeds_and_control_needs_every_seed_at_l():
    cfg = load_config("cpu", {"seeds": [0, 1], "control_threshold": 0.5,
                              "strides": {"default": ["default", 16], "v2pe_rnd": ["default", 16]}})
    rows = _rows("default", "default", 1, 0, 1.0) + _rows("default", "default", 1, 1, 0.0)
    rows += _rows("v2pe_rnd", "default", 1, 0, 1.0) + _rows("v2pe_rnd", "default", 1, 1, 1.0)
    summary = summarise(cfg, rows)
    at_l = summary["default@default"]["lengths"]["1"]
    assert at_l["mean"] == 0.5 and at_l["per_seed"] == {"0": 1.0, "1": 0.0} and at_l["n"] == 6
    assert at_l["sd"] == pytest.approx(0.7071067811865476)
    assert "2" not in summary["default@default"]["lengths"] and summary["v2pe_rnd@16"]["lengths"] == {}
    passed, lines = control(cfg, summary)  # the mean is 50 %, but seed 1 is at 0 %
    assert not passed and lines[0] == "default@default at L: seed 0 100.0%, seed 1 0.0% (not all >= 50%)"
    passed, lines = control(cfg, summarise(cfg, rows[3:]))  # seed 0 of default missing: one seed is not two
    assert not passed and "only 1 seed(s) complete" in lines[0]


def test_each_model_gets_its_own_best_stride_beyond_l():
    cfg = load_config("cpu", {"seeds": [0], "eval_multiples": [1, 2, 4],
                              "strides": {"default": ["default", 16], "v2pe_rnd": ["default", 64, 16]}})
    rows = []
    for mode, stride, score in (("default", "default", 0.2), ("default", "16", 0.9), ("v2pe_rnd", "default", 0.3),
                                ("v2pe_rnd", "64", 1.0), ("v2pe_rnd", "16", 0.95)):
        for m in (1, 2, 4):
            rows += _rows(mode, stride, m, 0, score)
    assert best_strides(cfg, summarise(cfg, rows)) == {"default": "16", "v2pe_rnd": "64"}
