"""`v2pe-data` speaks in one line: recipe values of the wrong type name their key, a damaged build is a
runtime failure (exit 1) rather than a traceback, usage errors exit 2, and skipped sources are said aloud."""

import json
import subprocess
import sys

import pytest

from v2pe_common.recipe import ConfigError, check_type
from v2pe_data.build import build
from v2pe_data.config import BuildConfig

CLI = [sys.executable, "-m", "v2pe_data"]


def run_cli(*args):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "b"
    build(BuildConfig(length=8192, num_samples=4, shard_size=2, out=str(out), seed=1), show_progress=False)
    return out


@pytest.mark.parametrize(
    "text,message",
    [
        ("formats: 3", "formats: expected list, got 3"),
        ("formats: [wds, 3]", "formats[1]: expected str, got 3"),
        ("tokenizer: 5", "tokenizer: expected str, got 5"),
        ("out: [a]", "out: expected str, got ['a']"),
        ("paste_grid: 'x'", "paste_grid: expected int, got 'x'"),
        ("strict: 'no'", "strict: expected bool, got 'no'"),
        ("workers: true", "workers: expected int, got True"),
        ("depth: .inf", "depth: expected a finite number"),
        ("sources: [{kind: docvqa, path: 3}]", "sources[0].path: expected str, got 3"),
        ("sources: [synthetic, 7]", "sources[1]: expected str or dict, got 7"),
    ],
)
def test_a_recipe_value_of_the_wrong_type_is_refused_naming_its_key(tmp_path, text, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text + "\n")
    with pytest.raises(ConfigError) as err:
        BuildConfig.from_yaml(recipe)
    assert str(err.value).startswith(f"{recipe}: ") and message in str(err.value)


def test_recipe_values_of_the_right_type_still_load(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("formats: wds,parquet\nstrict: true\ndepth: 1\npaste_grid: 2\ntokenizer: null\n")
    cfg = BuildConfig.from_yaml(recipe)
    assert cfg.formats == ["wds", "parquet"] and cfg.strict is True and cfg.depth == 1.0 and cfg.paste_grid == 2


@pytest.mark.parametrize(
    "value,annotation,expected",
    [(1, "float", 1.0), (2, "int | None", 2), (None, "str | None", None), (False, "bool", False), ("a", "str", "a")],
)
def test_check_type_accepts_what_yaml_gives_for_the_annotation(value, annotation, expected):
    out = check_type("k", value, annotation)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize(
    "value,annotation",
    [(True, "int"), ("no", "bool"), (float("nan"), "float"), (float("inf"), "float | None"), ("1", "int"),
     (None, "int"), ([1], "str")],
)
def test_check_type_refuses_lookalikes(value, annotation):
    with pytest.raises(ConfigError, match="^k: "):
        check_type("k", value, annotation)


def test_stats_on_a_damaged_build_is_one_line_naming_the_shard_exit_1(small_build, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small_build, copy)
    shard = copy / "shards" / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[:1500])  # cut inside the first sample's members
    result = run_cli("stats", str(copy))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "train-000001.tar" in lines[0]


def test_validate_reports_damage_as_a_runtime_failure_and_a_bad_argument_as_usage(small_build, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small_build, copy)
    shard = copy / "shards" / "train-000000.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))
    damaged = run_cli("validate", str(copy))
    assert damaged.returncode == 1 and "train-000000.tar" in damaged.stderr
    usage = run_cli("build", "long_vqa", "--len", "64q", "--out", str(tmp_path / "x"))
    assert usage.returncode == 2 and usage.stderr.strip().startswith("error: ")


def test_a_source_missing_from_a_mix_is_said_on_the_console(tmp_path):
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(json.dumps({"sources": [{"kind": "synthetic"},
                                              {"kind": "docvqa", "path": str(tmp_path / "no-such-copy")}]}))
    out = tmp_path / "out"
    result = run_cli("build", "long_vqa", "--recipe", str(recipe), "--len", "8k", "--num-samples", "1",
                     "--out", str(out), "-q")
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning: source")]
    assert len(warning) == 1 and "'docvqa'" in warning[0] and "no local copy" in warning[0]
    statuses = {s["name"]: s["status"] for s in json.loads((out / "manifest.json").read_text())["sources"]}
    assert statuses["synthetic"] == "available" and statuses["docvqa"].startswith("unavailable")
