"""Conventions users rely on: `--version`, logging left to the caller, the bundled-tokenizer warning, Hub ids
for models and tokenizers, a `datasets` floor that reads our parquet, shards the `webdataset` library reads,
transformers' LR schedule, and the attention path named once at the start of training."""

import io
import json
import logging
import os
import math
import re
import subprocess
import sys
import tarfile
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.version import Version
from PIL import Image
from typer.testing import CliRunner

from v2pe_common import tiling, tokenizer
from v2pe_common.cli_logging import configure_logging
from v2pe_common.tokenizer import bundled_tokenizer_dir, load_tokenizer
from v2pe_data.cli import app as data_app
from v2pe_train.config import TrainConfig
from v2pe_train.model import build_model, check_native_checkpoint
from v2pe_train.optim import build_optimizer, cosine_with_warmup
from v2pe_train.errors import UsageError
from v2pe_train.parallel.apply import attention_summary
from v2pe_train.train import Trainer, preflight
from tests.deadline import CLI_DEADLINE

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_WARNING = "warning: counting with the bundled tokenizer"


@pytest.fixture(scope="module")
def cli_build(tmp_path_factory):
    """A small build made through `v2pe-data build` with the default (bundled) tokenizer; its stderr too."""
    out = tmp_path_factory.mktemp("conv") / "b"
    result = CliRunner().invoke(data_app, ["build", "long_vqa", "--len", "8k", "-n", "2", "--shard-size", "2",
                                           "--seed", "3", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return out, result.stderr


@pytest.fixture
def restore_levels():
    names = ("transformers", "v2pe_common", "v2pe_data", "v2pe_train")
    saved = {n: logging.getLogger(n).level for n in names}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def fake_hub_snapshot(cache: Path, repo_id: str, files) -> Path:
    """huggingface_hub's cache layout: models--ORG--NAME/snapshots/<commit>/ plus refs/main naming the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads both variables once, at import; this process imported it long ago.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


# -- --version and --verbose ----------------------------------------------------------------------

@pytest.mark.parametrize("module,name", [("v2pe_data", "v2pe-data"), ("v2pe_train", "v2pe-train")])
def test_both_clis_print_the_installed_package_version(module, name):
    app = __import__(f"{module}.cli", fromlist=["app"]).app
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{name} {version('v2pe')}"


def test_cli_logging_shows_transformers_warnings_only_when_verbose(monkeypatch, restore_levels):
    import transformers  # noqa: F401  (already imported: the level must be set on the live logger)

    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    configure_logging(verbose=False)
    assert logging.getLogger("transformers").level == logging.ERROR
    assert logging.getLogger("v2pe_train").level == logging.WARNING
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "error"  # inherited by build and loader workers
    monkeypatch.delenv("TRANSFORMERS_VERBOSITY")
    configure_logging(verbose=True)
    assert logging.getLogger("transformers").level == logging.WARNING
    assert logging.getLogger("v2pe_data").level == logging.INFO


def test_library_code_leaves_the_transformers_log_level_as_the_caller_set_it(restore_levels):
    logging.getLogger("transformers").setLevel(logging.INFO)
    # Past the caches, so the loading code really runs in this test (a folder: through AutoTokenizer).
    tok = tokenizer._load_tokenizer.__wrapped__(str(bundled_tokenizer_dir()))
    tiling.image_processor.__wrapped__(tiling.TilingConfig())
    build_model("tiny", tok)
    assert logging.getLogger("transformers").level == logging.INFO


# -- the bundled-tokenizer warning ----------------------------------------------------------------

def test_a_build_counting_with_the_bundled_tokenizer_says_so_once_on_stderr(cli_build):
    _, stderr = cli_build
    lines = [line for line in stderr.splitlines() if line.startswith(BUNDLED_WARNING)]
    assert len(lines) == 1 and "--tokenizer <model dir>" in lines[0]


def test_a_build_with_a_given_tokenizer_does_not_warn(tmp_path):
    result = CliRunner().invoke(data_app, ["build", "long_vqa", "--len", "8k", "-n", "0", "--tokenizer",
                                           str(bundled_tokenizer_dir()), "--out", str(tmp_path / "b"), "-q"])
    assert result.exit_code == 0, result.output
    assert BUNDLED_WARNING not in result.stderr


# -- Hub ids --------------------------------------------------------------------------------------

def test_a_tokenizer_hub_id_is_found_in_the_hf_cache_offline(hub_cache):
    files = {p.name: p.read_bytes() for p in bundled_tokenizer_dir().iterdir() if p.is_file()}
    fake_hub_snapshot(hub_cache, "acme/tok-cached", files)
    tok = load_tokenizer("acme/tok-cached")
    assert tok.name == "acme/tok-cached"
    assert tok.sha256 == load_tokenizer(None).sha256 and tok.vocab_size == load_tokenizer(None).vocab_size


def test_a_model_hub_id_is_found_in_the_hf_cache_and_an_uncached_one_is_a_usage_error(hub_cache, tmp_path):
    config = json.dumps({"model_type": "internvl", "architectures": ["InternVLForConditionalGeneration"]})
    snapshot = fake_hub_snapshot(hub_cache, "acme/internvl-cached", {"config.json": config.encode()})
    assert check_native_checkpoint("acme/internvl-cached") == snapshot
    with pytest.raises(ValueError, match=r"model 'acme/not-cached' .*no local cache"):
        check_native_checkpoint("acme/not-cached")
    cfg = TrainConfig(model="acme/not-cached", data=[str(tmp_path)], out=str(tmp_path / "run"))
    with pytest.raises(UsageError, match=r"^model 'acme/not-cached' .*HF_HUB_OFFLINE=1"):
        preflight(cfg)


def test_an_uncached_hub_id_offline_is_one_error_line_not_a_traceback(tmp_path):
    empty = tmp_path / "hub"
    empty.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(empty)}
    result = subprocess.run([sys.executable, "-m", "v2pe_train", "score", str(tmp_path / "p.jsonl"), "--data",
                             str(tmp_path), "--tokenizer", "acme/missing-tok"],
                            capture_output=True, text=True, timeout=CLI_DEADLINE, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: tokenizer 'acme/missing-tok'")
    assert "no local cache" in lines[0] and "HF_HUB_OFFLINE=1" in lines[0]


# -- declared dependencies ------------------------------------------------------------------------

def test_the_datasets_floor_reads_the_parquet_features_we_write():
    """Our parquet metadata declares List(Image()); datasets gained the List type in 4.0."""
    from datasets import Features, Image as HFImage, List

    from v2pe_common.formats.parquet import HF_FEATURES

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [Requirement(d).specifier for d in deps if Requirement(d).name == "datasets"]
    floors = [Version(s.version) for s in spec if s.operator in (">=", "==", "~=")]
    assert floors and min(floors) >= Version("4.0"), spec
    assert Features.from_dict(HF_FEATURES)["images"] == List(HFImage())


def test_the_webdataset_library_reads_our_tar_shards_images_in_order(cli_build):
    import webdataset as wds

    out, _ = cli_build
    manifest = json.loads((out / "manifest.json").read_text())
    tars = [out / s["path"] for s in manifest["shards"] if s["format"] == "wds"]
    seen = 0
    for tar in tars:
        with tarfile.open(tar) as fh:
            members = {m.name: fh.extractfile(m).read() for m in fh.getmembers()}
        for sample in wds.WebDataset(str(tar), shardshuffle=False).decode("pil"):
            record = sample["json"]
            assert record["id"] == sample["__key__"]
            names = record["images"]
            assert names and sorted(k for k in sample if re.fullmatch(r"\d+\.\w+", k)) == sorted(names)
            for i, name in enumerate(names):
                assert name.startswith(f"{i}.")
                stored = Image.open(io.BytesIO(members[f"{record['id']}.{name}"])).convert("RGB")
                assert sample[name].convert("RGB").tobytes() == stored.tobytes()
            seen += 1
    assert seen == manifest["num_samples"] == 2


# -- the LR schedule ------------------------------------------------------------------------------

@pytest.mark.parametrize("warmup_ratio,min_lr_ratio", [(0.25, 0.0), (0.1, 0.05), (0.0, 0.1)])
def test_the_lr_per_step_is_transformers_cosine_with_warmup(warmup_ratio, min_lr_ratio):
    from transformers import get_cosine_schedule_with_warmup, get_cosine_with_min_lr_schedule_with_warmup

    def optimizer():
        return build_optimizer(torch.nn.Linear(2, 2), lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8)

    total = 20
    warmup = math.ceil(total * warmup_ratio)
    ours_opt, ref_opt = optimizer(), optimizer()
    ours = cosine_with_warmup(ours_opt, total_steps=total, warmup_ratio=warmup_ratio, min_lr_ratio=min_lr_ratio)
    ref = (get_cosine_with_min_lr_schedule_with_warmup(ref_opt, warmup, total, min_lr_rate=min_lr_ratio)
           if min_lr_ratio else get_cosine_schedule_with_warmup(ref_opt, warmup, total))
    for _ in range(total):
        assert ours.get_last_lr() == ref.get_last_lr()
        ours_opt.step(), ref_opt.step()
        ours.step(), ref.step()
    if warmup:
        first = cosine_with_warmup(optimizer(), total_steps=total, warmup_ratio=warmup_ratio)
        assert first.get_last_lr()[0] == 0.0  # warmup starts from zero, as in transformers


def test_a_restored_schedule_continues_with_the_same_lrs():
    def fresh():
        opt = build_optimizer(torch.nn.Linear(2, 2), lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8)
        return opt, cosine_with_warmup(opt, total_steps=10, warmup_ratio=0.3, min_lr_ratio=0.1)

    opt, sched = fresh()
    for _ in range(4):
        opt.step(), sched.step()
    state = sched.state_dict()
    expected = []
    for _ in range(6):
        opt.step(), sched.step()
        expected.append(sched.get_last_lr())
    opt2, resumed = fresh()
    resumed.load_state_dict(state)
    got = []
    for _ in range(6):
        opt2.step(), resumed.step()
        got.append(resumed.get_last_lr())
    assert got == expected


# -- the attention path, logged once --------------------------------------------------------------

def test_training_logs_the_attention_path_once_at_start(cli_build, tmp_path, caplog):
    out, _ = cli_build
    cfg = TrainConfig(model="tiny", data=[str(out)], out=str(tmp_path / "run"), max_seq_len=8192, max_steps=1)
    with caplog.at_level(logging.INFO, logger="v2pe_train.train"):
        Trainer(cfg)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("attention: ")]
    assert lines == ["attention: sdpa (cp=1, dense mask)"]


def test_the_attention_summary_names_ring_kernels_and_layout():
    cpu = torch.device("cpu")
    assert attention_summary(TrainConfig(ring_backend="auto"), 2, True, cpu) == "ring torch kernels (cp=2, zigzag)"
    assert attention_summary(TrainConfig(ring_backend="torch"), 1, True, cpu) == \
        "ring torch kernels (cp=1, varlen, one rank)"


def test_package_files_stay_under_500_lines():
    """The project's rule: a package module over 500 lines is split by concern."""
    long = {str(p.relative_to(ROOT)): n for pkg in ("v2pe_common", "v2pe_data", "v2pe_train")
            for p in sorted((ROOT / pkg).rglob("*.py")) if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


def test_library_plots_leave_the_callers_matplotlib_backend_alone(tmp_path):
    """A notebook's backend must survive writing a report: library code draws on Figure objects and never calls
    matplotlib.use (which switches the whole process)."""
    code = f"""
import matplotlib
matplotlib.use("svg")
from pathlib import Path
from v2pe_train.eval.report import write_report
from v2pe_data.distributions import plot
row = {{"id": "a", "task": "mm_niah", "subset": "retrieval-text", "num_tokens": 1500, "depth": 0.5,
        "stride": "default", "score": 1.0, "group": "m", "mmniah_task": "retrieval-text-val", "mmniah_split": "val"}}
written, _ = write_report([row], Path({str(tmp_path)!r}))
plot({{"_raw": {{"lengths": [1, 2], "depths": [0.5], "tiles": [1]}}, "tiles_per_image": {{1: 2}}}},
     Path({str(tmp_path / 'stats.png')!r}))
print(matplotlib.get_backend(), sorted(k for k in written if k != "markdown"))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=CLI_DEADLINE)
    assert r.returncode == 0, r.stderr
    backend, _, names = r.stdout.strip().partition(" ")
    assert backend == "svg", r.stdout
    assert "heatmap_default" in names and "mmniah_m_retrieval-text-val" in names
    for png in [*tmp_path.rglob("*.png")]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert (tmp_path / "stats.png").is_file() and (tmp_path / "heatmap_default.png").is_file()
