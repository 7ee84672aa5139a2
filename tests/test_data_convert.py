"""`v2pe-data convert OUT --to FORMATS`: a finished build gains formats without being rebuilt.

The converted folder is byte for byte the folder of a build that asked for the formats from the start
(shards, images, merged annotations, markers, build.json, manifest.json, the card); a killed convert leaves
the old manifest valid and a rerun finishes; bad folders and formats are refused in one line.
"""

from __future__ import annotations

import json

import pytest
from cli_invoke import invoke
from golden_builds import file_hashes

from v2pe_data import convert as convert_module
from v2pe_data.build import build, merge
from v2pe_data.cli import app
from v2pe_data.config import BuildConfig
from v2pe_data.validate import validate_build

LONG_MR = dict(task="long_mr", length=4096, min_length=3584, max_tiles=2, options={"subset": ["image_retrieval"]})
CASES = {  # (build arguments, formats added)
    "long_vqa": (dict(length=4096, min_length=1024, num_samples=4, shard_size=2, seed=31), ["parquet", "internvl"]),
    "byte_capped": (dict(length=4096, min_length=1024, num_samples=4, shard_size="200KB", seed=32), ["parquet"]),
    "long_mr": ({**LONG_MR, "num_samples": 3, "shard_size": 2, "seed": 33}, ["parquet", "internvl", "mmniah"]),
}


def published(out):
    """sha256 of every file but the lock files (a sharded folder keeps one per shard index)."""
    return {path: digest for path, digest in file_hashes(out).items() if not path.startswith(".v2pe/lock")}


def make(out, formats, **args):
    return build(BuildConfig.from_dict({**args, "formats": formats, "out": str(out)}), show_progress=False)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_converted_build_is_byte_identical_to_a_build_that_asked_for_the_formats(case, tmp_path):
    args, added = CASES[case]
    converted, direct = tmp_path / "converted", tmp_path / "direct"
    before = make(converted, ["wds"], **args)
    code, output = invoke(app, "convert", converted, "--to", ",".join(added))
    assert code == 0, output
    assert f"added {', '.join(added)} to {before['num_samples']} samples" in output
    make(direct, ["wds", *added], **args)
    assert file_hashes(converted) == file_hashes(direct)  # every file, the card and manifest included
    manifest = json.loads((converted / "manifest.json").read_text())
    assert manifest["build_id"] == before["build_id"] and manifest["formats"] == ["wds", *added]
    assert validate_build(converted, check_images=False)["copies"]


def test_a_sharded_build_merged_then_converted_equals_the_one_machine_build(tmp_path):
    args, added = CASES["long_vqa"]
    sharded, direct = tmp_path / "sharded", tmp_path / "direct"
    for index in range(2):
        make(sharded, ["wds"], **args, num_shards=2, shard_index=index)
    merge(sharded)
    assert invoke(app, "convert", sharded, "--to", "parquet,internvl", "-q")[0] == 0
    make(direct, ["wds", *added], **args)
    assert published(sharded) == published(direct)


@pytest.fixture
def wds_only(tmp_path):
    out = tmp_path / "b"
    make(out, ["wds"], **CASES["long_vqa"][0])
    return out


def test_a_killed_convert_leaves_the_old_manifest_valid_and_a_rerun_finishes(wds_only, tmp_path, monkeypatch):
    out = wds_only
    manifest, ident = (out / "manifest.json").read_bytes(), (out / "build.json").read_bytes()
    real = convert_module._convert_task
    calls = []

    def killed_in_the_second_task(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a kill between two shard tasks
        return real(*args, **kwargs)

    monkeypatch.setattr(convert_module, "_convert_task", killed_in_the_second_task)
    with pytest.raises(KeyboardInterrupt):
        convert_module.convert(out, ["parquet", "internvl"], show_progress=False)
    assert (out / "manifest.json").read_bytes() == manifest and (out / "build.json").read_bytes() == ident
    assert validate_build(out, check_images=False)["samples"] == 4

    failing = _fails_on("manifest.json", convert_module.write_json_atomic)
    monkeypatch.setattr(convert_module, "write_json_atomic", failing)
    with pytest.raises(OSError):  # killed as the new manifest is written: the old one stays
        convert_module.convert(out, ["parquet", "internvl"], show_progress=False)
    assert (out / "manifest.json").read_bytes() == manifest
    assert validate_build(out, check_images=False)["samples"] == 4

    monkeypatch.undo()
    calls.clear()
    monkeypatch.setattr(convert_module, "_convert_task", killed_in_the_second_task)
    convert_module.convert(out, ["parquet", "internvl"], show_progress=False)
    assert not calls  # every task was converted before: the rerun only finishes
    direct = tmp_path / "direct"
    make(direct, ["wds", "parquet", "internvl"], **CASES["long_vqa"][0])
    assert file_hashes(out) == file_hashes(direct)


def _fails_on(name, write):
    def write_unless(path, obj):
        if path.name == name:
            raise OSError(28, "No space left on device", str(path))
        write(path, obj)
    return write_unless


def test_formats_already_there_are_said_and_left_alone(wds_only):
    assert invoke(app, "convert", wds_only, "--to", "parquet", "-q")[0] == 0
    before = file_hashes(wds_only)
    code, output = invoke(app, "convert", wds_only, "--to", "wds,parquet")
    assert code == 0 and output.strip() == f"{wds_only} already holds wds, parquet; left as it is"
    assert file_hashes(wds_only) == before


def test_convert_refuses_what_it_cannot_do_in_one_line(wds_only, tmp_path):
    half = tmp_path / "half"
    make(half, ["wds"], **CASES["long_vqa"][0], num_shards=2, shard_index=0)  # not merged: no manifest
    for args, words in (
        ([tmp_path / "nothing"], "is not a finished build (no build.json)"),
        ([half], "is not a finished build (no manifest.json)"),
        ([wds_only, "--to", "zip"], "--to: unknown format 'zip'"),
        ([wds_only, "--to", "mmniah"], "format 'mmniah' holds only long_mr records, not task 'long_vqa'"),
    ):
        argv = [*args] if "--to" in args else [*args, "--to", "parquet"]
        code, output = invoke(app, "convert", *argv)
        lines = output.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], output
    assert json.loads((wds_only / "manifest.json").read_text())["formats"] == ["wds"]


def test_convert_shows_a_progress_bar_over_samples(wds_only):
    code, output = invoke(app, "convert", wds_only, "--to", "parquet")
    assert code == 0 and "convert to parquet" in output and "4/4" in output


def test_a_build_rerun_with_other_formats_points_at_convert(wds_only):
    args = CASES["long_vqa"][0]
    code, output = invoke(app, "build", "long_vqa", "--len", "4k", "--min-len", "1k", "-n", args["num_samples"],
                          "--shard-size", args["shard_size"], "--seed", args["seed"], "--out", wds_only,
                          "--format", "wds,parquet", "-q")
    assert code == 2 and f"v2pe-data convert {wds_only} --to" in output, output


def test_a_convert_that_ended_while_another_waited_keeps_its_formats(wds_only, monkeypatch):
    """Convert B checks its arguments, then convert A (parquet) runs to its end before B takes the lock: B
    reads the manifest again under the lock and adds internvl beside parquet, dropping neither."""
    real, calls = convert_module.plan_formats, []

    def plan(manifest, requested):
        calls.append(list(requested))
        if len(calls) == 1:
            convert_module.convert(wds_only, ["parquet"], show_progress=False)
        return real(manifest, requested)

    monkeypatch.setattr(convert_module, "plan_formats", plan)
    convert_module.convert(wds_only, ["internvl"], show_progress=False)
    manifest = json.loads((wds_only / "manifest.json").read_text())
    assert manifest["formats"] == ["wds", "parquet", "internvl"]
    assert json.loads((wds_only / "build.json").read_text())["args"]["formats"] == manifest["formats"]
    assert {s["format"] for s in manifest["shards"]} >= {"wds", "parquet", "internvl"}
    validate_build(wds_only)
