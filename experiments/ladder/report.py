"""Results of rungs and ablation variants -> one Markdown table each (LADDER.md, ABLATION_<plan>.md)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from .. import plots


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def _steps_to_threshold(result: dict) -> str:
    found = result.get("steps_to_threshold")
    if not found:
        return ""
    return " / ".join(str(v) if v is not None else f">{result['steps']}" for v in found.values())


def _row(result: dict) -> list[str]:
    seeds = result["per_seed"]
    losses = [v for v in result["final_loss"].values() if v is not None]
    accs = list(seeds.values())
    spread = f" ± {100 * statistics.stdev(accs):.1f}" if len(accs) > 1 else ""
    return [f"{_pct(result['accuracy'])}{spread}", " / ".join(_pct(v) for v in seeds.values()),
            f"{statistics.fmean(losses):.3f}" if losses else "",
            f"{result['timings_s'].get('train', 0) / 60:.1f}"]


def _scored(result: dict) -> str:
    mode = result.get("settings", {}).get("eval_mode", "teacher_forced")
    return "by generation" if mode == "generate" else "teacher-forced"


def ladder_markdown(results: list[dict]) -> str:
    lines = ["# Learning ladder\n",
             "Accuracy at the training length L (`v2pe-train eval`, teacher-forced or by generation as the rung "
             "says); a rung passes when every seed reaches its threshold.\n",
             "| rung | what | starts from | L | steps | scored | accuracy % (mean ± sd) | per seed | final loss | "
             "train min | threshold | verdict |",
             "| --- | --- | --- | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | --- |"]
    for r in results:
        acc, per_seed, loss, minutes = _row(r)
        lines.append(f"| {r['rung']} | {r['description']} | {r['init']} | {r['train_len']} | {r['steps']} | "
                     f"{_scored(r)} | {acc} | {per_seed} | {loss} | {minutes} | {_pct(r['threshold'])} | "
                     f"{'PASS' if r['passed'] else 'fail'} |")
    return "\n".join(lines) + "\n"


def ablation_markdown(plan: str, base: str, rows: list[tuple[str, dict, dict]]) -> str:
    """rows: (variant, its overrides, its result)."""
    scored = " or ".join(sorted({_scored(result) for *_, result in rows}))
    lines = [f"# Ablation `{plan}` over rung `{base}`\n",
             "Each variant changes the listed keys of the rung and nothing else (same data unless a data key "
             f"changes, same initialisation per seed); accuracy at L, {scored}.\n",
             "| variant | changes | accuracy % (mean ± sd) | per seed | final loss | steps to threshold | train min |",
             "| --- | --- | ---: | --- | ---: | --- | ---: |"]
    for name, overrides, result in rows:
        changes = ", ".join(f"`{k}: {json.dumps(v)}`" for k, v in overrides.items()) or "(the rung as it is)"
        acc, per_seed, loss, minutes = _row(result)
        lines.append(f"| {name} | {changes} | {acc} | {per_seed} | {loss} | {_steps_to_threshold(result)} | "
                     f"{minutes} |")
    if any("curve" in result for *_, result in rows):
        lines.append(f"\n![accuracy at L over training steps, per variant (mean over seeds)](ABLATION_{plan}.png)")
    return "\n".join(lines) + "\n"


def curves_plot(rows: list[tuple[str, dict, dict]], path: Path) -> Path | None:
    """Accuracy at L against training step, one line per variant with a curve (mean over its seeds)."""
    curves = [(name, result) for name, _, result in rows if "curve" in result]
    if not curves:
        return None
    fig, (ax,) = plots.figure((6.4, 3.8))
    for name, result in curves:
        per_seed = list(result["curve"].values())
        steps = sorted({int(s) for points in per_seed for s in points})
        means = [statistics.fmean(points[str(s)] for points in per_seed if str(s) in points) for s in steps]
        ax.plot(steps, [100 * m for m in means], marker="o", markersize=3, label=name)
    ax.axhline(100 * curves[0][1]["threshold"], color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy at L (%)")
    ax.set_ylim(-2, 102)
    return plots.save_lines(fig, ax, path)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
