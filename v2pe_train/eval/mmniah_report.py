"""MM-NIAH's own aggregation (`calculate_scores.py:main` and `save` of OpenGVLab/MM-NIAH), and its answer files.

Answer files are what MM-NIAH's `eval_internvl.py` (and V2PE's `eval_mm_niah.py`) write: `<model>_<task>.jsonl`,
one line per sample with `question_id`, `question`, `answer`, `response`, `context_length`, `placed_depth`;
`<task>` ends with its split (`retrieval-text-val`, `counting-image-rag-test`).

Aggregation, per task file: a sample goes to length column `np.digitize(context_length, X_BINS)` (under 1,000
tokens: dropped; 64,000 and more: the last column) and depth row `int(depth / 0.2)` (a list of depths is
averaged; 1.0 counts as 0.99); a cell's score is its mean, an empty cell 0; a length column's score is the
mean of its 5 depth cells, rounded to 6 places. Per model and split, `overall` is the mean over the task
files per column, only when there are exactly 6 of them (else MM-NIAH's warning, and no overall).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import V2PETrainError
from .heatmap import save_heatmap

X_BINS = (1000, 2000, 4000, 8000, 12000, 16000, 24000, 32000, 40000, 48000, 64000)
Y_INTERVAL = 0.2
DEPTH_ROWS = 5
SPLITS = ("rag-val", "val", "rag-test", "test")  # in MM-NIAH's order: "rag-val" is tried before "val"
CONTEXT_RANGES = [f"{b // 1000}k" for b in X_BINS]
TASKS = 6
ANSWER_FIELDS = ("question_id", "answer", "response", "context_length", "placed_depth")
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


class AnswerFileError(V2PETrainError, ValueError):
    """A file named or shaped like an MM-NIAH answer file that cannot be read as one."""

    reason = "answer_file"


def parse_name(path: str | Path) -> tuple[str, str, str]:
    """(model, task with split, split) of `<model>_<task>.jsonl`, split as MM-NIAH's `calculate_scores.py`
    does it (the model is everything before the last "_")."""
    stem = Path(path).name.removesuffix(".jsonl")
    model, sep, task = stem.rpartition("_")
    if not sep or not model:
        raise AnswerFileError(f"{Path(path).name}: an MM-NIAH answer file is named <model>_<task>.jsonl")
    split = next((s for s in SPLITS if task.endswith(s)), None)
    if split is None:
        raise AnswerFileError(f"{Path(path).name}: the task {task!r} ends with none of the splits {list(SPLITS)}; "
                              "rename it in the format <model>_<task>.jsonl")
    return model, task, split


def base_task(task: str) -> str:
    """'retrieval-text-val' -> 'retrieval-text' (the annotation file's name)."""
    for split in SPLITS:
        if task.endswith("-" + split):
            return task[: -len(split) - 1]
    return task


def item_id(task: str, question_id) -> str:
    """The eval item id of line `question_id` of MM-NIAH's annotation file for `task`."""
    return _SAFE.sub("_", f"mmniah-{base_task(task)}-{question_id}")


def is_answer_line(row) -> bool:
    return isinstance(row, dict) and "question_id" in row and "response" in row


def depth_value(depth) -> float:
    """A placed depth as MM-NIAH bins it: a list is averaged, 1.0 counts as 0.99. ValueError outside [0, 1]
    (MM-NIAH would index past its grid or wrap around)."""
    if isinstance(depth, list):
        if not depth or not all(isinstance(d, (int, float)) and not isinstance(d, bool) for d in depth):
            raise ValueError(f"placed_depth: expected a number or a non-empty list of numbers, got {depth!r}")
        depth = sum(depth) / len(depth)
    if isinstance(depth, bool) or not isinstance(depth, (int, float)) or not 0.0 <= depth <= 1.0:
        raise ValueError(f"placed_depth: expected a number in [0, 1], got {depth!r}")
    return 0.99 if depth == 1.0 else float(depth)


def task_scores(rows: Sequence[dict]) -> tuple[list[float], np.ndarray]:
    """(score per length column, the 5 x 11 grid of cell means) of one task file's scored rows
    ({"num_tokens", "depth", "score"})."""
    total = np.zeros((len(X_BINS) + 1, DEPTH_ROWS))
    correct = np.zeros((len(X_BINS) + 1, DEPTH_ROWS))
    for row in rows:
        x = int(np.digitize(row["num_tokens"], X_BINS))
        y = int(depth_value(row["depth"]) / Y_INTERVAL)
        total[x][y] += 1
        correct[x][y] += row["score"]
    result = np.divide(correct, total, out=np.zeros_like(correct), where=total != 0)
    grid = result[1:].T
    return [round(v, 6) for v in grid.mean(axis=0).tolist()], grid


def aggregate(rows: Sequence[dict]) -> tuple[dict, list[str]]:
    """{(group, split): {"tasks": {task: scores}, "grids": {task: grid}, "overall": scores | None}} and the
    warnings. Rows carry `mmniah_task` (the task file's name, split included), `mmniah_split` and `group`
    (the model of an answer file, or the stride of our eval)."""
    by_file: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        by_file[(str(row["group"]), row["mmniah_split"], row["mmniah_task"])].append(row)
    out: dict[tuple, dict] = {}
    for (group, split, task), task_rows in sorted(by_file.items()):
        scores, grid = task_scores(task_rows)
        entry = out.setdefault((group, split), {"tasks": {}, "grids": {}, "overall": None})
        entry["tasks"][task] = scores
        entry["grids"][task] = grid
    warnings = []
    for (group, split), entry in out.items():
        n = len(entry["tasks"])
        if n == TASKS:
            mean = np.array(list(entry["tasks"].values())).mean(axis=0).tolist()
            entry["overall"] = [round(v, 6) for v in mean]
        else:
            warnings.append(f"[Warning] Since len(res)={n} is not equal to 6, the overall score will be ignored "
                            f"({group}, {split}). Please ensure that you correctly organize the directory structure.")
    return out, warnings


def scores_json(entry: dict) -> dict:
    """An aggregate entry in the layout of MM-NIAH's `scores_<split>.json`."""
    res: dict = dict(entry["tasks"])
    if entry["overall"] is not None:
        res["overall"] = entry["overall"]
    res["context_ranges"] = CONTEXT_RANGES
    return res


def write(rows: Sequence[dict], out_dir: str | Path) -> tuple[dict[str, Path], list[str], list[str]]:
    """`mmniah/<group>/scores_<split>.json` and `mmniah/<group>/heatmaps_png/<task>.png` as MM-NIAH lays them
    out; returns (written files, Markdown lines, warnings)."""
    agg, warnings = aggregate(rows)
    written: dict[str, Path] = {}
    md: list[str] = []
    for (group, split), entry in agg.items():
        folder = Path(out_dir) / "mmniah" / _SAFE.sub("_", group)
        (folder / "heatmaps_png").mkdir(parents=True, exist_ok=True)
        path = folder / f"scores_{split}.json"
        path.write_text(json.dumps(scores_json(entry), indent=1) + "\n")
        written[f"mmniah_{group}_{split}"] = path
        for task, grid in entry["grids"].items():
            written[f"mmniah_{group}_{task}"] = save_heatmap(
                folder / "heatmaps_png" / f"{task}.png", grid, xticks=CONTEXT_RANGES, xrotation=45,
                yticks=[f"{j * Y_INTERVAL:.1f}" for j in range(DEPTH_ROWS)], xlabel="context length (lower edge)",
                ylabel="depth", title=f"{task} (MM-NIAH's aggregation: empty cells count as 0)", figsize=(8, 3.2),
                colorbar=False)
        md.append(f"\n## MM-NIAH's aggregation ({group}, {split}): score x 100 per length column\n\n")
        md.append("| task | " + " | ".join(CONTEXT_RANGES) + " |\n|---|" + "---:|" * len(CONTEXT_RANGES) + "\n")
        named = [*entry["tasks"].items(), *([("overall", entry["overall"])] if entry["overall"] is not None else [])]
        for task, scores in named:
            md.append(f"| {task} | " + " | ".join(f"{100 * v:.1f}" for v in scores) + " |\n")
    return written, md, warnings
