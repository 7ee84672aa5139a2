"""Long-MR (V2PE's needle-in-a-multimodal-haystack training data): `LongMRTask(options, ...).plan(index)`.

Modules, one job each: `options` (typed options), `haystack` (document streams), `needles` (text needles),
`pictures` (image needles and pixel work), `subsets` (the eight subsets' designs), `context` (filling,
placing, exact positions), `prompt` (the answer turn), `task` (the task). The question turn and the MM-NIAH
file format are `v2pe_common.formats.mmniah`, its writer `v2pe_data.writers.mmniah`.
"""

from .options import SUBSETS, LongMROptions
from .task import LongMRTask

__all__ = ["SUBSETS", "LongMROptions", "LongMRTask"]
