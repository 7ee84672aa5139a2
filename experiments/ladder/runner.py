"""One rung, end to end with the project's own commands: build -> initial model -> train -> export -> eval.

Layout of ROOT (shared by every rung and ablation variant run into it):
    tokenizer/                       the tokenizer the data is counted with (commands.make_tokenizer)
    data/<key>/train, data/<key>/eval  v2pe-data builds, one folder per distinct data spec (variants that
                                     change only the training share them)
    models/<key>_s<seed>             seeded random-init models, one per distinct model shape and seed
    <rung>/settings.json             the rung's settings; rerunning it with others is refused
    <rung>/runs/s<seed>              v2pe-train run folders (an unfinished run resumes)
    <rung>/final/s<seed>             v2pe-train export of the run: what a later rung starts from
    <rung>/eval/s<seed>              v2pe-train eval folders (predictions resume line by line)
    <rung>/result.json               accuracy at L per seed, the verdict and the wall time per stage
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from v2pe_common.tokenizer import bundled_tokenizer_dir

from .. import commands as cmds
from ..stage_config import MODEL_KEYS, remember_settings
from .config import SCRATCH, RungConfig, load_rung

DATA_KEYS = ("train_len", "train_samples", "eval_samples", "min_len_ratio", "depth_grid", "subsets", "haystack",
             "max_tiles", "template", "data_seed", "eval_seed", "vocabulary", "init_model")
# Keys that change neither data, model nor training of a run: a rung may be rerun into its folder with other
# values. Each seed's run is a folder of its own, so seeds may be added (or left out) later.
FREE_KEYS = ("description", "parallel", "threads", "build_workers", "save_every", "seeds")


def _key(cfg: RungConfig, keys: tuple[str, ...]) -> str:
    text = json.dumps({k: getattr(cfg, k) for k in keys}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def tokenizer_dir(cfg: RungConfig, root: Path) -> Path:
    """The tokenizer the rung's data is counted with: an initial model's, or the ladder's own."""
    if cfg.init_model:
        return Path(cfg.init_model).expanduser().resolve()
    if cfg.vocabulary == "bundled":
        return bundled_tokenizer_dir()
    return cmds.make_tokenizer(root / "tokenizer")


def data_dir(cfg: RungConfig, root: Path) -> Path:
    return root / "data" / _key(cfg, DATA_KEYS)


def check_settings(cfg: RungConfig, folder: Path) -> None:
    """Write `folder/settings.json`, or refuse (ExperimentError) when it holds a rung of other settings."""
    changed = remember_settings(cfg, folder / "settings.json", FREE_KEYS)
    if changed:
        raise cmds.ExperimentError(f"{folder} holds rung {cfg.name!r} with other settings ({', '.join(changed)}); "
                                   "use another --out")


def build_data(cfg: RungConfig, root: Path, say: Callable[[str], None]) -> Path:
    tok = tokenizer_dir(cfg, root)
    folder = data_dir(cfg, root)
    jobs = [(folder / "train", cmds.build_command(cfg, folder / "train", tok, length=cfg.train_len,
                                                  samples=cfg.train_samples, split="train", seed=cfg.data_seed)),
            (folder / "eval", cmds.build_command(cfg, folder / "eval", tok, length=cfg.train_len,
                                                 samples=cfg.eval_samples, split="val", seed=cfg.eval_seed,
                                                 depth=cfg.depth_grid))]
    cmds.build_all(cfg, jobs, root, say)
    return folder


def start_model(cfg: RungConfig, root: Path, seed: int) -> Path:
    """The model seed `seed` of the rung starts from: the init rung's export, an `init_model`, or a random init."""
    if cfg.init != SCRATCH:
        init = load_rung(cfg.init).name  # `init` may be a YAML path; the folder is its rung's name
        folder = root / init / "final" / f"s{seed}"
        if not (folder / "config.json").is_file():
            raise cmds.ExperimentError(f"rung {cfg.name!r} starts from rung {init!r}, whose seed-{seed} model "
                                       f"{folder} is missing: run rung {init!r} first")
        return folder
    if cfg.init_model:
        return Path(cfg.init_model).expanduser().resolve()
    return cmds.make_model(cfg, seed, root / "models" / f"{_key(cfg, MODEL_KEYS)}_s{seed}", tokenizer_dir(cfg, root),
                           cfg.train_len)


def train(cfg: RungConfig, root: Path, say: Callable[[str], None]) -> None:
    folder = root / cfg.name
    tok, data = tokenizer_dir(cfg, root), data_dir(cfg, root) / "train"
    jobs, steps = [], {}
    for seed in cfg.seeds:
        run_dir = folder / "runs" / f"s{seed}"
        curve = {} if cfg.curve_every is None else {"save_every": cfg.curve_every,
                                                       "keep_last": cfg.steps // cfg.curve_every + 1}
        recipe = cmds.train_recipe(cfg, model=start_model(cfg, root, seed), tokenizer=tok, data=data, out=run_dir,
                                   seed=seed, position_mode=cfg.position_mode, **curve)
        cmd = cmds.train_command(cfg, recipe, folder / "recipes" / f"s{seed}.yaml")
        if cmd is None:
            say(f"  {cfg.name} s{seed}: trained ({cfg.steps} steps)")
            continue
        name = f"{cfg.name} s{seed}"
        steps[name] = run_dir
        jobs.append((name, cmd, folder / "runs" / f"s{seed}.log"))
    cmds.run_many(jobs, cfg, lambda name: cmds.train_progress(steps[name], cfg.steps, name), say)
    for seed in cfg.seeds:
        cmds.export_model(cfg, folder / "runs" / f"s{seed}", folder / "final" / f"s{seed}")


def curve_points(cfg: RungConfig, root: Path, seed: int) -> list[tuple[int, Path]]:
    """(step, checkpoint) of the learning curve's intermediate checkpoints (the final model is scored apart)."""
    if cfg.curve_every is None:
        return []
    run_dir = root / cfg.name / "runs" / f"s{seed}"
    steps = range(cfg.curve_every, cfg.steps, cfg.curve_every)
    return [(step, run_dir / "checkpoints" / f"step_{step:08d}") for step in steps]


def evaluate(cfg: RungConfig, root: Path, say: Callable[[str], None]) -> None:
    folder = root / cfg.name
    data = data_dir(cfg, root) / "eval"
    jobs, where = [], {}
    for seed in cfg.seeds:
        targets = [(f"s{seed}", folder / "runs" / f"s{seed}", folder / "eval" / f"s{seed}")]
        targets += [(f"s{seed}@{step}", ckpt, folder / "eval" / f"s{seed}_step{step}")
                    for step, ckpt in curve_points(cfg, root, seed)]
        for label, model, out in targets:
            if cmds.count_lines(out / "scores.jsonl") >= cfg.eval_samples:
                continue
            name = f"{cfg.name} {label} eval"
            where[name] = out
            jobs.append((name, cmds.eval_command(cfg, model=model, data=data, out=out, strides=["default"]),
                         out.with_name(out.name + ".log")))
    cmds.run_many(jobs, cfg, lambda name: f"{name} {cmds.count_lines(where[name] / 'predictions.jsonl')}"
                  f"/{cfg.eval_samples}", say)


def summarise(cfg: RungConfig, root: Path, timings: dict) -> dict:
    """Accuracy at L per seed (mean score of `v2pe-train eval`), the last training loss, and the verdict."""
    folder = root / cfg.name
    per_seed, losses = {}, {}
    curve: dict[str, dict[str, float]] = {}

    def accuracy_of(out: Path) -> float:
        return statistics.fmean(float(r["score"]) for r in cmds.read_scores(out))

    for seed in cfg.seeds:
        per_seed[str(seed)] = accuracy_of(folder / "eval" / f"s{seed}")
        row = cmds.last_log(folder / "runs" / f"s{seed}")
        losses[str(seed)] = row["loss"] if row else None
        if cfg.curve_every is not None:
            points = {str(step): accuracy_of(folder / "eval" / f"s{seed}_step{step}")
                      for step, _ in curve_points(cfg, root, seed)}
            curve[str(seed)] = {**points, str(cfg.steps): per_seed[str(seed)]}
    accuracy = statistics.fmean(per_seed.values())
    passed = all(v >= cfg.control_threshold for v in per_seed.values())
    result = {"rung": cfg.name, "description": cfg.description, "init": cfg.init, "train_len": cfg.train_len,
              "steps": cfg.steps, "accuracy": accuracy, "per_seed": per_seed, "final_loss": losses,
              "threshold": cfg.control_threshold, "passed": passed, "timings_s": timings,
              "settings": json.loads(json.dumps(vars(cfg)))}
    if curve:
        result["curve"] = curve
        result["steps_to_threshold"] = {seed: next((int(s) for s, v in points.items() if v >= cfg.control_threshold),
                                                   None) for seed, points in curve.items()}
    (folder / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def run_rung(cfg: RungConfig, root: Path, say: Callable[[str], None]) -> dict:
    """Build, train, export and evaluate one rung whose init rung (if any) has run; returns its result."""
    folder = root / cfg.name
    check_settings(cfg, folder)
    timings_file = folder / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    for stage, step in (("data", build_data), ("train", train), ("eval", evaluate)):
        say(f"[{cfg.name}] {stage}")
        start = time.monotonic()
        step(cfg, root, say)
        timings[stage] = timings.get(stage, 0.0) + time.monotonic() - start
        timings_file.write_text(json.dumps(timings, indent=1) + "\n")
    return summarise(cfg, root, timings)
