"""Figures of the experiments' reports, drawn on matplotlib's Figure API: no pyplot, so neither the caller's
backend nor pyplot's figure registry is touched."""

from __future__ import annotations

from pathlib import Path


def figure(figsize: tuple[float, float], ncols: int = 1):
    """(figure, row of axes)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def save_lines(fig, ax, path: Path) -> Path:
    """A line plot's legend and grid, then `save`."""
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save(fig, path)
