"""The `depth` key's grammar: where in a sample's context the needle (or the question's evidence) goes.

A number in [0, 1] fixes it; a grid "START:STOP:STEP" ("0:1:0.2" gives 0, 0.2, ..., 1.0) spreads samples over
it (long_mr: sample i takes grid value i mod len(grid)); None draws it uniformly. Checked by the build config,
used by the tasks that place evidence.
"""

from __future__ import annotations

import math

from v2pe_common.recipe import ConfigError

MAX_GRID = 1001  # depth grid points: 0.001 apart over [0, 1]


def parse_grid(text: str) -> tuple[float, ...]:
    """'0:1:0.2' -> (0.0, 0.2, 0.4, 0.6, 0.8, 1.0): START to STOP inclusive, STEP apart."""
    parts = text.split(":")
    try:
        start, stop, step = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"depth: {text!r} is not a number or a grid START:STOP:STEP such as '0:1:0.2'") from None
    if not (0.0 <= start <= stop <= 1.0) or not math.isfinite(step) or step <= 0:
        raise ConfigError(f"depth: grid {text!r} needs 0 <= START <= STOP <= 1 and STEP > 0")
    n = int(math.floor((stop - start) / step + 1e-9)) + 1  # finite: step > 0 and stop - start <= 1
    if n > MAX_GRID:
        raise ConfigError(f"depth: grid {text!r} has {n} points; at most {MAX_GRID} (a STEP of "
                          f"{1 / (MAX_GRID - 1):g} or more over [0, 1])")
    return tuple(round(start + i * step, 10) for i in range(n))
