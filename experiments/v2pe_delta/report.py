"""Scores of every (run, length) evaluation -> results.json, REPORT.md and heatmaps.png, with the control.

Accuracy is the mean score (MM-NIAH's retrieval rule: the normalised answer is contained in the reply) of
a run's samples; over seeds we report the mean and the spread (sample standard deviation, two seeds or
more). Depth columns are the evaluation sets' grid values: each sample is put in the grid cell nearest
to the depth its needle was placed at.

The control: at the training length L every mode must reach `control_threshold` with its first listed
stride (the stride it is trained for: `default` for δ = 1); if one does not, the task was not learned and
no length effect can be read, which the report says in its first line.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

from v2pe_data.tasks.long_mr.options import parse_grid
from v2pe_train.eval.heatmap import draw_cells
from v2pe_train.eval.report import depth_of

from .. import plots
from ..commands import read_scores
from . import lm_loss
from .config import ExperimentConfig
from .stages import complete_runs, eval_folder


def _nearest(grid: tuple[float, ...], depth: float | None) -> float | None:
    if depth is None:
        return None
    return min(grid, key=lambda g: abs(g - float(depth)))


def collect(cfg: ExperimentConfig, out: Path) -> list[dict]:
    """One row per scored prediction of every complete run: run, mode, seed, stride, multiple, depth (grid
    value), score. A run still to finish (a budget ran out) is left out; `markdown` names it."""
    grid = parse_grid(cfg.depth_grid)
    rows = []
    for run in complete_runs(cfg, out):
        mode, seed = run.rsplit("_s", 1)
        for m in sorted(set(cfg.eval_multiples)):
            for r in read_scores(eval_folder(out, run, m)):
                rows.append({"run": run, "mode": mode, "seed": int(seed), "stride": str(r["stride"]), "multiple": m,
                             "num_tokens": r["num_tokens"], "depth": _nearest(grid, depth_of(r)),
                             "subset": r.get("subset"), "score": float(r["score"])})
    return rows


def summarise(cfg: ExperimentConfig, rows: list[dict]) -> dict:
    """Per (mode, stride): per multiple {mean, sd, per_seed, n} and per (multiple, depth) the mean."""
    per_seed: dict = defaultdict(list)
    cells: dict = defaultdict(list)
    for r in rows:
        per_seed[(r["mode"], r["stride"], r["multiple"], r["seed"])].append(r["score"])
        cells[(r["mode"], r["stride"], r["multiple"], r["depth"])].append(r["score"])
    out: dict = {}
    for mode in cfg.modes:
        for stride in (str(s) for s in cfg.strides[mode]):
            key = f"{mode}@{stride}"
            lengths = {}
            for m in sorted(set(cfg.eval_multiples)):
                seeds = {s: statistics.fmean(per_seed[(mode, stride, m, s)]) for s in cfg.seeds
                         if per_seed[(mode, stride, m, s)]}
                if not seeds:
                    continue
                vals = list(seeds.values())
                lengths[str(m)] = {
                    "mean": statistics.fmean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else None,
                    "per_seed": {str(s): v for s, v in seeds.items()},
                    "n": sum(len(per_seed[(mode, stride, m, s)]) for s in seeds),
                    "depth": {str(d): statistics.fmean(cells[(mode, stride, m, d)])
                              for d in parse_grid(cfg.depth_grid) if cells[(mode, stride, m, d)]},
                }
            out[key] = {"mode": mode, "stride": stride, "lengths": lengths}
    return out


def control(cfg: ExperimentConfig, summary: dict) -> tuple[bool, list[str]]:
    """(passed, one line per mode): every seed of every mode reaches the threshold at L with the mode's first
    stride (the one it is trained for: `default` for δ = 1), and at least two seeds (or all, if fewer) count."""
    ok, lines = True, []
    need = min(2, len(cfg.seeds))
    for mode in cfg.modes:
        key = f"{mode}@{cfg.strides[mode][0]}"
        at_l = summary[key]["lengths"].get("1")
        if not at_l:
            ok = False
            lines.append(f"{key} at L: not evaluated")
            continue
        seeds = at_l["per_seed"]
        passed = len(seeds) >= need and all(v >= cfg.control_threshold for v in seeds.values())
        ok &= passed
        per_seed = ", ".join(f"seed {s} {100 * v:.1f}%" for s, v in seeds.items())
        lines.append(f"{key} at L: {per_seed} ({'all' if passed else 'not all'} >= {100 * cfg.control_threshold:.0f}%"
                     f"{'' if len(seeds) >= need else f'; only {len(seeds)} seed(s) complete'})")
    return ok, lines


def by_subset(cfg: ExperimentConfig, rows: list[dict]) -> dict:
    """{'<mode>@<stride>': {subset: {multiple: mean score}}} when the sets mix several subsets, else {}."""
    if len(cfg.subsets) < 2:
        return {}
    cells: dict = defaultdict(list)
    for r in rows:
        cells[(f"{r['mode']}@{r['stride']}", r["subset"], r["multiple"])].append(r["score"])
    out: dict = {}
    for (key, subset, m), scores in sorted(cells.items(), key=lambda kv: (kv[0][0], str(kv[0][1]), kv[0][2])):
        out.setdefault(key, {}).setdefault(subset, {})[str(m)] = statistics.fmean(scores)
    return out


def best_strides(cfg: ExperimentConfig, summary: dict) -> dict:
    """{mode: stride}: the stride with the best mean accuracy over the lengths beyond L, per mode."""
    beyond = [str(m) for m in sorted(set(cfg.eval_multiples)) if m > 1]
    best = {}
    for mode in cfg.modes:
        scored = []
        for stride in (str(s) for s in cfg.strides[mode]):
            cells = summary[f"{mode}@{stride}"]["lengths"]
            if beyond and all(m in cells for m in beyond):
                scored.append((statistics.fmean(cells[m]["mean"] for m in beyond), stride))
        if scored:
            best[mode] = max(scored)[1]
    return best


def _cell(entry: dict | None) -> str:
    if not entry:
        return ""
    sd = f" ± {100 * entry['sd']:.1f}" if entry["sd"] is not None else ""
    return f"{100 * entry['mean']:.1f}{sd}"


def _head(labels: list[str], lengths: list[str]) -> str:
    """A Markdown table's header and rule: label columns, then one right-aligned column per length."""
    return (f"| {' | '.join(labels)} | " + " | ".join(lengths) + " |\n"
            + "| " + " | ".join(["---"] * len(labels) + ["---:"] * len(lengths)) + " |\n")


def markdown(cfg: ExperimentConfig, summary: dict, passed: bool, lines: list[str], timings: dict,
             nll: dict | None = None, *, missing: list[str] | None = None, pretrain: list[dict] | None = None,
             subsets: dict | None = None) -> str:
    ms = sorted(set(cfg.eval_multiples))
    head = ("CONTROL PASSED: both models are accurate at the training length; the table can be read."
            if passed else "CONTROL FAILED: a model is not accurate at the training length L, so the task was not "
            "learned at this scale and the accuracy table says nothing about longer lengths.")
    parts = [f"# V2PE δ experiment, scale `{cfg.name}`\n\n**{head}**\n\n"]
    parts += [f"- {line}\n" for line in lines]
    if missing:
        parts.append(f"\nNot complete (left out of every table; rerun to finish them): {', '.join(missing)}.\n")
    for rung in pretrain or []:
        per_seed = ", ".join(f"seed {s} {100 * v:.1f}%" for s, v in rung["per_seed"].items())
        parts.append(f"\nPretrain rung `{rung['rung']}` ({rung['description']}; {rung['steps']} steps from "
                     f"{rung['init']}): accuracy at its length {rung['train_len']}: {per_seed}.\n")
    parts.append(f"\nAccuracy (%) by evaluation length; mean ± sd over the seeds; "
                 f"{cfg.eval_samples} samples per length and seed. L = {cfg.train_len} tokens.\n\n")
    parts.append(_head(["model @ eval stride"], [f"{m}L ({m * cfg.train_len})" for m in ms]))
    for key, entry in summary.items():
        parts.append(f"| {key} | " + " | ".join(_cell(entry["lengths"].get(str(m))) for m in ms) + " |\n")
    parts.append("\nStride S: visual tokens advance S/256 a token (δ = S/256); `default` is S = 256 (δ = 1).\n")
    if subsets:
        parts.append("\nAccuracy (%) per subset (mean over seeds and depths):\n\n")
        parts.append(_head(["model @ eval stride", "subset"], [f"{m}L" for m in ms]))
        for key, per in subsets.items():
            for subset, cells in per.items():
                parts.append(f"| {key} | {subset} | " + " | ".join(
                    f"{100 * cells[str(m)]:.1f}" if str(m) in cells else "" for m in ms) + " |\n")
    best = best_strides(cfg, summary)
    if best:
        parts.append("\nEach model at its own best inference stride (the stride with the best mean accuracy over "
                     "2L and beyond, chosen on these same evaluation sets, so equally optimistic for every model):\n\n")
        parts.append(_head(["model (best stride)"], [f"{m}L" for m in ms]))
        for mode, stride in best.items():
            cells = summary[f"{mode}@{stride}"]["lengths"]
            parts.append(f"| {mode} ({stride}) | " + " | ".join(_cell(cells.get(str(m))) for m in ms) + " |\n")
    if nll:
        what = "every text token" if cfg.train_on_prompt else "the answer" + (
            " and its end-of-turn marker" if cfg.train_on_eos else "")
        parts.append(f"\nLoss of the training targets ({what}; mean cross-entropy per target, nats; mean over "
                     "seeds), teacher forced with the same positions:\n\n")
        parts.append(_head(["model @ eval stride"], [f"{m}L" for m in ms]))
        for key, cells in nll.items():
            parts.append(f"| {key} | " + " | ".join(f"{cells[str(m)]['mean']:.3f}" if str(m) in cells else ""
                                                   for m in ms) + " |\n")
        parts.append("\n![loss of the training targets by length](lm_loss.png)\n")
    parts.append("\n![length x depth accuracy](heatmaps.png)\n")
    if timings:
        parts.append("\nWall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + "\n")
    return "".join(parts)


def heatmaps(cfg: ExperimentConfig, summary: dict, path: Path) -> Path:
    """One panel per model @ stride, side by side: accuracy over length (rows) x needle depth (columns)."""
    grid = parse_grid(cfg.depth_grid)
    ms = sorted(set(cfg.eval_multiples))
    keys = list(summary)
    fig, axes = plots.figure((2.2 + 2.1 * len(keys), 1.4 + 0.45 * len(ms)), ncols=len(keys))
    for ax, key in zip(axes, keys):
        vals = np.full((len(ms), len(grid)), np.nan)
        for i, m in enumerate(ms):
            for j, d in enumerate(grid):
                v = summary[key]["lengths"].get(str(m), {}).get("depth", {}).get(str(d))
                if v is not None:
                    vals[i, j] = v
        draw_cells(ax, vals, fontsize=7)
        ax.set_title(key, fontsize=8)
        ax.set_xticks(range(len(grid)), [f"{d:g}" for d in grid], fontsize=7)
        ax.set_yticks(range(len(ms)), [f"{m}L" for m in ms], fontsize=7)
        ax.set_xlabel("needle depth", fontsize=7)
    axes[0].set_ylabel(f"length (L = {cfg.train_len})", fontsize=7)
    return plots.save(fig, path)


def loss_plot(cfg: ExperimentConfig, nll: dict, path: Path) -> Path | None:
    """Loss of the training targets against evaluation length, one line per model @ stride (solid: default,
    dashed: V2PE)."""
    if not nll:
        return None
    ms = sorted(set(cfg.eval_multiples))
    fig, (ax,) = plots.figure((6.0, 3.6))
    for key, cells in nll.items():
        xs = [m for m in ms if str(m) in cells]
        ax.plot(xs, [cells[str(m)]["mean"] for m in xs], marker="o", label=key,
                linestyle="-" if key.startswith("default") else "--")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ms, [f"{m}L" for m in ms])
    ax.set_xlabel(f"evaluation length (L = {cfg.train_len} tokens)")
    ax.set_ylabel("loss of the training targets (nats / token)")
    return plots.save_lines(fig, ax, path)


def write(cfg: ExperimentConfig, out: Path, timings: dict | None = None) -> tuple[bool, Path]:
    """results.json, REPORT.md, heatmaps.png in OUT; returns (control passed, REPORT.md)."""
    rows = collect(cfg, out)
    summary, subsets = summarise(cfg, rows), by_subset(cfg, rows)
    nll = lm_loss.collect(cfg, out)
    passed, lines = control(cfg, summary)
    missing = [run for run in cfg.runs() if run not in set(complete_runs(cfg, out))]
    pretrain = [json.loads(p.read_text()) for rung in cfg.pretrain_chain()
                if (p := out / "pretrain" / rung.name / "result.json").is_file()]
    timings = timings or {}
    (out / "results.json").write_text(json.dumps(
        {"scale": cfg.name, "config": {k: v for k, v in vars(cfg).items()}, "control_passed": passed,
         "control": lines, "incomplete_runs": missing, "best_strides": best_strides(cfg, summary),
         "pretrain": pretrain, "timings_s": timings, "summary": summary, "by_subset": subsets, "lm_loss": nll},
        indent=1, default=str) + "\n")
    heatmaps(cfg, summary, out / "heatmaps.png")
    loss_plot(cfg, nll, out / "lm_loss.png")
    report = out / "REPORT.md"
    report.write_text(markdown(cfg, summary, passed, lines, timings, nll, missing=missing, pretrain=pretrain,
                               subsets=subsets))
    return passed, report
