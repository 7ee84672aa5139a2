"""Completion markers (`OUT/.v2pe/done/NNNNNN.json`): what a finished shard task wrote, and whether to believe it.

A marker is trusted (a rerun skips its task, `merge` builds the manifest from it) only when everything it
claims holds: it is the marker of that task (its `task` is the task's index and sample range), it lists for
every format of the build files whose sample counts add up to the task's samples, one token row per
sample, each file a plain relative path inside the build folder that no other marker lists, with the
recorded size and sha256. A marker copied over another, one whose tar was deleted and its file list
emptied, or one with rows multiplied would otherwise put samples into the manifest that are not there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .writers.atomic import file_digest

MARKER_KEYS = ("task", "files", "tokens", "rejected")
FILE_KEYS = ("path", "format", "bytes", "sha256", "num_samples")


def read_marker(path: Path):
    """The parsed marker, or None when it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def marker_problem(out: Path, marker, task: dict, formats: list[str], claimed: dict[str, int] | None = None) -> str | None:
    """Why `marker` cannot be trusted for shard task `task` ({index, start, stop}), or None.

    `claimed` (file path -> task index), when given, collects the files of the markers checked so far, so a
    file listed by two markers is caught.
    """
    if not isinstance(marker, dict):
        return "its marker is missing or not JSON"
    missing = [k for k in MARKER_KEYS if k not in marker]
    if missing:
        return f"its marker lacks {missing}"
    rejected = marker["rejected"]
    if not isinstance(rejected, dict) or not isinstance(rejected.get("counts"), dict) \
            or not isinstance(rejected.get("examples"), list) \
            or not all(isinstance(v, int) for v in rejected["counts"].values()):
        return "its marker's rejected is not {counts: {reason: int}, examples: [...]}"
    if marker["task"] != task:
        return f"its marker is for task {marker['task']!r}, not {task}"
    n = task["stop"] - task["start"]
    tokens, files = marker["tokens"], marker["files"]
    if not isinstance(tokens, list) or len(tokens) != n or not all(_token_row(r) for r in tokens):
        return f"its marker holds {len(tokens) if isinstance(tokens, list) else 'no'} token rows for {n} samples"
    if not isinstance(files, list) or not all(isinstance(f, dict) and all(k in f for k in FILE_KEYS) for f in files):
        return f"its marker's files are not a list of {{{', '.join(FILE_KEYS)}}}"
    for fmt in formats:
        got = sum(f["num_samples"] for f in files if f["format"] == fmt and isinstance(f["num_samples"], int))
        if got != n:
            return f"its marker lists {got} {fmt} samples for a task of {n}"
    for f in files:
        path = f["path"]
        if not isinstance(path, str) or os.path.isabs(path) or ".." in Path(path).parts or path.startswith("."):
            return f"its marker lists {path!r}, not a path inside the build folder"
        if claimed is not None:
            if claimed.setdefault(path, task["index"]) != task["index"]:
                return f"its marker lists {path}, which task {claimed[path]} lists too"
        full = out / path
        if full.is_symlink() or not full.is_file():
            return f"{path} is missing" if not full.is_symlink() else f"{path} is a symbolic link"
        if full.stat().st_size != f["bytes"]:
            return f"{path} holds {full.stat().st_size} bytes, its marker says {f['bytes']}"
        if file_digest(full)[1] != f["sha256"]:
            return f"{path} differs from its marker's sha256"
    return None


def _token_row(row) -> bool:
    return isinstance(row, list) and len(row) == 4 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                            for v in row)
