"""Per-item seeding and unique, human-readable document identifiers.

Everything here is a pure function of (seed, split, index): Python's salted `hash()` never enters, so a
spec drawn in one process is the spec drawn in any other.
"""

from __future__ import annotations

import random

from ...seeding import stable_rng, stable_seed

# 32 symbols without 0/O and 1/I, so a code read off a page is never ambiguous.
ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
CODE_LEN = 7
_BITS = 35  # 32**7 == 2**35 codes
_MASK = (1 << _BITS) - 1

# Items per split. Each split owns a disjoint block of the code space, so no identifier (and hence no
# title or question) of one split can occur in another.
SPLIT_SIZE = 10**9
_KNOWN_SPLITS = {"train": 0, "val": 1, "validation": 2, "test": 3}
_SLOTS = (1 << _BITS) // SPLIT_SIZE  # 34 blocks fit


def item_rng(seed: int, split: str, index: int) -> random.Random:
    """The one generator an item's spec and question are drawn from."""
    return stable_rng("v2pe-synthetic", seed, split, index)


def split_slot(split: str) -> int:
    """The block of the code space a split owns: fixed for the usual names, hashed for any other.

    Two unusual split names can share a block (1 in 30); the usual four never collide with anything.
    """
    if split in _KNOWN_SPLITS:
        return _KNOWN_SPLITS[split]
    n_known = len(_KNOWN_SPLITS)
    return n_known + stable_seed("v2pe-synthetic-split", split) % (_SLOTS - n_known)


def _scramble(x: int) -> int:
    """A bijection of [0, 2**35): consecutive indices get unrelated-looking codes.

    xorshift-right and multiplication by an odd constant are each invertible modulo 2**35.
    """
    x ^= x >> 17
    x = (x * 0x5BD1E995) & _MASK
    x ^= x >> 15
    x = (x * 0x27D4EB2F) & _MASK
    x ^= x >> 16
    return x


def document_code(seed: int, split: str, index: int) -> str:
    """Seven symbols unique over all (split block, index) pairs for one seed, e.g. "K7QX3MB"."""
    if not 0 <= index < SPLIT_SIZE:
        raise IndexError(f"index {index} outside [0, {SPLIT_SIZE})")
    n = split_slot(split) * SPLIT_SIZE + index
    # XOR with a seed-derived mask before scrambling keeps the map a bijection for each seed.
    x = _scramble(n ^ (stable_seed("v2pe-synthetic-code", seed) & _MASK))
    chars = []
    for _ in range(CODE_LEN):
        x, r = divmod(x, 32)
        chars.append(ALPHABET[r])
    return "".join(reversed(chars))
