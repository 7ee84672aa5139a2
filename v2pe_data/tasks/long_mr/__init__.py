"""Long-MR (V2PE's needle-in-a-multimodal-haystack training data): `LongMRTask(options, ...).plan(index)`.

Modules, one job each: `options` (typed options), `haystack` (document streams), `needles` (text needles),
`pictures` (image needles and pixel work), `subsets` (the eight subsets' designs), `context` (filling,
placing, exact positions), `prompt` (the MM-NIAH question turn), `plan` (the task), `mmniah` (the MM-NIAH
file format: codec, validator, reader, writer).
"""

from .options import SUBSETS, LongMROptions
from .plan import LongMRTask

__all__ = ["SUBSETS", "LongMROptions", "LongMRTask"]
