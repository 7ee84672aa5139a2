"""The errors of the real-source adapters and the reasons a row is rejected (see `base` for the order)."""

from __future__ import annotations

import contextlib

from ..errors import V2PEDataError

REASONS = ("missing_field", "bad_type", "missing_image", "path_escape", "corrupt_image", "too_many_pixels",
           "bad_encoding", "duplicate_id", "special_token")


class SourceError(V2PEDataError, ValueError):
    """A bad row under `strict=True`, or a source that cannot be read as the kind and layout asked for."""

    def __init__(self, message: str, *, reason: str | None = None, source: str | None = None,
                 id: str | None = None):
        super().__init__(message, reason=reason)
        self.source, self.id = source, id


class HubUnavailable(SourceError, ConnectionError):
    """A `hub:` id that cannot be fetched (no network, HF_HUB_OFFLINE=1, unknown repo)."""


class Reject(Exception):
    """One row is bad: raised inside the index pass, caught and counted by `RealSource.consider`."""

    def __init__(self, reason: str, detail: str, id: str | None = None):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.id = reason, detail, id


@contextlib.contextmanager
def tagged(rid: str):
    """Rejections raised inside the block name the row's original id."""
    try:
        yield
    except Reject as bad:
        if bad.id is None:
            bad.id = rid
        raise


class BadRow(Exception):
    """One row is bad for a reason of the reader's own list (a task's or a layout's, beyond `REASONS`);
    caught and counted by that reader's index pass, like `Reject`."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail
