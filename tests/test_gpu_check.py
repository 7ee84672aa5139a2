"""`make gpu-check` on CPU: the dry run takes every stage's code path and writes the JSON a GPU run writes;
the 8b preset is sized without materialising its weights."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from v2pe_train.model import PRESETS, preset_parameter_count, shape_8b_config
from tests.deadline import CLI_DEADLINE

ROOT = Path(__file__).resolve().parent.parent
TRAIN_KEYS = {"model", "params", "tokens_per_step", "step_s", "tokens_per_s", "mfu", "peak_mem_gib",
              "loader_wait_s_median", "num_workers", "losses"}


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_8b_preset_has_internvl2_8b_shapes_and_size_without_allocating():
    """InternLM2-7B text shapes; ~8.08B parameters, counted on the meta device (no 32 GB of fp32 weights)."""
    vocab = 92553
    text = shape_8b_config(vocab, 0).text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads,
            text.intermediate_size) == (4096, 32, 32, 8, 14336)
    def text_params(h, layers, mlp, kv=8 * 128):  # Llama: q/o, k/v (GQA), gated MLP, 2 norms; norm, embed, lm_head
        return layers * (2 * h * h + 2 * h * kv + 3 * h * mlp + 2 * h) + h + 2 * vocab * h

    def projector(h, width=4 * 1024):  # layer norm over 4 shuffled ViT features, then two linears
        return 2 * width + width * h + h + h * h + h

    # The 2B and 8B share InternViT-300M: take it from the 2B count, then predict the 8B's exactly.
    vision = preset_parameter_count("2b", vocab) - text_params(2048, 24, 8192) - projector(2048)
    total = preset_parameter_count("8b", vocab)
    assert total == vision + projector(4096) + text_params(4096, 32, 14336)
    assert 8.0e9 < total < 8.15e9
    assert "8b" in PRESETS


def test_dry_run_writes_every_stage_with_the_gpu_keys(tmp_path):
    """`gpu_check.py --dry-run` runs all six stages on CPU and records each one's numbers (MFU and peak
    memory are null without CUDA), within an explicit deadline."""
    out = tmp_path / "check.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OUT", None)
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--out", str(out),
                           "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=CLI_DEADLINE, env=env,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    stages = report["stages"]
    assert list(stages) == ["env", "test_gpu", "kernels", "ring", "train_2b_32k", "train_128k_1gpu"]
    assert all(s["status"] == "ok" for s in stages.values()), {k: s.get("error") for k, s in stages.items()}
    assert stages["test_gpu"]["passed"]
    by_check = {c["check"]: max(c["max_abs_diff"].values()) for c in stages["kernels"]["checks"]}
    assert by_check["torch_fp32 vs fp64 reference"] < 1e-4
    assert by_check["torch_bf16 vs fp64 reference"] < 0.2
    assert {t["tokens"] for t in stages["ring"]["throughput"]} == {1024, 2048}
    for name in ("train_2b_32k", "train_128k_1gpu"):
        assert TRAIN_KEYS <= set(stages[name]), name
        assert stages[name]["tokens_per_s"] > 0 and stages[name]["mfu"] is None
    assert stages["train_128k_1gpu"]["fits"] is True
    assert "[gpu-check] train_2b_32k:" in proc.stdout


def test_128k_stage_reports_out_of_memory_as_does_not_fit(tmp_path, monkeypatch):
    """An OOM in the long-context step is a result ("does not fit"), not a crash of the check."""
    mod = _gpu_check()

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    monkeypatch.setattr(mod, "measure_training", oom)
    monkeypatch.setattr(mod, "build_data", lambda *a, **k: tmp_path)
    args = mod.argparse.Namespace(dry_run=True, work=tmp_path, workers=0, steps=1)
    res = mod.stage_train_128k_1gpu(args)
    assert res["fits"] is False and res["verdict"] == "does not fit"
    assert "out of memory" in res["error"]
    assert mod.summary_line("train_128k_1gpu", {"status": "ok", **res}) == "does not fit"


def test_a_stage_past_its_timeout_is_recorded_and_the_rest_still_run(tmp_path, monkeypatch):
    """Per-stage timeouts: a hung stage becomes {"status": "timeout"} and the next stages still run."""
    mod = _gpu_check()
    calls = []

    def fake_spawn(name, args, timeout):
        calls.append(name)
        if name == "kernels":
            return {"status": "timeout", "error": f"stage kernels passed its {timeout:.0f} s timeout"}
        return {"status": "error", "error": "not run in this test"}

    monkeypatch.setattr(mod, "_spawn", fake_spawn)
    out = tmp_path / "r.json"
    args = mod.argparse.Namespace(dry_run=True, out=str(out), install=None, budget_s=60, work=tmp_path)
    mod.orchestrate(args)
    assert calls == list(mod.STAGES)
    assert json.loads(out.read_text())["stages"]["kernels"]["status"] == "timeout"


def test_peak_flops_knows_hopper_and_nothing_else():
    mod = _gpu_check()
    assert mod.peak_flops("NVIDIA H200") == mod.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert mod.peak_flops("cpu") is None


@pytest.mark.parametrize("recipe", ["train_32k_8b.yaml", "train_128k_1gpu.yaml"])
def test_new_recipes_load(recipe):
    from v2pe_train.config import TrainConfig

    cfg = TrainConfig.from_yaml(ROOT / "recipes" / recipe, {"data": ["x"]} if "8b" in recipe else
                                {"data": ["x"], "model": "2b"})
    assert cfg.parallel.gradient_checkpointing and cfg.parallel.cp == 1
    if recipe == "train_128k_1gpu.yaml":
        assert cfg.data.max_seq_len == 131072
    else:
        assert cfg.model.name == "8b" and cfg.parallel.data_parallel == "fsdp"


def test_training_data_is_built_once_while_the_background_preparer_runs(tmp_path, monkeypatch):
    """On a GPU the data is built in the background; a stage that needs it waits for that build instead of
    starting a second one, and never reads a half-built folder."""
    import threading

    mod = _gpu_check()
    builds = []

    def fake_build(cmd, **kw):
        out = Path(cmd[cmd.index("--out") + 1])
        builds.append(out)
        out.mkdir()
        import time

        time.sleep(0.3)
        (out / "manifest.json").write_text("{}")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(mod.subprocess, "run", fake_build)
    data = tmp_path / "data_32k"
    monkeypatch.setattr(mod, "_gpu_data", lambda args: {"train_2b_32k": ("32k", 5, data, "30k")})
    (tmp_path / "preparing").touch()
    preparer = threading.Thread(target=mod.prepare_data, args=(mod.argparse.Namespace(work=tmp_path, steps=1),))
    preparer.start()
    got = mod.build_data("32k", 5, data, "30k")
    preparer.join(timeout=10)
    assert got == data and (data / "manifest.json").is_file()
    assert len(builds) == 1 and not (tmp_path / "preparing").exists()
