"""The package's error base: every error `v2pe-data` reports as one line derives from `V2PEDataError`.

The CLI prints such an error's message and exits (2 for usage errors, 1 otherwise); any other exception is
a bug and keeps its traceback. `reason` is a short machine-readable tag: the class's, or the raiser's.
"""

from __future__ import annotations


class V2PEDataError(Exception):
    """An error of v2pe_data the user can act on; the message says why and what to do."""

    reason = "error"  # the kind of failure, one word; a class's own, or the raiser's (`reason=`)

    def __init__(self, message: str = "", *args, reason: str | None = None):
        super().__init__(message, *args)
        if reason is not None:
            self.reason = reason


class FolderError(V2PEDataError, ValueError):
    """A folder that cannot be read as a finished build: its manifest missing or invalid, a shard damaged."""

    reason = "folder"


class BuildError(V2PEDataError, RuntimeError):
    """The build cannot start or continue; the message says why and what to do.

    `usage` is True when the user's arguments caused it (a busy, foreign or file --out, a --len too
    small, no source available): the CLI exits 2 for those and 1 for failures at run time.
    """

    reason = "build"

    def __init__(self, message: str, *, usage: bool = False, reason: str | None = None):
        super().__init__(message, reason=reason)
        self.usage = usage
