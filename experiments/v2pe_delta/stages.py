"""The experiment's stages, each resumable: data -> model -> train -> eval. The project's own command lines
do the work (run as subprocesses of this interpreter), so the experiment exercises what users run.

Layout of OUT:
    tokenizer/                    the bundled tokenizer plus the needle vocabulary as whole-word tokens
    data/train, data/eval_<m>x    v2pe-data builds (a finished build has manifest.json; an unfinished one resumes)
    models/init_s<seed>           the random-init model every mode of that seed starts from (native InternVL)
    recipes/<run>.yaml            the training recipe of run `<mode>_s<seed>`
    runs/<run>, runs/<run>.log    v2pe-train run folders (an unfinished run resumes from its last checkpoint)
    eval/<run>/<m>x               v2pe-train eval folders (predictions resume line by line)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from .config import ExperimentConfig

POLL_SECONDS = 10.0


class ExperimentError(RuntimeError):
    """A stage failed; the message names the stage, the command's log and its last lines."""


def eval_dir_name(multiple: int) -> str:
    return f"eval_{multiple}x"


def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _env(cfg: ExperimentConfig) -> dict:
    env = dict(os.environ)
    threads = str(cfg.threads)
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, TOKENIZERS_PARALLELISM="false")
    return env


def _run(cmd: list[str], log: Path, what: str, env: dict) -> None:
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode:
        raise ExperimentError(f"{what} failed (exit {proc.returncode}); log {log}:\n{_tail(log)}")


# --- tokenizer -----------------------------------------------------------------------------------------

def tokenizer_dir(cfg: ExperimentConfig, out: Path) -> Path:
    """The tokenizer the data is counted with: the initial model's, or the experiment's own."""
    return Path(cfg.init_model).expanduser().resolve() if cfg.init_model else out / "tokenizer"


def make_tokenizer(folder: Path) -> Path:
    """The bundled tokenizer plus every needle name and value as a whole-word token.

    The bundled vocabulary (3,914 pieces) spells "trumpet" or "Brixzeth" in 3-5 pieces, so the first
    answer piece is a letter pair found all over the haystack; a model trained from scratch then needs far
    more data than a CPU run holds to learn where an answer starts. One token per name and value keeps the
    retrieval itself (find the named needle, copy its value) and leaves positions, the object of the
    experiment, untouched. A pretrained model's vocabulary holds such words whole anyway.
    """
    import shutil

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
    tmp.rename(folder)
    return folder


# --- data ----------------------------------------------------------------------------------------------

def build_commands(cfg: ExperimentConfig, out: Path) -> list[tuple[Path, list[str]]]:
    """(folder, command) of the training set and of every evaluation length."""
    haystack = yaml.safe_dump(cfg.haystack, default_flow_style=True).strip()
    common = ["--max-tiles", str(cfg.max_tiles), "--template", cfg.template, "--workers", str(cfg.build_workers),
              "--tokenizer", str(tokenizer_dir(cfg, out)),
              "--option", f"subset={','.join(cfg.subsets)}", "--option", f"haystack={haystack}", "--quiet"]

    def command(folder: Path, length: int, samples: int, split: str, seed: int, extra: list[str]) -> list[str]:
        return [sys.executable, "-m", "v2pe_data", "build", "long_mr", "--len", str(length),
                "--min-len", str(int(length * cfg.min_len_ratio)), "--num-samples", str(samples),
                "--shard-size", str(min(samples, 256)), "--split", split, "--seed", str(seed),
                "--out", str(folder), *common, *extra]

    jobs = [(out / "data" / "train", command(out / "data" / "train", cfg.train_len, cfg.train_samples, "train",
                                              cfg.data_seed, []))]
    for m in sorted(set(cfg.eval_multiples)):
        folder = out / "data" / eval_dir_name(m)
        jobs.append((folder, command(folder, cfg.train_len * m, cfg.eval_samples, "val", cfg.eval_seed + m,
                                     ["--depth", cfg.depth_grid])))
    return jobs


def build_data(cfg: ExperimentConfig, out: Path, say: Callable[[str], None]) -> None:
    if not cfg.init_model:
        make_tokenizer(out / "tokenizer")
    for folder, cmd in build_commands(cfg, out):
        if (folder / "manifest.json").is_file():
            say(f"  {folder.relative_to(out)}: built")
            continue
        folder.parent.mkdir(parents=True, exist_ok=True)
        say(f"  {folder.relative_to(out)}: building ({cmd[cmd.index('--num-samples') + 1]} samples, "
            f"len {cmd[cmd.index('--len') + 1]})")
        _run(cmd, folder.parent / f"{folder.name}.log", f"building {folder}", _env(cfg))


# --- model ---------------------------------------------------------------------------------------------

def model_config(cfg: ExperimentConfig, tokenizer: Path):
    """The tiny preset's InternVL config with the language model reshaped as the scale asks."""
    from transformers import InternVLConfig

    from v2pe_common.tokenizer import load_tokenizer
    from v2pe_train.model import tiny_config

    tok = load_tokenizer(str(tokenizer))
    raw = tiny_config(tok.vocab_size, tok.img_context_id, eos_token_id=tok.hf.eos_token_id).to_dict()
    text = raw["text_config"]
    heads = cfg.hidden_size // cfg.head_dim
    text.update(hidden_size=cfg.hidden_size, intermediate_size=4 * cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                num_attention_heads=heads, num_key_value_heads=heads, head_dim=cfg.head_dim,
                max_position_embeddings=max(32768, 2 * max(cfg.eval_lengths())),
                rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta})
    text.pop("layer_types", None)  # derived from num_hidden_layers again
    return InternVLConfig(**raw)


def make_model(cfg: ExperimentConfig, seed: int, folder: Path, tokenizer: Path) -> Path:
    """A seeded random-init native InternVL folder (weights, config, tokenizer); made only when missing."""
    import shutil

    import torch
    from transformers import InternVLForConditionalGeneration

    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = InternVLForConditionalGeneration(model_config(cfg, tokenizer))
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    for f in tokenizer.iterdir():
        shutil.copy(f, tmp / f.name)
    tmp.rename(folder)
    return folder


# --- training ------------------------------------------------------------------------------------------

def train_recipe(cfg: ExperimentConfig, out: Path, mode: str, seed: int) -> dict:
    recipe = {
        "model": str(tokenizer_dir(cfg, out)) if cfg.init_model else str(out / "models" / f"init_s{seed}"),
        "data": [str(out / "data" / "train")], "out": str(out / "runs" / f"{mode}_s{seed}"),
        "max_seq_len": cfg.seq_len, "position_mode": mode, "lr": cfg.lr, "warmup_ratio": cfg.warmup_ratio,
        "max_steps": cfg.steps, "weight_decay": 0.0, "loss_reduction": "token", "precision": cfg.precision,
        "save_every": cfg.save_every, "keep_last": 1, "log_every": 10, "seed": seed, "tiling_backend": "fast",
        "train_on_prompt": cfg.train_on_prompt,
    }
    if mode == "v2pe_fix":
        recipe["stride"] = cfg.fix_stride
    return recipe


def _steps_done(run: Path) -> int:
    ckpts = sorted((run / "checkpoints").glob("step_*")) if (run / "checkpoints").is_dir() else []
    return int(ckpts[-1].name.split("_")[1]) if ckpts else 0


def _last_log(run: Path) -> dict | None:
    try:
        lines = (run / "log.jsonl").read_text().splitlines()
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def train_command(cfg: ExperimentConfig, out: Path, run: str) -> list[str] | None:
    """The command that (re)starts `run`, or None when it has finished."""
    mode, seed = run.rsplit("_s", 1)
    done = _steps_done(out / "runs" / run)
    if done >= cfg.steps:
        return None
    recipe_path = out / "recipes" / f"{run}.yaml"
    recipe_path.parent.mkdir(parents=True, exist_ok=True)
    recipe_path.write_text(yaml.safe_dump(train_recipe(cfg, out, mode, int(seed)), sort_keys=False))
    cmd = [sys.executable, "-m", "v2pe_train", "train", "--recipe", str(recipe_path)]
    if cfg.device != "cpu":
        cmd += ["--require-gpu"]
    return cmd + (["--resume"] if done else ["--overwrite"])


def _run_many(jobs: list[tuple[str, list[str], Path]], cfg: ExperimentConfig, progress: Callable[[str], str],
              say: Callable[[str], None]) -> None:
    """Run (name, command, log) jobs, `cfg.parallel` at a time, printing one progress line per poll."""
    pending, running = list(jobs), {}
    env = _env(cfg)
    last = 0.0
    while pending or running:
        while pending and len(running) < cfg.parallel:
            name, cmd, log = pending.pop(0)
            log.parent.mkdir(parents=True, exist_ok=True)
            fh = open(log, "w")
            running[name] = (subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env), fh, log)
        time.sleep(0.2)
        for name, (proc, fh, log) in list(running.items()):
            if proc.poll() is None:
                continue
            fh.close()
            del running[name]
            if proc.returncode:
                for other, (p, f, _) in running.items():
                    p.terminate()
                    p.wait()
                    f.close()
                raise ExperimentError(f"{name} failed (exit {proc.returncode}); log {log}:\n{_tail(log)}")
            say(f"  {name}: done")
        if running and time.monotonic() - last >= POLL_SECONDS:
            last = time.monotonic()
            say("  " + " | ".join(progress(name) for name in running))


def train_all(cfg: ExperimentConfig, out: Path, say: Callable[[str], None]) -> None:
    for seed in [] if cfg.init_model else cfg.seeds:
        make_model(cfg, seed, out / "models" / f"init_s{seed}", out / "tokenizer")
    jobs = []
    for run in cfg.runs():
        cmd = train_command(cfg, out, run)
        if cmd is None:
            say(f"  {run}: trained ({cfg.steps} steps)")
            continue
        jobs.append((run, cmd, out / "runs" / f"{run}.log"))

    def progress(run: str) -> str:
        row = _last_log(out / "runs" / run)
        return f"{run} step {row['step']}/{cfg.steps} loss {row['loss']:.3f}" if row else f"{run} starting"

    _run_many(jobs, cfg, progress, say)


# --- evaluation ----------------------------------------------------------------------------------------

def eval_folder(out: Path, run: str, multiple: int) -> Path:
    return out / "eval" / run / f"{multiple}x"


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return 0


def eval_all(cfg: ExperimentConfig, out: Path, say: Callable[[str], None]) -> None:
    jobs, expected = [], {}
    for run in cfg.runs():
        mode = run.rsplit("_s", 1)[0]
        strides = [str(s) for s in cfg.strides[mode]]
        for m in sorted(set(cfg.eval_multiples)):
            folder = eval_folder(out, run, m)
            want = cfg.eval_samples * len(strides)
            name = f"{run}@{m}x"
            expected[name] = (folder, want)
            if _count_lines(folder / "scores.jsonl") >= want:
                continue
            cmd = [sys.executable, "-m", "v2pe_train", "eval", "--model", str(out / "runs" / run),
                   "--data", str(out / "data" / eval_dir_name(m)), "--out", str(folder),
                   "--stride", ",".join(strides), "--mode", cfg.eval_mode,
                   "--device", cfg.device, "--quiet"]
            jobs.append((name, cmd, folder.parent / f"{m}x.log"))
    say(f"  {len(jobs)} evaluation(s) to run, {len(expected) - len(jobs)} done")

    def progress(name: str) -> str:
        folder, want = expected[name]
        return f"{name} {_count_lines(folder / 'predictions.jsonl')}/{want}"

    _run_many(jobs, cfg, progress, say)
