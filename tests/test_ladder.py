"""The learning ladder (experiments/ladder): the trainer must learn rung a, retrieval in ~150-token text.

`test_rung_a_is_learned` is the guard this project lacked: a falling loss proves nothing about retrieval,
so the first rung is built by `v2pe-data build`, trained by `v2pe-train train` from scratch and scored by
`v2pe-train eval`, and must answer at least 90 % of its evaluation set (it reaches 100 % on seeds 0-3).
It fails when the trainer stops learning: a broken mask, labels, positions, optimiser or data order.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from experiments.ladder.config import chain, load_rung
from experiments.ladder.report import ablation_markdown, ladder_markdown
from experiments.ladder.runner import check_settings
from experiments.commands import ExperimentError
from v2pe_common.recipe import ConfigError
from tests.deadline import run_with_deadline

ROOT = Path(__file__).resolve().parents[1]


def test_rung_a_is_learned(tmp_path):
    out = tmp_path / "ladder"
    # two torch threads and build workers: the CI machine's two cores (the rung itself names one)
    proc = run_with_deadline([sys.executable, "-m", "experiments.ladder", "run", "--rung", "a", "--out", str(out),
                              "--set", "threads=2", "--set", "build_workers=2"], 900, what="ladder rung a", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    result = json.loads((out / "a" / "result.json").read_text())
    assert result["passed"] and result["accuracy"] >= 0.9, result
    assert "| a |" in (out / "LADDER.md").read_text() and "PASS" in proc.stdout
    # made by the project's own commands: a v2pe-data build, a v2pe-train run folder, a v2pe-train eval folder
    assert len(list((out / "data").glob("*/train/manifest.json"))) == 1
    assert (out / "a" / "runs" / "s0" / "run.json").is_file()
    assert (out / "a" / "final" / "s0" / "model.safetensors").is_file()
    scores = (out / "a" / "eval" / "s0" / "scores.jsonl").read_text().splitlines()
    assert len(scores) == result["settings"]["eval_samples"] == 40


def test_rungs_chain_from_scratch_to_the_experiments_task():
    names = [r.name for r in chain("d")]
    assert names == ["a", "b", "c", "d"]
    rungs = {r.name: r for r in chain("d")}
    assert rungs["a"].init == "scratch" and rungs["b"].init == "a" and rungs["d"].init == "c"
    assert rungs["a"].haystack["images"] == [0, 0] and rungs["d"].haystack["images"] == [1, 6]
    assert rungs["d"].train_len == 1024 and rungs["d"].train_on_eos and rungs["d"].eval_mode == "generate"
    # keys common to a curriculum apply to every rung of it
    assert {r.seeds[0] for r in chain("c", common={"seeds": [7]})} == {7}


def test_rung_keys_are_checked_by_name(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'stepz'"):
        load_rung("a", {"stepz": 3})
    with pytest.raises(ConfigError, match="init: rung 'a' cannot start from itself"):
        load_rung("a", {"init": "a"})
    with pytest.raises(ConfigError, match="eval_mode"):
        load_rung("a", {"eval_mode": "generate"})  # rung a trains without the end-of-turn target
    with pytest.raises(ConfigError, match="curve_every"):
        load_rung("a", {"curve_every": 10_000})
    with pytest.raises(ConfigError, match="no file"):
        load_rung("z")
    x, y = tmp_path / "x.yaml", tmp_path / "y.yaml"
    x.write_text(f"name: x\ninit: {y}\n")
    y.write_text(f"name: y\ninit: {x}\n")
    with pytest.raises(ConfigError, match="cycle"):
        chain(str(x))


def test_a_rung_folder_refuses_other_settings_but_not_more_seeds(tmp_path):
    check_settings(load_rung("a"), tmp_path / "a")
    check_settings(load_rung("a", {"seeds": [0, 1], "parallel": 2}), tmp_path / "a")
    with pytest.raises(ExperimentError, match="other settings.*lr"):
        check_settings(load_rung("a", {"lr": 0.01}), tmp_path / "a")


def _result(name: str, per_seed: dict, passed: bool, curve: dict | None = None) -> dict:
    out = {"rung": name, "description": "d", "init": "scratch", "train_len": 160, "steps": 400,
           "accuracy": sum(per_seed.values()) / len(per_seed), "per_seed": per_seed,
           "final_loss": {s: 0.5 for s in per_seed}, "threshold": 0.9, "passed": passed, "timings_s": {"train": 120}}
    if curve:
        out["curve"] = curve
        out["steps_to_threshold"] = {s: next((int(k) for k, v in c.items() if v >= 0.9), None)
                                     for s, c in curve.items()}
    return out


def test_tables_show_each_seed_the_spread_and_the_verdict():
    generated = {**_result("b", {"0": 0.1}, False), "settings": {"eval_mode": "generate"}}
    text = ladder_markdown([_result("a", {"0": 1.0, "1": 0.9}, True), generated])
    assert "| a | d | scratch | 160 | 400 | teacher-forced | 95.0 ± 7.1 | 100.0 / 90.0 | 0.500 | 2.0 | 90.0 | PASS |" \
        in text
    assert "| b | d | scratch | 160 | 400 | by generation | 10.0 |" in text
    assert "| b |" in text and text.rstrip().endswith("| fail |")
    curve = {"0": {"100": 0.2, "200": 0.95, "400": 1.0}, "1": {"100": 0.1, "200": 0.5, "400": 0.8}}
    table = ablation_markdown("p", "a", [("base", {}, _result("a-base", {"0": 1.0, "1": 0.8}, False, curve)),
                                         ("eos", {"train_on_eos": True}, _result("a-eos", {"0": 0.3}, False))])
    assert "| base | (the rung as it is) | 90.0 ± 14.1 | 100.0 / 80.0 | 0.500 | 200 / >400 | 2.0 |" in table
    assert "`train_on_eos: true`" in table and "ABLATION_p.png" in table
    assert "accuracy at L, teacher-forced." in table
