"""Progress bars of the `v2pe-data` commands: one kind (tqdm on stderr), so stdout stays what scripts parse.

`show=None` lets tqdm decide: a bar only when stderr is a terminal, so a command run from a script or a test
keeps its stderr to its warnings and its one `error:` line.
"""

from __future__ import annotations


def progress_bar(total: int | None, desc: str, unit: str, show: bool | None = None):
    """A tqdm bar on stderr; `show` False hides it, True always draws it, None draws it on a terminal only."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=None if show is None else not show)


def status_line(message: str, show: bool | None = None) -> None:
    """One line on stderr saying what a command waits for, where a bar would be drawn (`show` as for a bar)."""
    import sys

    if show or (show is None and sys.stderr.isatty()):
        print(message, file=sys.stderr, flush=True)
