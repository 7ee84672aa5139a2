"""Refactors of planning, writing and reading change no byte: fixed Long-VQA builds (concat and paste, all
three formats, byte-capped parts) reproduce the sha256 of every output file recorded before the task and
format plug-in step."""

import json

import pytest

from golden_builds import GOLDEN, file_hashes, run_builds, versions  # noqa: F401


def test_fixed_long_vqa_builds_reproduce_every_recorded_byte(tmp_path):
    recorded = json.loads(GOLDEN.read_text())
    if recorded["versions"] != versions():
        pytest.skip(f"bytes were pinned with {recorded['versions']}; this environment has {versions()}")
    got = run_builds(tmp_path)
    for name, files in recorded["builds"].items():
        assert sorted(got[name]) == sorted(files), f"{name}: other files"
        changed = [path for path, digest in files.items() if got[name][path] != digest]
        assert not changed, f"{name}: bytes changed in {changed}"
