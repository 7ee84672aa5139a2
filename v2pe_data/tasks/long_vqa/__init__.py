"""Long-VQA (V2PE's long-context document VQA): `LongVQATask`, a mix of sources, each sample one question about
one of many images.

Modules, one job each: `options` (typed options), `task` (the source mix and the Task protocol), `concat`
(documents side by side), `paste` (small images pasted onto canvases), `canvas` (the canvas grid and its
rendering).
"""

from .options import LongVQAOptions
from .task import LongVQATask

__all__ = ["LongVQAOptions", "LongVQATask"]
