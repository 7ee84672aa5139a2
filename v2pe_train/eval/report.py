"""Scores -> a Markdown table per task and length bin, and accuracy heatmaps over length x depth.

Input rows are scored predictions: {"id", "task", "subset", "num_tokens", "depth" (float, a list of
needle depths, or None), "stride", "score" in [0, 1]}. Two aggregations, kept apart on purpose:

- **Ours** (`heatmap_*.png`, the Markdown table): length bins of 1K, 2K, 4K, ... 64K tokens (K = 1024)
  extended by doubling to 1M for our longer builds; a cell is the mean score of the samples in it; a cell
  with no sample is empty (drawn blank, never 0), and a length bin's mean is over its *samples*, so empty
  depth cells do not pull it down.
- **MM-NIAH's** (`mmniah_report`, for MM-NIAH inputs and answer files only): its own bins, empty cells
  counted as 0, and its overall over the six task files, exactly as its `calculate_scores.py`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from . import mmniah_report
from .heatmap import save_heatmap

K = 1024
LENGTH_BINS = (1 * K, 2 * K, 4 * K, 8 * K, 12 * K, 16 * K, 24 * K, 32 * K, 40 * K, 48 * K, 64 * K,
                      128 * K, 256 * K, 512 * K, 1024 * K)
DEPTH_BINS = 5


def depth_of(row: dict) -> float | None:
    d = row.get("depth")
    if isinstance(d, (list, tuple)):
        d = float(np.mean(d)) if d else None
    return None if d is None else float(d)


def depth_bin(depth: float) -> int:
    return min(int(min(depth, 0.99) / (1.0 / DEPTH_BINS)), DEPTH_BINS - 1)


def length_bin(num_tokens: int, edges: Sequence[int] = LENGTH_BINS) -> int | None:
    """Index i of the bin [edges[i], edges[i+1]) holding `num_tokens` (np.digitize; None under edges[0])."""
    i = int(np.digitize(num_tokens, edges)) - 1
    return i if i >= 0 else None


def length_label(i: int, edges: Sequence[int] = LENGTH_BINS) -> str:
    def k(n: int) -> str:
        return f"{n // (K * K)}M" if n >= K * K else f"{n // K}K"

    return f"{k(edges[i])}-{k(edges[i + 1])}" if i + 1 < len(edges) else f">={k(edges[i])}"


def grid(rows: Iterable[dict]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(length bins present, sums [L, D], counts [L, D]) of rows with a depth; rows under 1K are dropped."""
    cells: dict[tuple[int, int], list[float]] = defaultdict(list)
    for row in rows:
        d, li = depth_of(row), length_bin(int(row["num_tokens"]))
        if d is None or li is None:
            continue
        cells[(li, depth_bin(d))].append(float(row["score"]))
    bins = sorted({li for li, _ in cells})
    sums = np.zeros((len(bins), DEPTH_BINS))
    counts = np.zeros((len(bins), DEPTH_BINS), dtype=np.int64)
    for (li, di), scores in cells.items():
        sums[bins.index(li), di] = sum(scores)
        counts[bins.index(li), di] = len(scores)
    return bins, sums, counts


def cell_means(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean per cell; NaN where no sample fell (an empty cell, not a zero)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def markdown_table(rows: Sequence[dict]) -> str:
    """Score x 100 (and n) per (stride, task, subset) and length bin; length bins as MM-NIAH's plus doubling."""
    groups: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    used: set[int] = set()
    for row in rows:
        li = length_bin(int(row["num_tokens"]))
        li = -1 if li is None else li
        used.add(li)
        groups[(str(row.get("stride")), row["task"], row["subset"])][li].append(float(row["score"]))
    cols = sorted(used)
    heads = [("<1K" if c < 0 else length_label(c)) for c in cols]
    lines = ["| stride | task | subset | " + " | ".join(heads) + " | all |",
             "| --- | --- | --- | " + " | ".join("---:" for _ in cols) + " | ---: |"]
    for (stride, task, subset), by_len in sorted(groups.items()):
        cells = []
        for c in cols:
            s = by_len.get(c)
            cells.append(f"{100 * sum(s) / len(s):.1f} (n={len(s)})" if s else "")
        everything = [x for s in by_len.values() for x in s]
        cells.append(f"{100 * sum(everything) / len(everything):.1f} (n={len(everything)})")
        lines.append(f"| {stride} | {task} | {subset} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def heatmap(rows: Sequence[dict], path: str | Path, title: str) -> Path | None:
    """Accuracy over length (rows) x depth (columns); None when no row has a depth."""
    bins, sums, counts = grid(rows)
    if not bins:
        return None
    return save_heatmap(path, cell_means(sums, counts),
                        xticks=[f"{j / DEPTH_BINS:.1f}-{(j + 1) / DEPTH_BINS:.1f}" for j in range(DEPTH_BINS)],
                        yticks=[length_label(b) for b in bins], xlabel="needle / target depth",
                        ylabel="context length (tokens)", title=f"{title} (ours; blank: no sample)",
                        figsize=(6.4, 1.2 + 0.45 * len(bins)))


def write_report(rows: Sequence[dict], out_dir: str | Path,
                 name: str = "Evaluation report") -> tuple[dict[str, Path], list[str]]:
    """REPORT.md and heatmap_<stride>.png (ours) per stride; for MM-NIAH rows also MM-NIAH's own scores and
    heatmaps (`mmniah_report.write`). Returns (written files, MM-NIAH's warnings)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    by_stride: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_stride[str(row.get("stride"))].append(row)
    parts = [f"# {name}\n", "## Ours: score x 100 per length bin (K = 1024); `n` samples. Empty: no sample in "
             "that bin; a bin's mean is over its samples.\n\n", markdown_table(rows)]
    for stride, srows in sorted(by_stride.items()):
        p = heatmap(srows, out_dir / f"heatmap_{stride}.png", f"stride {stride}")
        if p is not None:
            written[f"heatmap_{stride}"] = p
    mm_rows = [r for r in rows if "mmniah_task" in r]
    warnings: list[str] = []
    if mm_rows:
        mm_written, md, warnings = mmniah_report.write(mm_rows, out_dir)
        written.update(mm_written)
        parts += md + [f"\n{w}\n" for w in warnings]
    md_path = out_dir / "REPORT.md"
    md_path.write_text("".join(parts))
    written["markdown"] = md_path
    return written, warnings
