"""The package's error base: every failure v2pe-train reports in one line derives from `V2PETrainError`.

The CLI (cli.py) turns these into one line and an exit code; anything else (CUDA out of memory, a broken
collective, a bug) keeps its traceback. Each class keeps the builtin base callers already catch
(ValueError, RuntimeError) as its second base.
"""

from __future__ import annotations


class V2PETrainError(Exception):
    """A failure of the inputs or of the run, with a message that says what to do."""

    @property
    def reason(self) -> str:
        """What the CLI prints: the message, or the class name where there is none."""
        return str(self) or type(self).__name__


class TrainError(V2PETrainError, RuntimeError):
    """The run cannot start or continue: the message says what is missing or went wrong."""


class UsageError(TrainError):
    """The command line or recipe asks for what cannot be done (missing input, a folder holding another run)."""
