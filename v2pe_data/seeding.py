"""Stable seeds: every random choice of a build derives from (seed, names, index), never from process state.

Python's hash() is salted per process, so it is never used; workers and reruns derive identical streams.
"""

from __future__ import annotations

import hashlib
import random


def stable_seed(*parts: object) -> int:
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big")


def stable_rng(*parts: object) -> random.Random:
    return random.Random(stable_seed(*parts))
