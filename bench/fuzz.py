"""Long fuzz runs of every parser of untrusted input: `python bench/fuzz.py --minutes N [--target NAME]`.

Each target of tests/fuzz_targets.py runs for its share of N minutes with fresh random seeds (the seeded short
run is `tests/test_fuzz.py`, inside `make test`). Prints one line per target: the cases run and the first
counterexample, if any; exit 1 when a target found one. Record the counts in docs/failure-model.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzz_targets import TARGETS, run_target  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="total time over all targets")
    ap.add_argument("--target", action="append", choices=sorted(TARGETS), help="only these targets")
    args = ap.parse_args()
    if not 0 < args.minutes <= 24 * 60:
        ap.error("--minutes must lie in (0, 1440]")
    names = args.target or sorted(TARGETS)
    share = args.minutes * 60 / len(names)
    failed = 0
    for name in names:
        counter, found, start = [0], None, time.monotonic()
        while time.monotonic() - start < share and found is None:
            try:
                run_target(name, 50, seed=None, counter=counter)
            except Exception as exc:  # noqa: BLE001  (a counterexample: report it, go on with the next target)
                found = " ".join(f"{type(exc).__name__}: {exc}".split())[:400]
        failed += found is not None
        print(f"{name}: {counter[0]} cases in {time.monotonic() - start:.0f} s; "
              + (f"FOUND {found}" if found else "nothing found"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
