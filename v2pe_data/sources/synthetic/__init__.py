"""The `synthetic` source: offline, deterministic documents, charts and tables rendered with Pillow.

Every item is a question about one generated image whose answer is exact because the generator wrote
the content. Nothing is downloaded: text uses the TrueType font bundled with Pillow.
"""

from .pen import LayoutError
from .render import encode, render
from .source import SyntheticSource
from .spec import KINDS

__all__ = ["KINDS", "LayoutError", "SyntheticSource", "encode", "render"]
