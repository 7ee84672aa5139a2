"""The project's own command lines as the experiments run them: build, train, export, eval.

Each helper returns or runs a `v2pe-data` / `v2pe-train` command as a subprocess of this interpreter, so an
experiment exercises exactly what users run. Every step resumes: a build folder with a manifest is built,
a run folder resumes from its last checkpoint, an eval folder resumes line by line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from v2pe_common.buildfolder import MANIFEST_FILE

from .stage_config import VISION_HEAD_DIM, StageConfig

POLL_SECONDS = 10.0


class ExperimentError(RuntimeError):
    """A step failed; the message names the step, the command's log and its last lines."""


def tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def env(cfg: StageConfig) -> dict:
    out = dict(os.environ)
    threads = str(cfg.threads)
    out.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, TOKENIZERS_PARALLELISM="false")
    return out


def run(cmd: list[str], log: Path, what: str, environ: dict) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=environ)
    if proc.returncode:
        raise ExperimentError(f"{what} failed (exit {proc.returncode}); log {log}:\n{tail(log)}")


def run_many(jobs: list[tuple[str, list[str], Path]], cfg: StageConfig, progress: Callable[[str], str],
             say: Callable[[str], None]) -> None:
    """Run (name, command, log) jobs, `cfg.parallel` at a time, printing one progress line per poll."""
    pending, running = list(jobs), {}
    environ = env(cfg)
    last = 0.0
    while pending or running:
        while pending and len(running) < cfg.parallel:
            name, cmd, log = pending.pop(0)
            log.parent.mkdir(parents=True, exist_ok=True)
            fh = open(log, "w")
            running[name] = (subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=environ), fh, log)
        time.sleep(0.2)
        for name, (proc, fh, log) in list(running.items()):
            if proc.poll() is None:
                continue
            fh.close()
            del running[name]
            if proc.returncode:
                for p, f, _ in running.values():
                    p.terminate()
                    p.wait()
                    f.close()
                raise ExperimentError(f"{name} failed (exit {proc.returncode}); log {log}:\n{tail(log)}")
            say(f"  {name}: done")
        if running and time.monotonic() - last >= POLL_SECONDS:
            last = time.monotonic()
            say("  " + " | ".join(progress(name) for name in running))


# --- tokenizer and initial model -----------------------------------------------------------------------

def make_tokenizer(folder: Path) -> Path:
    """The bundled tokenizer plus every needle name and value as a whole-word token.

    The bundled vocabulary (3,914 pieces) spells "trumpet" or "Brixzeth" in 3-5 pieces, so the first
    answer piece is a letter pair found all over the haystack; a model trained from scratch then needs far
    more data than a CPU run holds to learn where an answer starts. One token per name and value keeps the
    retrieval itself (find the named needle, copy its value) and leaves positions, the object of the
    experiments, untouched. A pretrained model's vocabulary holds such words whole anyway.
    """
    from tokenizers import AddedToken, Tokenizer

    from v2pe_common.tokenizer import bundled_tokenizer_dir
    from v2pe_data.tasks.long_mr.needles import FACTS, NAMES

    if (folder / "tokenizer.json").is_file():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(bundled_tokenizer_dir(), tmp)
    tok = Tokenizer.from_file(str(tmp / "tokenizer.json"))
    words = sorted({v for fact in FACTS for v in fact.values} | set(NAMES))
    tok.add_tokens([AddedToken(w, single_word=True, normalized=False) for w in words])
    tok.save(str(tmp / "tokenizer.json"))
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(folder)
    return folder


def model_config(cfg: StageConfig, tokenizer: Path, max_len: int):
    """The tiny preset's InternVL config with the language model reshaped as `cfg` asks."""
    from transformers import InternVLConfig

    from v2pe_common.tokenizer import load_tokenizer
    from v2pe_train.model import tiny_config

    tok = load_tokenizer(str(tokenizer))
    raw = tiny_config(tok.vocab_size, tok.img_context_id, eos_token_id=tok.hf.eos_token_id).to_dict()
    text = raw["text_config"]
    heads = cfg.hidden_size // cfg.head_dim
    text.update(hidden_size=cfg.hidden_size, intermediate_size=4 * cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                num_attention_heads=heads, num_key_value_heads=heads, head_dim=cfg.head_dim,
                max_position_embeddings=max(32768, 2 * max_len),
                rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta})
    text.pop("layer_types", None)  # derived from num_hidden_layers again
    raw["vision_config"].update(hidden_size=cfg.vision_hidden_size, intermediate_size=2 * cfg.vision_hidden_size,
                                num_hidden_layers=cfg.vision_layers,
                                num_attention_heads=cfg.vision_hidden_size // VISION_HEAD_DIM)
    return InternVLConfig(**raw)


def make_model(cfg: StageConfig, seed: int, folder: Path, tokenizer: Path, max_len: int) -> Path:
    """A seeded random-init native InternVL folder (weights, config, tokenizer); made only when missing."""
    import torch
    from transformers import InternVLForConditionalGeneration

    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = InternVLForConditionalGeneration(model_config(cfg, tokenizer, max_len))
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    for f in tokenizer.iterdir():
        shutil.copy(f, tmp / f.name)
    tmp.rename(folder)
    return folder


# --- data ----------------------------------------------------------------------------------------------

def build_command(cfg: StageConfig, folder: Path, tokenizer: Path, *, length: int, samples: int, split: str,
                  seed: int, depth: str | None = None) -> list[str]:
    """`v2pe-data build long_mr` of one set of `cfg`'s subsets and haystack at `length` tokens."""
    haystack = yaml.safe_dump(cfg.haystack, default_flow_style=True).strip()
    cmd = [sys.executable, "-m", "v2pe_data", "build", "long_mr", "--len", str(length),
           "--min-len", str(int(length * cfg.min_len_ratio)), "--num-samples", str(samples),
           "--shard-size", str(min(samples, 256)), "--split", split, "--seed", str(seed), "--out", str(folder),
           "--max-tiles", str(cfg.max_tiles), "--template", cfg.template, "--workers", str(cfg.build_workers),
           "--tokenizer", str(tokenizer), "--option", f"subset={','.join(cfg.subsets)}",
           "--option", f"haystack={haystack}", "--format", "wds", "--quiet"]  # the trainer reads the tar shards
    return cmd + (["--depth", depth] if depth else [])


def build_all(cfg: StageConfig, jobs: list[tuple[Path, list[str]]], root: Path, say: Callable[[str], None]) -> None:
    """Run each (folder, command) whose folder has no manifest yet (an unfinished build resumes),
    `cfg.parallel` builds at a time."""
    todo = []
    for folder, cmd in jobs:
        name = str(folder.relative_to(root))
        if (folder / MANIFEST_FILE).is_file():
            say(f"  {name}: built")
            continue
        folder.parent.mkdir(parents=True, exist_ok=True)
        say(f"  {name}: building ({cmd[cmd.index('--num-samples') + 1]} samples, len {cmd[cmd.index('--len') + 1]})")
        todo.append((name, cmd, folder.parent / f"{folder.name}.log"))
    run_many(todo, cfg, lambda name: f"{name} building", say)


# --- training ------------------------------------------------------------------------------------------

def train_recipe(cfg: StageConfig, *, model: Path | str, tokenizer: Path, data: Path, out: Path, seed: int,
                 position_mode: str = "default", stride: int | None = None, save_every: int | None = None,
                 keep_last: int = 1) -> dict:
    """A `v2pe-train train` recipe of one run: `cfg`'s optimisation, this model, data and position mode.

    The tokenizer is named explicitly: the one the data was counted with, so the loader checks every
    sample's length against its meta whatever folder the model starts from.
    """
    sample = {"position_mode": position_mode, "tiling_backend": "fast", "train_on_prompt": cfg.train_on_prompt,
              "train_on_eos": cfg.train_on_eos}
    if position_mode == "v2pe_fix":
        sample["stride"] = stride
    return {
        "model": {"name": str(model), "tokenizer": str(tokenizer)},
        "data": {"paths": [str(data)], "max_seq_len": cfg.seq_len, "num_workers": cfg.num_workers},
        "sample": sample,
        "optim": {"lr": cfg.lr, "warmup_ratio": cfg.warmup_ratio, "max_steps": cfg.steps, "weight_decay": 0.0,
                  "loss_reduction": "token", "precision": cfg.precision},
        "checkpoint": {"save_every": save_every or cfg.save_every, "keep_last": keep_last},
        "out": str(out), "log_every": 10, "seed": seed,
    }


def steps_done(run_dir: Path) -> int:
    ckpts = sorted((run_dir / "checkpoints").glob("step_*")) if (run_dir / "checkpoints").is_dir() else []
    return int(ckpts[-1].name.split("_")[1]) if ckpts else 0


def last_log(run_dir: Path) -> dict | None:
    try:
        lines = (run_dir / "log.jsonl").read_text().splitlines()
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def train_command(cfg: StageConfig, recipe: dict, recipe_path: Path) -> list[str] | None:
    """The command that (re)starts the run of `recipe` (written to `recipe_path`), or None when it has finished."""
    run_dir = Path(recipe["out"])
    done = steps_done(run_dir)
    if done >= recipe["optim"]["max_steps"]:
        return None
    recipe_path.parent.mkdir(parents=True, exist_ok=True)
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    cmd = [sys.executable, "-m", "v2pe_train", "train", "--recipe", str(recipe_path)]
    if cfg.device != "cpu":
        cmd += ["--require-gpu"]
    return cmd + (["--resume"] if done else ["--overwrite"])


def train_progress(run_dir: Path, steps: int, name: str) -> str:
    row = last_log(run_dir)
    return f"{name} step {row['step']}/{steps} loss {row['loss']:.3f}" if row else f"{name} starting"


def export_model(cfg: StageConfig, run_dir: Path, folder: Path) -> Path:
    """`v2pe-train export` of a finished run's last checkpoint: the model a next stage starts from."""
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    run([sys.executable, "-m", "v2pe_train", "export", str(run_dir), str(folder)],
        folder.with_name(folder.name + ".log"), f"exporting {run_dir}", env(cfg))
    return folder


# --- evaluation ----------------------------------------------------------------------------------------

def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return 0


def eval_command(cfg: StageConfig, *, model: Path, data: Path, out: Path, strides: list) -> list[str]:
    return [sys.executable, "-m", "v2pe_train", "eval", "--model", str(model), "--data", str(data), "--out", str(out),
            "--stride", ",".join(str(s) for s in strides), "--mode", cfg.eval_mode, "--device", cfg.device, "--quiet"]


def read_scores(folder: Path) -> list[dict]:
    path = folder / "scores.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the eval stage first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
