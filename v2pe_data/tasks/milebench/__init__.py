"""MileBench (the long-context multi-image benchmark) as training records: `v2pe-data build milebench`.

Modules, one job each: `options` (typed options), `reader` (one task folder, rows checked), `prompt`
(MileBench's prompt and the answer turn), `task` (counting, bin filtering, records).
"""

from .options import MileBenchOptions
from .task import MileBenchTask

__all__ = ["MileBenchOptions", "MileBenchTask"]
