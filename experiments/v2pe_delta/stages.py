"""The experiment's stages, each resumable: data -> pretrain -> train -> eval. The project's own command lines
do the work (experiments/commands.py), so the experiment exercises what users run.

Layout of OUT:
    tokenizer/                    the bundled tokenizer plus the needle vocabulary as whole-word tokens
    data/train, data/eval_<m>x    v2pe-data builds (a finished build has manifest.json; an unfinished one resumes)
    pretrain/                     the pretrain rung and the rungs it starts from, per seed (a ladder folder,
                                  experiments/ladder/runner.py); pretrain/<rung>/final/s<seed> starts every mode
    models/init_s<seed>           without pretrain: the random-init model every mode of that seed starts from
    recipes/<run>.yaml            the training recipe of run `<mode>_s<seed>`
    runs/<run>, runs/<run>.log    v2pe-train run folders (an unfinished run resumes from its last checkpoint)
    eval/<run>/<m>x               v2pe-train eval folders (predictions resume line by line)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from .. import commands as cmds
from ..commands import ExperimentError  # noqa: F401  (the stages' error, raised by the commands they run)
from ..ladder import runner as ladder
from .config import ExperimentConfig


def eval_dir_name(multiple: int) -> str:
    return f"eval_{multiple}x"


def tokenizer_dir(cfg: ExperimentConfig, out: Path) -> Path:
    """The tokenizer the data is counted with: the initial model's, or the experiment's own."""
    if cfg.init_model:
        return Path(cfg.init_model).expanduser().resolve()
    return cmds.make_tokenizer(out / "tokenizer")


# --- data ----------------------------------------------------------------------------------------------

def build_commands(cfg: ExperimentConfig, out: Path) -> list[tuple[Path, list[str]]]:
    """(folder, command) of the training set and of every evaluation length."""
    tok = tokenizer_dir(cfg, out)
    jobs = [(out / "data" / "train", cmds.build_command(cfg, out / "data" / "train", tok, length=cfg.train_len,
                                                        samples=cfg.train_samples, split="train",
                                                        seed=cfg.data_seed))]
    for m in sorted(set(cfg.eval_multiples)):
        folder = out / "data" / eval_dir_name(m)
        jobs.append((folder, cmds.build_command(cfg, folder, tok, length=cfg.train_len * m, samples=cfg.eval_samples,
                                                split="val", seed=cfg.eval_seed + m, depth=cfg.depth_grid)))
    return jobs


def build_data(cfg: ExperimentConfig, out: Path, say: Callable[[str], None]) -> None:
    if not seeds_to_train(cfg, out):
        say("  every run is complete: no data needed")
        return
    cmds.build_all(cfg, build_commands(cfg, out), out, say)


# --- pretraining ---------------------------------------------------------------------------------------

def pretrain(cfg: ExperimentConfig, out: Path, say: Callable[[str], None]) -> list[dict]:
    """Run the pretrain rung (and the rungs it starts from) for each seed with a run still to finish; their
    results, first to last."""
    seeds = seeds_to_train(cfg, out)
    if not seeds:
        say("  every run is complete: no pretraining needed")
        return []
    return [ladder.run_rung(dataclasses.replace(rung, seeds=seeds), out / "pretrain", say)
            for rung in cfg.pretrain_chain()]


def start_model(cfg: ExperimentConfig, out: Path, seed: int) -> Path:
    if cfg.pretrain is not None:
        last = cfg.pretrain_chain()[-1]
        folder = out / "pretrain" / last.name / "final" / f"s{seed}"
        if not (folder / "config.json").is_file():
            raise ExperimentError(f"{folder} is missing: run the pretrain stage first")
        return folder
    if cfg.init_model:
        return Path(cfg.init_model).expanduser().resolve()
    return cmds.make_model(cfg, seed, out / "models" / f"init_s{seed}", tokenizer_dir(cfg, out),
                           max(cfg.eval_lengths()))


# --- training ------------------------------------------------------------------------------------------

def train_recipe(cfg: ExperimentConfig, out: Path, mode: str, seed: int) -> dict:
    return cmds.train_recipe(cfg, model=start_model(cfg, out, seed), tokenizer=tokenizer_dir(cfg, out),
                             data=out / "data" / "train", out=out / "runs" / f"{mode}_s{seed}", seed=seed,
                             position_mode=mode, stride=cfg.fix_stride)


def train_command(cfg: ExperimentConfig, out: Path, run: str) -> list[str] | None:
    """The command that (re)starts `run`, or None when it has finished."""
    mode, seed = run.rsplit("_s", 1)
    return cmds.train_command(cfg, train_recipe(cfg, out, mode, int(seed)), out / "recipes" / f"{run}.yaml")


def train_all(cfg: ExperimentConfig, out: Path, say: Callable[[str], None]) -> None:
    jobs = []
    complete = set(complete_runs(cfg, out))
    for run in cfg.runs():
        if run in complete:
            say(f"  {run}: results complete, no training needed")
            continue
        cmd = train_command(cfg, out, run)
        if cmd is None:
            say(f"  {run}: trained ({cfg.steps} steps)")
            continue
        jobs.append((run, cmd, out / "runs" / f"{run}.log"))
    cmds.run_many(jobs, cfg, lambda run: cmds.train_progress(out / "runs" / run, cfg.steps, run), say)


# --- evaluation ----------------------------------------------------------------------------------------

def eval_folder(out: Path, run: str, multiple: int) -> Path:
    return out / "eval" / run / f"{multiple}x"


def run_complete(cfg: ExperimentConfig, out: Path, run: str) -> bool:
    mode = run.rsplit("_s", 1)[0]
    want = cfg.eval_samples * len(cfg.strides[mode])
    return all(cmds.count_lines(eval_folder(out, run, m) / "scores.jsonl") >= want
               and (eval_folder(out, run, m) / "lm_loss.json").is_file() for m in set(cfg.eval_multiples))


def complete_runs(cfg: ExperimentConfig, out: Path) -> list[str]:
    return [run for run in cfg.runs() if run_complete(cfg, out, run)]


def seeds_to_train(cfg: ExperimentConfig, out: Path) -> list[int]:
    """Seeds with a run still to finish: the only ones whose pretraining is needed."""
    done = set(complete_runs(cfg, out))
    return [s for s in cfg.seeds if any(f"{m}_s{s}" not in done for m in cfg.modes)]


def eval_all(cfg: ExperimentConfig, out: Path, say: Callable[[str], None]) -> None:
    jobs, expected = [], {}
    for run in cfg.runs():
        strides = cfg.strides[run.rsplit("_s", 1)[0]]
        for m in sorted(set(cfg.eval_multiples)):
            folder = eval_folder(out, run, m)
            want = cfg.eval_samples * len(strides)
            name = f"{run}@{m}x"
            expected[name] = (folder, want)
            if cmds.count_lines(folder / "scores.jsonl") >= want:
                continue
            jobs.append((name, cmds.eval_command(cfg, model=out / "runs" / run, data=out / "data" / eval_dir_name(m),
                                                 out=folder, strides=strides), folder.parent / f"{m}x.log"))
    say(f"  {len(jobs)} evaluation(s) to run, {len(expected) - len(jobs)} done")

    def progress(name: str) -> str:
        folder, want = expected[name]
        return f"{name} {cmds.count_lines(folder / 'predictions.jsonl')}/{want}"

    cmds.run_many(jobs, cfg, progress, say)
