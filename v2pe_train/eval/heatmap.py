"""Accuracy grids as heatmaps: our report's (report.py) and MM-NIAH's own (mmniah_report.py) draw them alike."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def draw_cells(ax, means: np.ndarray, fontsize: int = 8):
    """Accuracies in [0, 1] as a red-to-green grid on `ax`, each cell labelled x 100; NaN cells blank."""
    import matplotlib

    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="#ffffff")
    im = ax.imshow(np.ma.masked_invalid(means), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    for (i, j), v in np.ndenumerate(means):
        if not math.isnan(v):
            ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=fontsize)
    return im


def save_heatmap(path: str | Path, means: np.ndarray, *, xticks: Sequence[str], yticks: Sequence[str], xlabel: str,
                 ylabel: str, title: str, figsize: tuple[float, float], xrotation: float = 0,
                 colorbar: bool = True) -> Path:
    """`means` (rows x columns of accuracies) as a labelled PNG. Drawn on a Figure of its own, not through pyplot:
    no global figure state, and the caller's matplotlib backend (a notebook's, say) stays as it is."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    ax = fig.subplots()
    im = draw_cells(ax, means)
    ax.set_xticks(range(len(xticks)), xticks, rotation=xrotation)
    ax.set_yticks(range(len(yticks)), yticks)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)
