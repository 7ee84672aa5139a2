"""Text that must stay one line and encodable: ids and details that reach messages, manifests and shards.

A lone surrogate (`"\\ud800"` is valid JSON) cannot be encoded as UTF-8, so writing it to a manifest or a
tar member fails; a control character breaks a one-line error. `printable` escapes both, leaving every
other character as it is; `has_surrogate` is the check a row's id must pass before it names a record.
"""

from __future__ import annotations

import re

_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """`text` fit for a one-line message and a UTF-8 file: control characters and lone surrogates as escapes."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                            else f"\\u{ord(m.group()):04x}", text)


def has_surrogate(text: str) -> str | None:
    """The first lone surrogate of `text` (text that cannot be encoded as UTF-8), or None."""
    hit = _SURROGATE.search(text)
    return None if hit is None else hit.group()
