"""Refactors of planning, writing and reading change no byte: fixed Long-VQA builds (concat and paste, all
three formats, byte-capped parts) reproduce the sha256 of every output file recorded before the task and
format plug-in step."""

import json
import os
import re
from pathlib import Path

import pytest

from golden_builds import GOLDEN, file_hashes, run_builds, versions  # noqa: F401


def test_fixed_long_vqa_builds_reproduce_every_recorded_byte(tmp_path):
    recorded = json.loads(GOLDEN.read_text())
    if recorded["versions"] != versions():
        why = f"bytes were pinned with {recorded['versions']}; this environment has {versions()}"
        if os.environ.get("CI"):  # CI installs from the lock, which holds the pinned versions: never skip there
            pytest.fail(f"{why}: install with `make install` (constraints.txt)")
        pytest.skip(why)
    got = run_builds(tmp_path)
    for name, files in recorded["builds"].items():
        assert sorted(got[name]) == sorted(files), f"{name}: other files"
        changed = [path for path, digest in files.items() if got[name][path] != digest]
        assert not changed, f"{name}: bytes changed in {changed}"


def test_the_lock_installs_the_versions_the_golden_bytes_were_pinned_with():
    """`make install` (and so CI) installs constraints.txt, whose pins are the golden file's versions."""
    root = Path(__file__).resolve().parents[1]
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (root / "constraints.txt").read_text(), re.M))
    pins = {k.lower().replace("_", "-"): v for k, v in pins.items()}
    recorded = json.loads(GOLDEN.read_text())["versions"]
    assert {k: pins.get(k) for k in recorded if k != "v2pe"} == {k: v for k, v in recorded.items() if k != "v2pe"}
    assert pins["torch"] == "2.13.0"
    install = (root / "Makefile").read_text().split("\ninstall:")[1].split("\n\n")[0]
    assert install.count("-c $(CONSTRAINTS)") == 2 and "CONSTRAINTS ?= constraints.txt" in (root / "Makefile").read_text()
    assert "make install" in (root / ".ci" / "run").read_text()
