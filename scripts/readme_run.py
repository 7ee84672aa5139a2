"""Run README.md's code blocks top to bottom in a fresh copy of the repository, as a new user would.

    python scripts/readme_run.py                     # smoke scale (what `make test` runs)
    V2PE_README_SCALE=full python scripts/readme_run.py --keep /tmp/readme   # every block as written

Every ```bash and ```python block runs, in README order, in one folder holding the tracked (and untracked,
not ignored) files of this checkout and this checkout's `.venv`; the blocks share that folder, so a later
block reads what an earlier one wrote. A block whose fence is preceded by a line

    <!-- readme-run: never REASON -->      is not run: it needs what a test machine lacks (a GPU, model
                                           weights, the Hub), or it is the install/test step itself;
    <!-- readme-run: full REASON -->       runs only at V2PE_README_SCALE=full (too long for the suite).

At the smoke scale each command is scaled down by `scale()`: at most 4 samples a build, 2 workers, 2
training steps, 2 evaluated items. A block fails when any of its commands exits non-zero (bash -e, pipefail).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCALES = ("smoke", "full")
RUN_LANGUAGES = ("bash", "python")
_DIRECTIVE = re.compile(r"<!--\s*readme-run:\s*(never|full)\s+(.+?)\s*-->")
_FENCE = re.compile(r"^```(\S*)\s*$")

# (pattern, replacement) applied to every line of a bash block at the smoke scale.
SMOKE_SAMPLES = 4
SMOKE_STEPS = 2
SMOKE_WORKERS = 2
SMOKE_LIMIT = 2  # items an eval generates for (the tiny model on CPU: ~4 s each)


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    skip: str | None = None  # "never" or "full"
    reason: str = ""

    def runs_at(self, scale: str) -> bool:
        if self.language not in RUN_LANGUAGES or self.skip == "never":
            return False
        return self.skip != "full" or scale == "full"


def blocks(text: str) -> list[Block]:
    """Every fenced block of a Markdown text, with the directive on the line before its fence."""
    out: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"README.md:{start + 1}: code block never closed")
        directive = _DIRECTIVE.search(lines[start - 1]) if start else None
        out.append(Block(start + 1, fence.group(1), "\n".join(body) + "\n",
                         directive.group(1) if directive else None, directive.group(2) if directive else ""))
        i += 1
    return out


def _cap(flag: str, most: int):
    pattern = re.compile(rf"({re.escape(flag)}[ =])(\d+)")
    return pattern, lambda m: f"{m.group(1)}{min(int(m.group(2)), most)}"


_SMOKE_RULES = (
    _cap("--num-samples", SMOKE_SAMPLES),
    _cap("--workers", SMOKE_WORKERS),
    _cap("--max-steps", 2 * SMOKE_STEPS),  # a resume that extends a run extends it for real
    _cap("--limit", SMOKE_LIMIT),
)


def scale(code: str, scale_name: str) -> str:
    """A block's commands at a scale: as written (full), or with fewer samples, workers and steps (smoke)."""
    if scale_name == "full":
        return code
    lines = []
    for line in code.splitlines():
        for pattern, repl in _SMOKE_RULES:
            line = pattern.sub(repl, line)
        if re.match(r"\s*v2pe-data build\b", line) and "--num-samples" not in line and "--help" not in line:
            line = _append(line, f"--num-samples {SMOKE_SAMPLES}")
        if re.match(r"\s*v2pe-train train\b", line) and "--max-steps" not in line:
            line = _append(line, f"optim.max_steps={SMOKE_STEPS} checkpoint.save_every={SMOKE_STEPS}")
        if re.match(r"\s*make train-tiny\b", line):
            line = _append(line, f"TINY_SAMPLES={SMOKE_SAMPLES * 2} TINY_ARGS='optim.max_steps={SMOKE_STEPS} "
                                 f"checkpoint.save_every={SMOKE_STEPS}'")
        lines.append(line)
    return "\n".join(lines) + "\n"


def _append(line: str, extra: str) -> str:
    """Put `extra` before a trailing `# comment`, so bash still reads it."""
    code, sep, comment = line.partition("  #")
    return f"{code.rstrip()} {extra}" + (f"  #{comment}" if sep else "")


def fresh_copy(dest: Path) -> None:
    """The checkout's tracked and untracked (not ignored) files, as a clone with local edits would hold them."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src, dst = ROOT / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():  # v2pe_common/schemas -> ../schemas: a link in a clone too
            dst.symlink_to(os.readlink(src))
        elif src.is_file():
            shutil.copy2(src, dst)
    (dest / ".venv").symlink_to(ROOT / ".venv")


def run_block(block: Block, code: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    if block.language == "bash":
        argv = ["bash", "-e", "-o", "pipefail", "-c", code]
    else:
        argv = [str(ROOT / ".venv" / "bin" / "python"), "-c", code]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)


def environment(cwd: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{cwd / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("VIRTUAL_ENV", None)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--scale", choices=SCALES, default=os.environ.get("V2PE_README_SCALE", "smoke"))
    parser.add_argument("--keep", type=Path, help="run in this (new or empty) folder and keep it")
    args = parser.parse_args(argv)
    found = blocks(args.readme.read_text())
    work = args.keep or Path(tempfile.mkdtemp(prefix="readme-run-"))
    work.mkdir(parents=True, exist_ok=True)
    if any(work.iterdir()):
        parser.error(f"{work}: not empty")
    fresh_copy(work)
    env = environment(work)
    ran = 0
    try:
        for block in found:
            where = f"README.md:{block.line} ({block.language})"
            if not block.runs_at(args.scale):
                why = block.reason or "not a command block"
                print(f"-- {where}: not run: {why}", flush=True)
                continue
            code = scale(block.code, args.scale)
            began = time.perf_counter()
            done = run_block(block, code, work, env)
            took = time.perf_counter() - began
            if done.returncode:
                print(f"FAIL {where} exit {done.returncode} after {took:.1f} s\n{code}\n--- output\n"
                      f"{done.stdout[-4000:]}{done.stderr[-4000:]}", flush=True)
                return 1
            ran += 1
            print(f"ok {where} in {took:.1f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{ran} blocks ran at scale {args.scale}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
