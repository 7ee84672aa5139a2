"""Deterministic greedy packing of whole samples into sequences of at most `max_seq_len` tokens.

Samples wait in a small buffer, in arrival order. After each arrival the candidate pack is built first-fit
from the oldest waiting sample: every waiting sample, in order, joins if the pack stays within
`max_seq_len` tokens (and `max_tiles_per_pack` tiles). The candidate is emitted when it is full — its
free room is smaller than the shortest sample seen so far (or no tile room is left) — or when the buffer
holds `buffer_size` samples. At the end of an epoch everything waiting is emitted the same way. Every
decision depends only on the order samples arrive in, so a seed fixes the packs, and a saved buffer
(sample references plus the two running minima) restores them exactly.

Long samples (a 30K sample against a 32K limit) leave the buffer at once, so at most about one long
sample's tiles are held; short ones are packed from up to `buffer_size` candidates.
"""

from __future__ import annotations

from .samples import Sample


class Packer:
    def __init__(self, max_seq_len: int | None, *, max_tiles_per_pack: int | None = None, buffer_size: int = 16):
        if max_seq_len is not None and max_seq_len < 1:
            raise ValueError(f"max_seq_len must be positive, got {max_seq_len}")
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        self.max_seq_len = max_seq_len
        self.max_tiles = max_tiles_per_pack
        self.buffer_size = buffer_size
        self.pending: list[Sample] = []
        self.min_len: int | None = None
        self.min_tiles: int | None = None

    def _candidate(self) -> tuple[list[int], int, int]:
        first = self.pending[0]
        chosen, tokens, tiles = [0], first.length, first.num_tiles
        for i in range(1, len(self.pending)):
            s = self.pending[i]
            if tokens + s.length <= self.max_seq_len and (self.max_tiles is None or tiles + s.num_tiles <= self.max_tiles):
                chosen.append(i)
                tokens += s.length
                tiles += s.num_tiles
        return chosen, tokens, tiles

    def _full(self, tokens: int, tiles: int) -> bool:
        if self.max_seq_len - tokens < (self.min_len or 1):
            return True
        return self.max_tiles is not None and self.min_tiles is not None and self.max_tiles - tiles < max(self.min_tiles, 1)

    def _take(self, chosen: list[int]) -> list[Sample]:
        pack = [self.pending[i] for i in chosen]
        keep = set(chosen)
        self.pending = [s for i, s in enumerate(self.pending) if i not in keep]
        return pack

    def add(self, sample: Sample) -> list[list[Sample]]:
        """Add one sample; return the packs (lists of samples, in sequence order) now ready."""
        if self.max_seq_len is None:
            return [[sample]]
        self.min_len = sample.length if self.min_len is None else min(self.min_len, sample.length)
        self.min_tiles = sample.num_tiles if self.min_tiles is None else min(self.min_tiles, sample.num_tiles)
        self.pending.append(sample)
        out = []
        while self.pending:
            chosen, tokens, tiles = self._candidate()
            if not (self._full(tokens, tiles) or len(self.pending) >= self.buffer_size):
                break
            out.append(self._take(chosen))
        return out

    def flush(self) -> list[list[Sample]]:
        out = []
        while self.pending:
            out.append(self._take(self._candidate()[0]))
        return out

    # -- state ------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"pending": [s.ref for s in self.pending], "min_len": self.min_len, "min_tiles": self.min_tiles}

    def restore(self, pending: list[Sample], min_len: int | None, min_tiles: int | None) -> None:
        """Put back a saved buffer as it was (no packing decision is re-taken)."""
        self.pending = list(pending)
        self.min_len, self.min_tiles = min_len, min_tiles
