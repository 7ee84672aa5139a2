"""Scale-out builds: shard runs (`--num-shards N --shard-index I`, or a Slurm array's variables) into one
shared folder, then `merge`, give the same bytes as a one-machine build; the folder lock lets shard runs
work side by side but never beside a one-machine build or a merge; `merge` refuses an incomplete build
naming the tasks it lacks. The same through Ray in local mode is in `make test-slow` (it needs the ray extra).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from v2pe_common.buildfolder import DONE_DIR, unlock
from v2pe_data.build import BuildError, _locks, build, merge
from v2pe_data.cli import shard_flags
from v2pe_data.config import BuildConfig, ConfigError
from tests.deadline import CLI_DEADLINE, run_with_deadline

DEADLINE = CLI_DEADLINE  # seconds for one CLI call: a hang fails its test instead of stalling the suite
# 6 samples in shard tasks of 2: three tasks, one per shard index when N = 3; every format, so the
# finalize steps (InternVL meta.json, ...) are part of what must match.
ARGS = dict(length=8192, num_samples=6, shard_size=2, seed=3, formats="wds,parquet,internvl")


def cfg(out: Path, **kw) -> BuildConfig:
    return BuildConfig(**{**ARGS, "out": str(out), **kw})


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m v2pe_data ARGS` in a session of its own, killed whole when it outlives DEADLINE."""
    return run_with_deadline([sys.executable, "-m", "v2pe_data", *args], DEADLINE, what=" ".join(args), env=env or {})


def tree(out: Path) -> dict[str, str]:
    """sha256 of every file under `out` except the lock files (empty, and named after the run that took them)."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and not p.name.startswith("lock")}


@pytest.fixture(scope="module")
def one_machine(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scale") / "one"
    build(cfg(out), show_progress=False)
    return out


def test_three_shard_runs_then_merge_equal_the_one_machine_build_byte_for_byte(one_machine, tmp_path):
    out = tmp_path / "sharded"
    part = build(cfg(out, num_shards=3, shard_index=0), show_progress=False)
    assert part == {"shard_index": 0, "num_shards": 3, "tasks": 1, "written": 1}
    assert not (out / "manifest.json").exists()  # no manifest until merge
    with pytest.raises(BuildError, match=r"2 of 3 shard task\(s\) .* \(task 1: .*; task 2: .*\)"):
        merge(out)
    assert not (out / "manifest.json").exists()
    build(cfg(out, num_shards=3, shard_index=1, workers=2), show_progress=False)
    # the last index as a Slurm array task with ids 1-3 would run it: index = TASK_ID - TASK_MIN
    slurm = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3"}
    done = cli("build", "long_vqa", "--len", "8192", "-n", "6", "--shard-size", "2", "--seed", "3",
               "--format", "wds,parquet,internvl", "--out", str(out), "-q", env=slurm)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("shard index 2 of 3: 1 shard task(s) done"), done.stdout
    merged = cli("merge", str(out))
    assert merged.returncode == 0, merged.stderr
    files = tree(out)
    assert {"manifest.json", "README.md", "build.json", "internvl/meta.json"} <= set(files), sorted(files)
    assert files == tree(one_machine)


def test_merge_names_a_task_whose_file_no_longer_matches_its_marker(one_machine, tmp_path):
    out = tmp_path / "tampered"
    for i in range(3):
        build(cfg(out, num_shards=3, shard_index=i), show_progress=False)
    marker = json.loads((out / DONE_DIR / "000001.json").read_text())
    shard = out / marker["files"][0]["path"]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1  # same size, other bytes: only the hash can tell
    shard.write_bytes(bytes(data))
    done = cli("merge", str(out))
    assert done.returncode == 1 and not (out / "manifest.json").exists()
    assert done.stderr.count("\n") == 1 and "(task 1: shards/train-000001.tar differs" in done.stderr, done.stderr
    build(cfg(out, num_shards=3, shard_index=1), show_progress=False)  # the rerun of that index repairs it
    merge(out)
    assert tree(out) == tree(one_machine)


def test_shard_runs_lock_side_by_side_but_never_beside_a_one_machine_build_or_a_merge(tmp_path):
    out = tmp_path / "locks"
    first = _locks(out, cfg(out, num_shards=3, shard_index=0))
    try:
        second = _locks(out, cfg(out, num_shards=3, shard_index=1))  # another index: allowed at once
        unlock(second)
        with pytest.raises(BuildError, match="another build is writing") as same:
            _locks(out, cfg(out, num_shards=3, shard_index=0))  # the same index twice: refused
        assert same.value.usage
        with pytest.raises(BuildError, match="another build is writing"):
            _locks(out, cfg(out))  # a one-machine build (or a merge) sweeps temporaries: never beside shard runs
    finally:
        unlock(first)
    unlock(_locks(out, cfg(out)))  # free again once the shard runs end


def test_slurm_array_variables_give_the_shard_and_bad_values_name_the_variable():
    assert shard_flags(None, None, {}) == {}
    env = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "8"}
    assert shard_flags(None, None, env) == {"num_shards": 8, "shard_index": 7}
    assert shard_flags(None, None, {**env, "SLURM_ARRAY_TASK_MIN": "1"}) == {"num_shards": 8, "shard_index": 6}
    assert shard_flags(4, 2, env) == {"num_shards": 4, "shard_index": 2}  # flags win
    with pytest.raises(ConfigError, match=r"\$SLURM_ARRAY_TASK_ID: expected an integer, got 'x'"):
        shard_flags(None, None, {"SLURM_ARRAY_TASK_ID": "x"})


def test_scale_out_keys_are_checked_and_do_not_change_the_build_identity(tmp_path):
    assert cfg(tmp_path).identity() == cfg(tmp_path, num_shards=3, shard_index=2, executor="ray").identity()
    with pytest.raises(ConfigError, match=r"shard_index: must lie in \[0, num_shards=3\), got 3"):
        cfg(tmp_path, num_shards=3, shard_index=3)
    with pytest.raises(ConfigError, match="executor: choose one of"):
        cfg(tmp_path, executor="spark")


def test_merge_of_a_folder_without_a_build_is_one_line_exit_2(tmp_path):
    done = cli("merge", str(tmp_path))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "holds no v2pe build" in done.stderr


def test_the_ray_executor_without_ray_installed_is_a_usage_error_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where the extra is absent
    with pytest.raises(BuildError, match=r"--executor ray needs Ray: pip install 'v2pe\[ray\]'") as err:
        build(cfg(tmp_path / "noray", executor="ray"), show_progress=False)
    assert err.value.usage and not (tmp_path / "noray").exists()  # refused before the folder is touched


@pytest.mark.slow
def test_a_build_on_ray_in_local_mode_equals_the_one_machine_build(one_machine, tmp_path):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    out = tmp_path / "ray"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        build(cfg(out, executor="ray"), show_progress=False)
    finally:
        ray.shutdown()
    assert tree(out) == tree(one_machine)


def _sharded(out: Path) -> None:
    for i in range(3):
        build(cfg(out, num_shards=3, shard_index=i), show_progress=False)


@pytest.mark.parametrize("tamper,why", [
    ("emptied", r"task 1: its marker lists 0 wds samples for a task of 2"),
    ("copied", r"task 1: its marker is for task \{'index': 0"),
    ("multiplied", r"task 1: its marker holds 100 token rows for 2 samples"),
    ("keyless", r"task 1: its marker lacks \['rejected'\]"),
    ("escaping", r"task 1: its marker lists '../outside.tar', not a path inside the build folder"),
])
def test_merge_verifies_each_marker_against_its_task_and_files(tmp_path, tamper, why):
    out = tmp_path / tamper
    _sharded(out)
    path = out / DONE_DIR / "000001.json"
    marker = json.loads(path.read_text())
    if tamper == "emptied":  # its tar deleted and the marker made to list nothing
        for f in marker["files"]:
            (out / f["path"]).unlink()
        marker["files"] = []
    elif tamper == "copied":
        marker = json.loads((out / DONE_DIR / "000000.json").read_text())
    elif tamper == "multiplied":
        marker["tokens"] = marker["tokens"] * 50
    elif tamper == "keyless":
        del marker["rejected"]
    else:
        marker["files"][0]["path"] = "../outside.tar"
    path.write_text(json.dumps(marker))
    with pytest.raises(BuildError, match=why):
        merge(out)
    assert not (out / "manifest.json").exists()
    done = cli("merge", str(out))
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
