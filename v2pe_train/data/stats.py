"""Counting bad input: every rejected shard or sample is counted by reason, with examples naming shard and key."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..errors import V2PETrainError

log = logging.getLogger("v2pe_train.data")

# Reasons a shard or a sample is skipped. Shard-level: missing_shard, corrupt_shard (unreadable, truncated,
# or fewer samples than its manifest promises), checksum. Sample-level: the rest.
REASONS = (
    "missing_shard",
    "corrupt_shard",
    "checksum",  # the file differs from its manifest's size or sha256: no sample of it is used (LoaderConfig.verify_shards)
    "bad_image",  # an image member missing or failing to decode
    "schema",  # record not JSON, failing the sample schema or its invariants, or not encodable
    "tiles_mismatch",  # tiles per image differ from meta["tiles"] (e.g. another max_tiles)
    "length_mismatch",  # same tokenizer as the data, yet the sequence length differs from meta["num_tokens"]
    "too_long",  # longer than max_seq_len (or more tiles than max_tiles_per_pack): rejected whole, never cut
    "special_token",  # a turn holds a control token (<IMG_CONTEXT>, <|im_start|>, ...; v2pe_common.control)
)
EXAMPLES_PER_REASON = 5


class LoaderError(V2PETrainError, RuntimeError):
    """Raised in strict mode on the first bad shard or sample; the message is 'shard:key: reason: detail'."""

    reason = "loader"


class SampleError(V2PETrainError):
    """A sample is skipped; `reason` is one of REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class LoaderStats:
    """Counts by reason plus the first few examples ("shard:key: message") of each."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    samples: int = 0  # samples delivered
    packs: int = 0  # batches delivered
    tokens: int = 0  # tokens delivered
    strict: bool = False

    def report(self, reason: str, shard: str, key: str | None, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        where = f"{shard}:{key}" if key is not None else shard
        text = f"{where}: {message}"
        if self.strict:
            raise LoaderError(f"{reason}: {text}")
        self.counts[reason] = self.counts.get(reason, 0) + 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < EXAMPLES_PER_REASON:
            ex.append(text)
            log.warning("skipped (%s) %s", reason, text)

    @property
    def num_errors(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        head = f"{self.samples} samples in {self.packs} batches ({self.tokens} tokens)"
        if not self.counts:
            return head + ", nothing skipped"
        parts = [head + ", skipped: " + ", ".join(f"{r}={n}" for r, n in sorted(self.counts.items()))]
        for reason in sorted(self.examples):
            parts.extend(f"  {reason}: {e}" for e in self.examples[reason])
        return "\n".join(parts)

    def state_dict(self) -> dict:
        return {"counts": dict(self.counts), "examples": {k: list(v) for k, v in self.examples.items()},
                "samples": self.samples, "packs": self.packs, "tokens": self.tokens}

    def load_state_dict(self, state: dict) -> None:
        self.counts = dict(state.get("counts", {}))
        self.examples = {k: list(v) for k, v in state.get("examples", {}).items()}
        self.samples = int(state.get("samples", 0))
        self.packs = int(state.get("packs", 0))
        self.tokens = int(state.get("tokens", 0))
