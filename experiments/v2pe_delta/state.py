"""Which runs are finished, and the small state that carries finished work from one machine to the next.

A run is complete when every evaluation length holds its scores at every stride and its target loss: then its
model is needed no more, its training and pretraining are skipped on a rerun, and its results are all the
report reads. `pack` writes those results (plus the settings and timings) into one tar of a few hundred KB;
`unpack` puts them into a fresh experiment folder. A GPU loan ends after minutes: the data (deterministic
for its seeds) is rebuilt, unfinished runs train again from their start model, finished ones are kept.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from .. import commands as cmds
from .config import ExperimentConfig
from .stages import complete_runs, eval_folder

SETTINGS_FILES = ("scale.json", "timings.json")
RESULT_FILES = ("scores.jsonl", "predictions.jsonl", "lm_loss.json")


def state_files(cfg: ExperimentConfig, out: Path) -> list[Path]:
    """The files `pack` keeps: settings, timings, and every result file of the complete runs."""
    files = [out / name for name in SETTINGS_FILES if (out / name).is_file()]
    for run in complete_runs(cfg, out):
        for m in sorted(set(cfg.eval_multiples)):
            folder = eval_folder(out, run, m)
            files += [p for p in sorted(folder.iterdir()) if p.is_file() and (p.name in RESULT_FILES
                                                                           or p.suffix in (".json", ".md"))]
        log = out / "runs" / run / "log.jsonl"
        if log.is_file():
            files.append(log)
    return files


def pack(cfg: ExperimentConfig, out: Path, dest: Path) -> tuple[Path, int]:
    """Write the state tar (atomically); returns (path, number of complete runs in it)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    with tarfile.open(tmp, "w") as tar:
        for path in state_files(cfg, out):
            tar.add(path, arcname=str(path.relative_to(out)), recursive=False)
    tmp.replace(dest)
    return dest, len(complete_runs(cfg, out))


def unpack(source: Path, out: Path) -> int:
    """Extract a state tar into `out` (only regular files, only inside it); returns the files written."""
    written = 0
    with tarfile.open(source) as tar:
        for member in tar.getmembers():
            target = (out / member.name).resolve()
            if not member.isfile() or out.resolve() not in target.parents:
                raise cmds.ExperimentError(f"{source}: member {member.name!r} is not a file inside the experiment")
            target.parent.mkdir(parents=True, exist_ok=True)
            data = tar.extractfile(member).read()
            with open(target, "wb") as fh:
                fh.write(data)
            written += 1
    return written
