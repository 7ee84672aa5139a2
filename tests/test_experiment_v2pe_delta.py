"""The V2PE δ experiment (experiments/v2pe_delta) runs end to end at toy size, resumes, and reports.

The toy scale trains 4 steps, so the models learn nothing: the report must say CONTROL FAILED rather than
read a length effect into chance-level numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.v2pe_delta.config import ConfigError, load_config
from experiments.v2pe_delta.report import control, summarise
from tests.deadline import run_with_deadline

ROOT = Path(__file__).resolve().parents[1]


def _run(out: Path, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """The experiment's command line; past the deadline its training and evaluation processes die with it."""
    return run_with_deadline([sys.executable, "-m", "experiments.v2pe_delta", "run", "--scale", "toy", "--out",
                              str(out), *extra], timeout, what=f"experiment {' '.join(extra)}", cwd=ROOT)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("v2pe_delta")
    proc = _run(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_toy_experiment_writes_table_heatmaps_and_a_failed_control(toy_run):
    out, proc = toy_run
    results = json.loads((out / "results.json").read_text())
    cfg = load_config("toy")
    # every model @ stride the scale names has a cell at every length, from cfg.eval_samples samples a seed
    assert sorted(results["summary"]) == sorted(f"{m}@{s}" for m in cfg.modes for s in cfg.strides[m])
    for entry in results["summary"].values():
        assert sorted(entry["lengths"]) == ["1", "2"]
        assert all(cell["n"] == cfg.eval_samples for cell in entry["lengths"].values())
    assert results["control_passed"] is False
    report = (out / "REPORT.md").read_text()
    assert "CONTROL FAILED" in report and "| v2pe_rnd@16 |" in report
    assert (out / "heatmaps.png").stat().st_size > 1000
    # the language-modelling loss by length, per model @ stride, beside the accuracy
    assert sorted(results["lm_loss"]) == sorted(results["summary"])
    assert all(0 < cell["mean"] < 20 for cells in results["lm_loss"].values() for cell in cells.values())
    assert "Language-modelling loss" in report
    # the experiment's tokenizer holds every needle name and value whole, and the data was counted with it
    from v2pe_common.tokenizer import load_tokenizer
    from v2pe_data.tasks.long_mr.needles import NAMES

    tok = load_tokenizer(str(out / "tokenizer"))
    assert all(len(tok.encode(name)) == 1 for name in NAMES[:10]) and len(tok.encode("trumpet")) == 1
    meta = json.loads((out / "data" / "train" / "build.json").read_text())
    assert str(out / "tokenizer") in json.dumps(meta)
    # the two runs trained on the same data from the same initialisation, with their own position mode
    recipes = {m: (out / "recipes" / f"{m}_s0.yaml").read_text() for m in cfg.modes}
    assert "position_mode: default" in recipes["default"] and "position_mode: v2pe_rnd" in recipes["v2pe_rnd"]
    assert all("init_s0" in r and "data/train" in r and "seed: 0" in r for r in recipes.values())
    for mode in cfg.modes:
        assert (out / "runs" / f"{mode}_s0" / "checkpoints" / f"step_{cfg.steps:08d}").is_dir()


def test_a_rerun_resumes_every_stage_without_redoing_work(toy_run):
    out, _ = toy_run
    stamp = {p: p.stat().st_mtime_ns for p in (out / "data" / "train" / "manifest.json",
                                                out / "eval" / "default_s0" / "1x" / "predictions.jsonl")}
    proc = _run(out, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trained (4 steps)" in proc.stderr and "0 evaluation(s) to run" in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp


def test_other_settings_in_the_same_folder_are_refused(toy_run):
    out, _ = toy_run
    proc = _run(out, "--set", "steps=5", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "steps" in proc.stderr


def test_a_settings_file_from_before_a_key_existed_reads_it_as_its_default(toy_run):
    out, _ = toy_run
    settings = json.loads((out / "scale.json").read_text())
    del settings["init_model"]
    (out / "scale.json").write_text(json.dumps(settings))
    proc = _run(out, "--until", "data", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_scale_keys_are_checked_by_name():
    with pytest.raises(ConfigError, match="eval_multiples"):
        load_config("toy", {"eval_multiples": [2, 4]})
    with pytest.raises(ConfigError, match="strides.v2pe_rnd"):
        load_config("toy", {"strides": {"default": ["default"], "v2pe_rnd": [3]}})
    with pytest.raises(ConfigError, match="unknown key 'stepz'"):
        load_config("toy", {"stepz": 3})
    for scale in ("toy", "cpu", "gpu"):
        load_config(scale)


def test_summary_averages_seeds_and_control_reads_each_modes_first_stride():
    cfg = load_config("toy", {"seeds": [0, 1], "control_threshold": 0.5})
    rows = []
    for seed, score in ((0, 1.0), (1, 0.0)):
        for depth in (0.0, 0.5, 1.0):
            rows.append({"mode": "default", "stride": "default", "multiple": 1, "seed": seed, "depth": depth,
                         "score": score})
            rows.append({"mode": "v2pe_rnd", "stride": "default", "multiple": 1, "seed": seed, "depth": depth,
                         "score": 1.0})
    summary = summarise(cfg, rows)
    at_l = summary["default@default"]["lengths"]["1"]
    assert at_l["mean"] == 0.5 and at_l["per_seed"] == {"0": 1.0, "1": 0.0} and at_l["n"] == 6
    assert at_l["sd"] == pytest.approx(0.7071067811865476)
    assert "2" not in at_l and summary["v2pe_rnd@16"]["lengths"] == {}
    passed, lines = control(cfg, summary)
    assert passed and lines[0].startswith("default@default at L: 50.0%")
    passed, _ = control(load_config("toy", {"seeds": [0, 1], "control_threshold": 0.6}), summary)
    assert not passed
