"""Image bytes of a real source: checked once at indexing (`probe`), read again lazily at load.

See `base` for what the check rejects and why images are opened through their Pillow plugin.
"""

from __future__ import annotations

import contextlib
import functools
import io
from pathlib import Path

from .errors import Reject

FORMAT_EXT = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp"}
_OPENED = ("JPEG", "PNG", "WEBP")  # Pillow plugins tried, in order; the JPEG one also yields MPO


def probe_once(cache: dict, key, data: bytes | Path, max_pixels: int) -> tuple[int, int, str, bool]:
    """`probe`, remembered in `cache` under `key`: an image several rows share is decoded once, and a bad
    one is rejected again (same Reject) for every row that names it."""
    known = cache.get(key)
    if known is None:
        try:
            known = probe(data, max_pixels)
        except Reject as bad:
            known = bad
        cache[key] = known
    if isinstance(known, Reject):
        raise known
    return known


def probe(data: bytes | Path, max_pixels: int) -> tuple[int, int, str, bool]:
    """(width, height, ext, high_depth) of encoded image bytes or an image file, fully decoded once and dropped.

    Raises Reject: `too_many_pixels` from the header alone, `corrupt_image` when the header or the
    decode fails, `bad_type` for formats other than JPEG / PNG / WebP, `missing_image` for an unreadable file.
    """
    if isinstance(data, Path):
        try:
            with open(data, "rb") as fh:
                return _probe(fh, max_pixels)
        except OSError as exc:  # raised by open() only: _probe turns Pillow's errors into Reject
            raise Reject("missing_image", f"cannot read {data}: {exc}") from None
    return _probe(io.BytesIO(data), max_pixels)


def open_image(fh):
    """`fh` opened by the Pillow plugin of its format (JPEG -- MPO included --, PNG or WebP), header only.

    Not `Image.open`: its decompression-bomb check reads the process-wide `Image.MAX_IMAGE_PIXELS`, which
    the caller owns and which our `max_pixels` replaces. Raises Reject `bad_type` (naming the format) or
    `corrupt_image` when no plugin of ours takes the bytes.
    """
    from PIL import Image

    Image.preinit()
    prefix = fh.read(16)
    for fmt in _OPENED:
        factory, accept = Image.OPEN.get(fmt, (None, None))
        taken = factory is not None and (accept is None or accept(prefix))
        if taken and not isinstance(taken, str):  # a str is Pillow's "this format, but unsupported here"
            fh.seek(0)
            return factory(fh, "")
    for loader in (lambda: None, Image.init):  # name the format for the rejection: all plugins if need be
        loader()
        for fmt, (_, accept) in Image.OPEN.items():
            if accept is not None and accept(prefix) is True:
                raise Reject("bad_type", f"image format {fmt} is not JPEG, PNG or WebP")
    raise Reject("corrupt_image", "unreadable header: not an image format Pillow knows")


@contextlib.contextmanager
def _truncated_images_refused():
    """Pillow reads `ImageFile.LOAD_TRUNCATED_IMAGES` inside its decoders and has no per-call switch, so it
    is overridden (and restored) only when the caller has turned it on; by default no global is written."""
    from PIL import ImageFile

    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    if saved:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        if saved:
            ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _probe(fh, max_pixels: int) -> tuple[int, int, str, bool]:
    from v2pe_common.images import is_high_depth

    with _truncated_images_refused():
        try:
            im = open_image(fh)
        except Reject:
            raise
        except Exception as exc:  # Pillow raises many types for unreadable headers
            raise Reject("corrupt_image", f"unreadable header: {type(exc).__name__}: {exc}") from None
        with im:
            width, height = im.size
            if width <= 0 or height <= 0:
                raise Reject("corrupt_image", f"header gives size {width}x{height}")
            if width * height > max_pixels:
                raise Reject("too_many_pixels",
                             f"{width}x{height} = {width * height} pixels > max_pixels {max_pixels}")
            ext = FORMAT_EXT.get(im.format or "")
            if ext is None:
                raise Reject("bad_type", f"image format {im.format} is not JPEG, PNG or WebP")
            try:
                im.load()
            except Exception as exc:
                raise Reject("corrupt_image", f"decode failed: {type(exc).__name__}: {exc}") from None
            return width, height, ext, is_high_depth(im.mode)


# ------------------------------------------------------------------------------------------ lazy bytes


@functools.lru_cache(maxsize=64)
def arrow_table(path: str):
    """A datasets Arrow file (IPC stream), memory-mapped: rows are read without loading the file."""
    import pyarrow as pa

    return pa.ipc.open_stream(pa.memory_map(path, "r")).read_all()


@functools.lru_cache(maxsize=2)
def parquet_column(path: str, row_group: int, column: str):
    """One row group's image column; the last two are kept per process.

    Parquet has no row-level random access: a load reads its row group's column (`datasets` writes groups
    of up to about 100 MB). For large builds a `save_to_disk` copy (memory-mapped Arrow) reads any row
    in O(1); parquet works, more slowly.
    """
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).read_row_group(row_group, columns=[column]).column(column)


def cell_bytes(value) -> bytes:
    if isinstance(value, dict):
        value = value.get("bytes")
    if not value:
        raise OSError("image bytes vanished from the source since it was indexed")
    return bytes(value)


def read_bytes(locator: tuple) -> bytes:
    """The original encoded bytes behind a locator (module-level, so `partial(read_bytes, loc)` pickles):

    ("file", path) | ("arrow", file, column, row) | ("parquet", file, column, row_group, offset)
    """
    kind = locator[0]
    if kind == "file":
        return Path(locator[1]).read_bytes()
    if kind == "arrow":
        _, path, column, row = locator
        return cell_bytes(arrow_table(path).column(column)[row].as_py())
    if kind == "parquet":
        _, path, column, group, offset = locator
        return cell_bytes(parquet_column(path, group, column)[offset].as_py())
    raise ValueError(f"unknown image locator {locator!r}")


def png_8bit(data: bytes) -> bytes:
    """Encoded high-bit-depth image bytes (already probed under `max_pixels`) re-encoded as an 8-bit PNG
    (`v2pe_common.images.to_8bit`), so a reader that calls `convert("RGB")` does not see them clipped to white."""
    from v2pe_common.images import to_8bit

    out = io.BytesIO()
    with open_image(io.BytesIO(data)) as im:
        to_8bit(im).save(out, "PNG")
    return out.getvalue()


def read_8bit_png(locator: tuple) -> bytes:
    """What `load()` gives for a high-bit-depth image: `png_8bit` of the bytes behind the locator."""
    return png_8bit(read_bytes(locator))
