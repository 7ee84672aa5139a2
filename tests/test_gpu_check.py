"""`make gpu-check` on CPU: the dry run takes every stage's code path and writes the JSON a GPU run writes, in
the order of value, resumable (a second dry run reruns only the stage that was not ok), within a budget that
skips what does not fit as "out of time"; the 8b preset is sized without materialising its weights."""

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
TRAIN_KEYS = {"model", "params", "tokens_per_step", "step_s", "tokens_per_s", "tokens_per_s_per_gpu", "gpus",
              "params_non_embedding", "flop_shape", "flops_per_token_torchtitan", "mfu_torchtitan", "mfu_6n",
              "peak_mem_gib", "loader_wait_s_median", "num_workers", "losses", "device"}
# By value (bench/gpu_check.py says why): a loan that ends early has the kernels and the 2B figure first.
ORDER = ["env", "kernels", "train_2b_32k", "train_128k_1gpu", "ring", "test_gpu"]


def _dry_run(out: Path, work: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OUT", None)
    env.pop("GPU_BUDGET_S", None)
    return subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--out", str(out),
                           "--work", str(work), *extra], capture_output=True, text=True, timeout=CLI_DEADLINE,
                          env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """One fresh dry run, then one resumed from its report with `ring` marked timed out (the work folder,
    with its tiny data build, shared): both reports and the second run's output."""
    tmp = tmp_path_factory.mktemp("gpu_check")
    first = tmp / "first.json"
    proc = _dry_run(first, tmp / "work", "--fresh")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(first.read_text())
    edited = json.loads(first.read_text())
    edited["stages"]["ring"] = {"status": "timeout", "error": "stage ring passed its 45 s timeout", "run": 1}
    (tmp / "edited.json").write_text(json.dumps(edited))
    second = tmp / "second.json"
    proc2 = _dry_run(second, tmp / "work", "--resume", str(tmp / "edited.json"))
    assert proc2.returncode == 0, proc2.stderr[-2000:]
    return report, proc.stdout, json.loads(second.read_text()), proc2.stdout


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


def test_dry_run_writes_every_stage_in_order_with_the_gpu_keys(dry_runs):
    """`gpu_check.py --dry-run` runs all six stages on CPU, in the order of value, and records each one's
    numbers: tokens/s/GPU and both MFUs (null without CUDA, as is peak memory), torchtitan's FLOPs per token."""
    report, stdout, _, _ = dry_runs
    stages = report["stages"]
    assert list(stages) == ORDER == list(_gpu_check().STAGES)
    assert all(s["status"] == "ok" for s in stages.values()), {k: s.get("error") for k, s in stages.items()}
    assert report["pending"] == [] and len(report["runs"]) == 1 and report["runs"][0]["ran"] == ORDER
    assert stages["test_gpu"]["passed"]
    by_check = {c["check"]: max(c["max_abs_diff"].values()) for c in stages["kernels"]["checks"]}
    assert by_check["torch_fp32 vs fp64 reference"] < 1e-4
    assert by_check["torch_bf16 vs fp64 reference"] < 0.2
    assert {t["tokens"] for t in stages["ring"]["throughput"]} == {1024, 2048}
    for name in ("train_2b_32k", "train_128k_1gpu"):
        r = stages[name]
        assert TRAIN_KEYS <= set(r), name
        assert r["tokens_per_s_per_gpu"] > 0 and r["gpus"] == 1
        assert r["mfu_torchtitan"] is None and r["mfu_6n"] is None
        shape = r["flop_shape"]
        assert 0 < r["params_non_embedding"] < r["params"]  # the tiny model's token table is left out
        assert r["flops_per_token_torchtitan"] == 6 * r["params_non_embedding"] + 12 * shape["layers"] * \
            shape["heads"] * shape["head_dim"] * shape["seq_len"]
    assert stages["train_128k_1gpu"]["fits"] is True
    assert stages["train_128k_1gpu"]["reference"]["tokens_per_s_per_gpu"] == 1071
    assert "[gpu-check] train_2b_32k:" in stdout and "every stage ok" in stdout


def test_a_resumed_dry_run_reruns_only_the_stage_that_was_not_ok(dry_runs):
    """Resume: the stages ok in the previous report are kept as they were; only the timed-out one runs."""
    first, _, second, stdout = dry_runs
    assert second["runs"][1]["ran"] == ["ring"] and second["runs"][1]["resumed_from"].endswith("edited.json")
    assert second["stages"]["ring"]["status"] == "ok" and second["stages"]["ring"]["run"] == 2
    for name in ORDER:
        if name != "ring":
            assert second["stages"][name] == first["stages"][name], name
    assert second["pending"] == [] and list(second["stages"]) == ORDER
    assert "[gpu-check] kernels: kept" in stdout


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
    mod.orchestrate(_args(mod, out, budget_s=400))
    assert calls == list(mod.STAGES)
    report = json.loads(out.read_text())
    assert report["stages"]["kernels"]["status"] == "timeout"
    assert report["pending"] == list(mod.STAGES)  # none ok: every stage is still to run


def _args(mod, out, **kw):
    return mod.argparse.Namespace(**{"dry_run": True, "out": str(out), "install": None, "budget_s": 400,
                                     "work": out.parent, "resume": None, "fresh": True, **kw})


def test_the_budget_skips_what_no_longer_fits_as_out_of_time_and_says_what_is_still_to_run(tmp_path, monkeypatch):
    """Each stage here takes 50 s of a 130 s budget: env and kernels run; the 2B stage (needs 60 s) and the
    128K stage (45 s) are skipped with 30 s left, the cheaper ring stage still runs, and test_gpu is out of time."""
    mod = _gpu_check()
    now = [0.0]

    def fake_spawn(name, args, timeout):
        now[0] += 50
        return {"status": "ok"}

    monkeypatch.setattr(mod, "_clock", lambda: now[0])
    monkeypatch.setattr(mod, "_spawn", fake_spawn)
    out = tmp_path / "r.json"
    mod.orchestrate(_args(mod, out, budget_s=130))
    report = json.loads(out.read_text())
    stages = report["stages"]
    skipped = ["train_2b_32k", "train_128k_1gpu", "test_gpu"]
    assert report["runs"][0]["ran"] == ["env", "kernels", "ring"] and report["runs"][0]["out_of_time"] == skipped
    for name in skipped:
        assert stages[name]["status"] == "skipped" and stages[name]["error"].startswith("out of time"), name
    assert report["pending"] == skipped


def test_resume_takes_the_out_file_then_the_committed_report_and_never_mixes_dry_and_gpu(tmp_path, monkeypatch):
    """Without --resume, the --out file is the source; a GPU report is not resumed into a dry run (noted, and
    every stage runs), and --resume naming an unusable file stops with its path and the field."""
    mod = _gpu_check()
    calls = []
    monkeypatch.setattr(mod, "_spawn", lambda name, args, timeout: calls.append(name) or {"status": "ok"})
    monkeypatch.setattr(mod, "COMMITTED", tmp_path / "absent.json")
    out = tmp_path / "r.json"
    ok = {n: {"status": "ok", "run": 1} for n in mod.STAGES}
    out.write_text(json.dumps({"dry_run": True, "stages": {**ok, "test_gpu": {"status": "error"}}}))
    mod.orchestrate(_args(mod, out, fresh=False))
    assert calls == ["test_gpu"]
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps({"dry_run": False, "stages": ok}))
    monkeypatch.setattr(mod, "COMMITTED", gpu)
    calls.clear()
    mod.orchestrate(_args(mod, tmp_path / "r3.json", fresh=False))
    assert calls == list(mod.STAGES)
    with pytest.raises(SystemExit, match="dry_run"):
        mod.orchestrate(_args(mod, tmp_path / "r4.json", fresh=False, resume=str(gpu)))


def test_peak_flops_knows_hopper_and_nothing_else():
    mod = _gpu_check()
    assert mod.peak_flops("NVIDIA H200") == mod.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert mod.peak_flops("NVIDIA H100 PCIe") == 756e12 and mod.peak_flops("NVIDIA H100 NVL") == 835e12
    assert mod.peak_flops("cpu") is None


def test_torchtitan_flops_per_token_on_llama3_8b_at_128k():
    """torchtitan's 6 * N + 12 * L * H * Q * T on Llama 3.1 8B's shapes (32 layers, 32 heads of 128; 8.03B
    parameters, 7.50B without the 128,256 x 4096 token table) at T = 131,072: the attention term dominates."""
    mod = _gpu_check()
    n = 8_030_261_248 - 128_256 * 4096
    flops = mod.torchtitan_flops_per_token(n, 32, 32, 128, 131072)
    assert flops == 6 * n + 12 * 32 * 32 * 128 * 131072
    assert 2.0e11 < 12 * 32 * 32 * 128 * 131072 < flops < 2.6e11


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
