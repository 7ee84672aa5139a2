"""README.md is a script a new user runs top to bottom: every command block runs, in order, on a fresh copy.

The runner is scripts/readme_run.py (`V2PE_README_SCALE=full python scripts/readme_run.py` runs every block
as written); here it runs at the smoke scale, with fewer samples, steps and evaluated items.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("readme_run", ROOT / "scripts" / "readme_run.py")
readme_run = importlib.util.module_from_spec(_spec)
sys.modules["readme_run"] = readme_run
_spec.loader.exec_module(readme_run)

TEXT = """intro
```bash
echo one
```
<!-- readme-run: never needs a GPU -->
```bash
make train-32k
```
<!-- readme-run: full takes an hour -->
```python
print(2)
```
```
OUT/layout   not a command
```
"""


def test_blocks_are_read_in_order_with_the_directive_before_their_fence():
    found = readme_run.blocks(TEXT)
    assert [(b.line, b.language, b.skip, b.reason) for b in found] == [
        (2, "bash", None, ""), (6, "bash", "never", "needs a GPU"), (10, "python", "full", "takes an hour"),
        (13, "", None, "")]
    assert found[0].code == "echo one\n"


def test_which_blocks_run_at_each_scale():
    found = readme_run.blocks(TEXT)
    assert [b.runs_at("smoke") for b in found] == [True, False, False, False]
    assert [b.runs_at("full") for b in found] == [True, False, True, False]


def test_an_unclosed_block_is_an_error_naming_its_line():
    with pytest.raises(ValueError, match="README.md:2: code block never closed"):
        readme_run.blocks("x\n```bash\necho\n")


def test_the_smoke_scale_caps_samples_workers_steps_and_items_and_keeps_comments():
    code = ("v2pe-data build long_vqa --len 32k --num-samples 1000 --workers 8 --out o   # note\n"
            "v2pe-data build long_mr --recipe r.yaml --out m\n"
            "v2pe-train train --recipe t.yaml --resume --max-steps 60\n"
            "v2pe-train train --recipe t.yaml optim.lr=1e-3  # lr\n"
            "v2pe-train eval --model m --data d --limit 8\n"
            "make train-tiny   # CPU\n"
            "v2pe-data build --help\n")
    assert readme_run.scale(code, "smoke").splitlines() == [
        "v2pe-data build long_vqa --len 32k --num-samples 4 --workers 2 --out o   # note",
        "v2pe-data build long_mr --recipe r.yaml --out m --num-samples 4",
        "v2pe-train train --recipe t.yaml --resume --max-steps 4",
        "v2pe-train train --recipe t.yaml optim.lr=1e-3 optim.max_steps=2 checkpoint.save_every=2  # lr",
        "v2pe-train eval --model m --data d --limit 2",
        "make train-tiny TINY_SAMPLES=8 TINY_ARGS='optim.max_steps=2 checkpoint.save_every=2'  # CPU",
        "v2pe-data build --help"]
    assert readme_run.scale(code, "full") == code


def test_every_readme_block_left_out_says_why():
    found = readme_run.blocks((ROOT / "README.md").read_text())
    left_out = [b for b in found if b.language in readme_run.RUN_LANGUAGES and b.skip]
    assert all(b.reason for b in left_out)
    running = [b for b in found if b.runs_at("smoke")]
    # the quickstart build, data, sharing, training, inference and evaluation blocks
    assert len(running) >= 6


def test_the_readme_runs_top_to_bottom_on_a_fresh_copy(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_run.py"), "--scale", "smoke",
                           "--keep", str(tmp_path / "clone")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "blocks ran at scale smoke" in done.stdout
