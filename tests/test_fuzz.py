"""A seeded short run of every fuzz target (tests/fuzz_targets.py); `bench/fuzz.py --minutes N` runs them long.

Each target's property: a record, a counted rejection or a one-line error of the parser's own class, never a
traceback, a hang or a lost valid row."""

import pytest

from tests.fuzz_targets import TARGETS, run_target

EXAMPLES = {"internvl_lines": 15, "interleaved_rows": 25, "milebench_rows": 25, "mmniah_lines": 25}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target_holds_its_property(name):
    run_target(name, EXAMPLES.get(name, 60), seed=21)
