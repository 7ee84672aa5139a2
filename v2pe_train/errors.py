"""The package's error base: every failure v2pe-train reports in one line derives from `V2PETrainError`.

The CLI (cli.py) turns these into one `error:` line and an exit code; a failure of the machine (CUDA out of
memory, a broken collective) keeps its traceback. Each class keeps the builtin base its callers already
catch (ValueError, RuntimeError) as its second base.
"""

from __future__ import annotations


class V2PETrainError(Exception):
    """A failure of the inputs or of the run, with a message that says what to do."""

    reason = "error"  # the kind of failure, one word: a class's own (SampleError: one of data.stats.REASONS)


class TrainError(V2PETrainError, RuntimeError):
    """The run cannot start or continue: the message says what is missing or went wrong."""

    reason = "train"


class UsageError(TrainError):
    """The command line or recipe asks for what cannot be done (missing input, a folder holding another run)."""

    reason = "usage"
